"""An in-memory mainline DHT built from the sans-IO parts, for tests and benchmarks (BEP 5, BEP 51).

No sockets: every node has a fake, globally routable IPv4 address (``1.x.y.z``, so netguard's real
"global addresses only" rule is exercised) and a :class:`~p2pwatch.dht.routing.RoutingTable`. Lookups run a
:class:`~p2pwatch.dht.traversal.Traversal` on a virtual clock: every reply arrives after a random round
trip time; silent nodes never answer, so only the traversal's own timeouts end their queries.

What a node's table holds (what it would learn in a long-running real network): for each prefix depth
``b`` of its own id, up to ``k`` random nodes among those whose id shares exactly ``b`` leading bits with
it, down to the depth where no other node shares the prefix (so it knows its whole neighbourhood).
Silent nodes are drawn like any others and, with the default ``staleness=1.0``, tables are never cleaned
of them — harder for lookups than a network where BEP 5 pings find bad nodes out; with ``staleness=s``
each silent pick stays with probability ``s`` and is otherwise replaced by a live node of its range.
Tables are built on first use from a per-node seed and kept in a bounded LRU cache, so a 100,000-node DHT
costs little memory and rebuilding gives the same table.

Departures: replies to get_peers carry ``nodes`` as well as ``values`` (libtorrent does the same);
simulated tables never change during a run (no churn); announce_peer round trips add no virtual time.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import statistics
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from p2pwatch.dht.nodeinfo import ID_BITS, ID_LEN, NodeInfo
from p2pwatch.dht.routing import RoutingTable
from p2pwatch.dht.traversal import Traversal
from p2pwatch.errors import LocalProtocolError

LOOKUP_KINDS = ("find_node", "get_peers", "announce_peer", "sample_infohashes")
#: BEP 51: how many samples a simulated node puts in one reply, and the interval it asks for.
SAMPLES_PER_REPLY = 20
SAMPLE_INTERVAL = 21600
DHT_PORT = 6881


@dataclass(frozen=True, slots=True)
class LookupStats:
    """What one simulated lookup did and whether it found the truth."""

    kind: str
    target: bytes
    queries_sent: int
    responses: int
    failures: int
    rounds: int
    virtual_time: float
    found: int  # how many of the true closest live nodes are in the traversal's result()
    expected: int  # how many true closest live nodes there are (k, or fewer in a tiny DHT)
    result: tuple[bytes, ...] = ()  # ids of the traversal's result(), closest first
    peers: dict[tuple[str, int], frozenset[tuple[str, int]]] = field(default_factory=dict)
    samples: frozenset[bytes] = frozenset()
    announced: int = 0

    @property
    def found_all(self) -> bool:
        return self.found == self.expected


def _percentile(values: list[int] | list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return float(ordered[pos])


class SimulatedDHT:
    """``n_nodes`` nodes with random ids, a ``silent_fraction`` of which never answer."""

    def __init__(
        self,
        n_nodes: int,
        *,
        silent_fraction: float = 0.0,
        k: int = 8,
        seed: int = 0,
        rtt: tuple[float, float] = (0.02, 0.3),
        table_cache: int = 2048,
        staleness: float = 1.0,
    ) -> None:
        if not 1 <= n_nodes <= 1 << 24:
            raise LocalProtocolError("n_nodes must be between 1 and 2**24")
        if not 0.0 <= silent_fraction < 1.0:
            raise LocalProtocolError("silent_fraction must be in [0, 1)")
        if not 0.0 <= staleness <= 1.0:
            raise LocalProtocolError("staleness must be in [0, 1]")
        self.n_nodes = n_nodes
        self.k = k
        self.seed = seed
        self.rtt = rtt
        self.staleness = staleness
        self.rng = random.Random(seed)
        ids: set[int] = set()
        while len(ids) < n_nodes:
            ids.add(self.rng.getrandbits(ID_BITS))
        self.ids: list[int] = sorted(ids)  # node index = position in this sorted list
        silent = self.rng.sample(range(n_nodes), int(n_nodes * silent_fraction))
        self.silent = bytearray(n_nodes)
        for i in silent:
            self.silent[i] = 1
        self.live_ids: list[int] = [x for i, x in enumerate(self.ids) if not self.silent[i]]
        self._nodes: list[NodeInfo | None] = [None] * n_nodes
        self._tables: OrderedDict[int, RoutingTable] = OrderedDict()
        self._table_cache = table_cache
        self._store: dict[int, dict[bytes, set[tuple[str, int]]]] = {}
        self.tables_built = 0

    # ----------------------------------------------------------------- nodes and tables

    def node(self, i: int) -> NodeInfo:
        n = self._nodes[i]
        if n is None:
            ip = f"1.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            n = self._nodes[i] = NodeInfo(self.ids[i].to_bytes(ID_LEN, "big"), ip, DHT_PORT)
        return n

    def index_of(self, node: NodeInfo) -> int | None:
        """The simulated node at ``node``'s address, if its id is the one given."""
        parts = node.ip.split(".")
        if len(parts) != 4 or parts[0] != "1" or node.port != DHT_PORT:
            return None
        i = (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])
        if i >= self.n_nodes or self.node(i).id != node.id:
            return None
        return i

    def is_silent(self, i: int) -> bool:
        return bool(self.silent[i])

    def _range(self, prefix: int, bits: int, ids: list[int]) -> tuple[int, int]:
        """Positions in ``ids`` of the ids whose top ``bits`` bits equal ``prefix``."""
        shift = ID_BITS - bits
        return bisect.bisect_left(ids, prefix << shift), bisect.bisect_left(ids, (prefix + 1) << shift)

    def table(self, i: int) -> RoutingTable:
        """Node ``i``'s routing table (built on first use, deterministic, LRU-cached)."""
        t = self._tables.get(i)
        if t is not None:
            self._tables.move_to_end(i)
            return t
        rng = random.Random(self.seed * 1_000_003 + i)
        own = self.ids[i]
        t = RoutingTable(self.node(i).id, k=self.k, rng=rng)
        for b in range(ID_BITS):
            sib_lo, sib_hi = self._range((own >> (ID_BITS - b - 1)) ^ 1, b + 1, self.ids)
            for j in self._picks(rng, sib_lo, sib_hi):
                t.heard_from(self.node(j), 0.0, responded=True)
            own_lo, own_hi = self._range(own >> (ID_BITS - b - 1), b + 1, self.ids)
            if own_hi - own_lo <= 1:  # nobody else shares b + 1 bits with us: the table is complete
                break
        self.tables_built += 1
        self._tables[i] = t
        if len(self._tables) > self._table_cache:
            self._tables.popitem(last=False)
        return t

    def _picks(self, rng: random.Random, lo: int, hi: int) -> list[int]:
        """Up to k random nodes of positions ``lo:hi`` for one bucket, as its owner would hold them.

        A silent pick stays with probability ``staleness``; otherwise its owner has found it out (BEP 5
        pings) and replaced it by a live node of the same range, when there is one it does not hold.
        """
        count = hi - lo
        picks = list(range(lo, hi)) if count <= self.k else rng.sample(range(lo, hi), self.k)
        if self.staleness >= 1.0:
            return picks
        kept = [j for j in picks if not self.silent[j] or rng.random() < self.staleness]
        missing = len(picks) - len(kept)
        held = set(picks)
        for _ in range(8 * missing if count > len(picks) else 0):  # rejection sampling, bounded
            if missing == 0:
                break
            j = rng.randrange(lo, hi)
            if not self.silent[j] and j not in held:
                held.add(j)
                kept.append(j)
                missing -= 1
        return kept

    # ----------------------------------------------------------------- ground truth

    def true_closest(self, target: bytes, count: int | None = None, *, exclude: int | None = None) -> list[int]:
        """Indices of the ``count`` live nodes closest to ``target`` (exact, by brute force over the
        smallest id-prefix range of the sorted live ids that holds enough of them)."""
        want = (self.k if count is None else count) + (1 if exclude is not None else 0)
        t = int.from_bytes(target, "big")
        lo_bits, hi_bits = 0, ID_BITS  # find the longest prefix whose range still holds `want` live ids
        while lo_bits < hi_bits:
            mid = (lo_bits + hi_bits + 1) // 2
            a, b = self._range(t >> (ID_BITS - mid), mid, self.live_ids)
            if b - a >= want:
                lo_bits = mid
            else:
                hi_bits = mid - 1
        a, b = self._range(t >> (ID_BITS - lo_bits), lo_bits, self.live_ids) if lo_bits else (0, len(self.live_ids))
        best = sorted(self.live_ids[a:b], key=lambda x: x ^ t)
        out = [bisect.bisect_left(self.ids, x) for x in best]
        if exclude is not None:
            out = [i for i in out if i != exclude]
        return out[: want - (1 if exclude is not None else 0)]

    # ----------------------------------------------------------------- stored data

    def store_peers(self, infohash: bytes, peers: Iterable[tuple[str, int]]) -> list[int]:
        """Store ``peers`` for ``infohash`` at its k closest live nodes (as announces would); returns them."""
        holders = self.true_closest(infohash)
        peer_list = list(peers)
        for i in holders:
            self._store.setdefault(i, {}).setdefault(infohash, set()).update(peer_list)
        return holders

    def stored_at(self, i: int) -> dict[bytes, set[tuple[str, int]]]:
        return self._store.get(i, {})

    def populate(self, infohashes: int, peers_each: int = 3) -> list[bytes]:
        """Store ``infohashes`` random infohashes, each with ``peers_each`` fake peers (``2.x.y.z``)."""
        made = []
        for _ in range(infohashes):
            ih = self.rng.getrandbits(ID_BITS).to_bytes(ID_LEN, "big")
            peers = [
                (
                    f"2.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}",
                    self.rng.randrange(1024, 65536),
                )
                for _ in range(peers_each)
            ]
            self.store_peers(ih, peers)
            made.append(ih)
        return made

    @staticmethod
    def _token(i: int) -> bytes:
        return b"tk" + i.to_bytes(4, "big")

    # ----------------------------------------------------------------- lookups

    def _reply(self, tr: Traversal, i: int, kind: str, now: float) -> None:
        node = self.node(i)
        nodes = self.table(i).closest(tr.target, self.k)
        stored = self._store.get(i, {})
        if kind == "find_node":
            tr.on_response(node, now, nodes=nodes)
        elif kind == "sample_infohashes":
            held = sorted(stored)
            picks = held if len(held) <= SAMPLES_PER_REPLY else self.rng.sample(held, SAMPLES_PER_REPLY)
            extra = {"interval": SAMPLE_INTERVAL, "num": len(held)}
            tr.on_response(node, now, nodes=nodes, samples=picks, extra=extra)
        else:
            values = sorted(stored.get(tr.target, ()))
            tr.on_response(node, now, nodes=nodes, values=values, token=self._token(i))

    def run_lookup(
        self,
        target: bytes,
        start_node: int,
        *,
        alpha: int = 3,
        k: int | None = None,
        kind: str = "get_peers",
        seeds: int | None = None,
        short_timeout: float = 1.0,
        full_timeout: float = 5.0,
        max_queries: int | None = None,
        width: int | None = None,
        widen: int | None = None,
        announce_peer: tuple[str, int] = ("3.3.3.3", 51413),
    ) -> LookupStats:
        """Look ``target`` up from node ``start_node``, on a virtual clock starting at 0."""
        if kind not in LOOKUP_KINDS:
            raise LocalProtocolError(f"kind must be one of {LOOKUP_KINDS}, not {kind!r}")
        k = self.k if k is None else k
        me = self.node(start_node)
        seed_nodes = self.table(start_node).closest(target, k if seeds is None else seeds)
        query_kind = "get_peers" if kind == "announce_peer" else kind
        now = 0.0
        tr = Traversal(
            target,
            seed_nodes,
            alpha=alpha,
            k=k,
            short_timeout=short_timeout,
            full_timeout=full_timeout,
            now=now,
            max_queries=max_queries,
            own_id=me.id,
            width=width,
            widen=widen,
        )
        pending: list[tuple[float, int, int]] = []  # (arrival time, sequence, node index)
        seq = 0
        while True:
            for node in tr.next_queries(now):
                j = self.index_of(node)
                if j is None or self.silent[j]:
                    continue  # nothing will come back; the traversal's timeouts deal with it
                heapq.heappush(pending, (now + self.rng.uniform(*self.rtt), seq, j))
                seq += 1
            if tr.done:
                break
            deadline = tr.next_deadline()
            arrival = pending[0][0] if pending else math.inf
            wake = min(arrival, deadline if deadline is not None else math.inf)
            if wake == math.inf:  # not done, nothing awaited, no deadline: a traversal bug
                raise LocalProtocolError("traversal stalled: not done but nothing to wait for")
            now = max(now, wake)
            if arrival <= now:
                _, _, j = heapq.heappop(pending)
                self._reply(tr, j, query_kind, now)
            else:
                tr.on_tick(now)
        announced = 0
        if kind == "announce_peer":
            for node, token in tr.announce_targets():
                j = self.index_of(node)
                if j is not None and not self.silent[j] and token == self._token(j):
                    self._store.setdefault(j, {}).setdefault(target, set()).add(announce_peer)
                    announced += 1
        truth = self.true_closest(target, k, exclude=start_node)
        result = tuple(n.id for n in tr.result())
        found_ids = set(result)
        found = sum(1 for i in truth if self.node(i).id in found_ids)
        return LookupStats(
            kind=kind,
            target=target,
            queries_sent=tr.queries_sent,
            responses=tr.responses,
            failures=tr.failures,
            rounds=tr.rounds,
            virtual_time=now,
            found=found,
            expected=len(truth),
            result=result,
            peers={p: frozenset(by) for p, by in tr.peers.items()},
            samples=frozenset(tr.all_samples()),
            announced=announced,
        )

    def random_live_node(self) -> int:
        while True:
            i = self.rng.randrange(self.n_nodes)
            if not self.silent[i]:
                return i

    def random_target(self) -> bytes:
        return self.rng.getrandbits(ID_BITS).to_bytes(ID_LEN, "big")


def benchmark_lookups(
    n_nodes: int = 100_000,
    silent_fraction: float = 0.1,
    lookups: int = 1000,
    seed: int = 1,
    *,
    staleness: float = 1.0,
    alpha: int = 3,
    k: int = 8,
    kind: str = "get_peers",
    **lookup_kw: Any,
) -> dict[str, Any]:
    """Run ``lookups`` lookups of random targets from random live nodes; summarise what they did.

    ``success_all``: fraction of lookups whose result holds all of the true k closest live nodes;
    ``success_k_minus_1``: at least k - 1 of them.
    """
    wall0 = time.perf_counter()
    dht = SimulatedDHT(n_nodes, silent_fraction=silent_fraction, k=k, seed=seed, staleness=staleness)
    build = time.perf_counter() - wall0
    runs = [
        dht.run_lookup(dht.random_target(), dht.random_live_node(), alpha=alpha, k=k, kind=kind, **lookup_kw)
        for _ in range(lookups)
    ]
    wall = time.perf_counter() - wall0
    queries = [r.queries_sent for r in runs]
    rounds = [r.rounds for r in runs]
    vtime = [r.virtual_time for r in runs]
    return {
        "n_nodes": n_nodes,
        "silent_fraction": silent_fraction,
        "lookups": lookups,
        "alpha": alpha,
        "k": k,
        "kind": kind,
        "staleness": staleness,
        "width": lookup_kw.get("width") or k,
        "success_all": sum(r.found_all for r in runs) / lookups,
        "success_k_minus_1": sum(r.found >= r.expected - 1 for r in runs) / lookups,
        "queries_median": statistics.median(queries),
        "queries_p95": _percentile(queries, 0.95),
        "rounds_median": statistics.median(rounds),
        "rounds_p95": _percentile(rounds, 0.95),
        "virtual_time_median": statistics.median(vtime),
        "virtual_time_p95": _percentile(vtime, 0.95),
        "tables_built": dht.tables_built,
        "setup_seconds": round(build, 3),
        "wall_seconds": round(wall, 3),
    }
