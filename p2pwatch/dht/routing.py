"""The DHT routing table, sans-IO (BEP 5, "Routing Table"; bucket layout after libtorrent).

Buckets are kept libtorrent-style: with ``n`` buckets, bucket ``i < n - 1`` holds the ids whose longest
common prefix with our own id is exactly ``i`` bits, and the last bucket holds every id sharing at least
``n - 1`` bits with ours (so it is the only one that contains our own id, and the only one that splits).
Each bucket holds up to ``k`` live entries and a replacement cache of up to ``replacement_size`` entries.

Node states (BEP 5), derived from the facts kept per entry rather than stored:

=============  ===========================================================================================
state          rule (``good_for`` = 900 s)
=============  ===========================================================================================
BAD            ``max_failures`` (2) failures in a row, or one failure of a node that never responded
GOOD           responded to a query of ours within ``good_for``, or responded ever and queried us within it
QUESTIONABLE   everything else (silent for ``good_for``, or only ever queried us)
=============  ===========================================================================================

Where this departs from BEP 5, and why:

* The last bucket splits when it is full whatever the states of its nodes (libtorrent does the same); BEP 5
  splits only when it is full of good nodes. The table is then always complete near our own id.
* A node that answered one of our queries displaces a node that never answered (it goes to the replacement
  cache) — BEP 5's "nodes that we know are good are given priority over nodes with unknown status".
* A bad node stays in its bucket until a replacement exists (it is never returned by :meth:`closest`);
  an empty slot is worse than a stale one only once something better is known.
* Anti-hijack: an id already stored at another ip:port, or an ip:port already stored with another id,
  replaces the stored entry only when that entry is not good and (for a moved id) the newcomer answered a
  query of ours. Otherwise the newcomer is refused.
* Asking for refresh targets counts as a change of the bucket: each stale bucket is reported once per
  refresh interval, not at every call.
* ``extended=True`` (libtorrent's ``extended_routing_table``, on by default there) lets buckets 0-3 hold
  16, 8, 4 and 2 times ``k`` live entries: a lookup then starts about three bits closer to its target.
* Every node that answers us also goes to ``responders`` (lookup seeds, issue 12), and leaves it on a failure.
* Timestamps are the driver's clock (monotonic, not comparable across restarts), so :meth:`from_state`
  restores every node as QUESTIONABLE-but-once-responded: it is pinged soon and becomes good on reply.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from itertools import chain
from typing import Any

from p2pwatch.dht.nodeinfo import ID_BITS, ID_LEN, NodeInfo
from p2pwatch.dht.responder_cache import ResponderCache
from p2pwatch.dht.routing_entries import (
    GOOD_FOR,
    Bucket,
    Entry,
    NodeState,
    acceptable_address,
    common_prefix_length,
    finite,
    load_entry,
)
from p2pwatch.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "GOOD_FOR", "MAX_FAILURES", "PING_TIMEOUT", "REFRESH_INTERVAL", "STATE_FORMAT", "STATE_VERSION", "NodeState",
    "RoutingTable", "acceptable_address",
]

#: BEP 5: buckets unchanged for 15 minutes are refreshed.
REFRESH_INTERVAL = 900.0
#: BEP 5: "try once more before discarding the node".
MAX_FAILURES = 2
#: A ping handed out by :meth:`RoutingTable.nodes_to_ping` and never reported is handed out again after this.
PING_TIMEOUT = 60.0

STATE_FORMAT = "p2pwatch-routing-table"
STATE_VERSION = 1


class RoutingTable:
    """A Kademlia routing table for one node id; every method takes the time as ``now``."""

    def __init__(
        self,
        own_id: bytes,
        *,
        k: int = 8,
        allow_local: bool = False,
        replacement_size: int = 8,
        max_failures: int = MAX_FAILURES,
        refresh_interval: float = REFRESH_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        rng: random.Random | None = None,
        extended: bool = False,
        responders: ResponderCache | None = None,
    ) -> None:
        if len(own_id) != ID_LEN:
            raise LocalProtocolError(f"own id must be {ID_LEN} bytes, got {len(own_id)}")
        if k < 1 or replacement_size < 0 or max_failures < 1:
            raise LocalProtocolError("k and max_failures must be >= 1, replacement_size >= 0")
        self.own_id = own_id
        self.k = k
        self.extended = extended
        self.responders = responders if responders is not None else ResponderCache(0)
        self.allow_local = allow_local
        self.replacement_size = replacement_size
        self.max_failures = max_failures
        self.refresh_interval = refresh_interval
        self.ping_timeout = ping_timeout
        self._own = int.from_bytes(own_id, "big")
        self._rng = rng if rng is not None else random.Random()
        self._buckets: list[Bucket] = [Bucket([], [])]
        self._by_id: dict[bytes, Entry] = {}  # live and replacement entries
        self._by_addr: dict[tuple[str, int], Entry] = {}
        self._clock = -math.inf  # the latest ``now`` we were given

    # ----------------------------------------------------------------- inspection

    def __len__(self) -> int:
        return sum(len(b.live) for b in self._buckets)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    def nodes(self) -> Iterator[NodeInfo]:
        """The live entries (not the replacement caches), bucket by bucket."""
        return (e.node for b in self._buckets for e in b.live)

    def replacements(self) -> Iterator[NodeInfo]:
        return (e.node for b in self._buckets for e in b.replacements)

    def bucket_sizes(self) -> list[tuple[int, int]]:
        """(live, replacement) counts per bucket, bucket 0 (farthest) first."""
        return [(len(b.live), len(b.replacements)) for b in self._buckets]

    def capacity(self, i: int) -> int:
        """Live entries bucket ``i`` may hold."""
        return self.k * (16 >> i) if self.extended and i < 4 else self.k

    def get(self, node_id: bytes) -> NodeInfo | None:
        e = self._by_id.get(node_id)
        return e.node if e is not None else None

    def state(self, node_id: bytes, now: float) -> NodeState | None:
        e = self._by_id.get(node_id)
        return e.state(now) if e is not None else None

    def is_live(self, node_id: bytes) -> bool:
        """Is ``node_id`` in a bucket proper (as opposed to a replacement cache or absent)?"""
        e = self._by_id.get(node_id)
        return e is not None and e in self._bucket_for(e.key).live

    def _index(self, key: int) -> int:
        return min(ID_BITS - (key ^ self._own).bit_length(), len(self._buckets) - 1)

    def _bucket_for(self, key: int) -> Bucket:
        return self._buckets[self._index(key)]

    def _tick(self, now: float) -> None:
        if now > self._clock:
            self._clock = now

    # ----------------------------------------------------------------- events

    def heard_from(self, node: NodeInfo, now: float, *, responded: bool) -> bool:
        """Note a message from ``node``: a reply to our query (``responded``) or a query to us.

        Returns whether the node is now in the table or in a replacement cache.
        """
        self._tick(now)
        if responded and node.id != self.own_id and acceptable_address(node.ip, node.port, self.allow_local):
            self.responders.add(node)
        known = self._by_id.get(node.id)
        if known is not None and known.node.ip == node.ip and known.node.port == node.port:
            self._touch(known, now, responded)
            return True
        if len(node.id) != ID_LEN or node.id == self.own_id:
            return False
        if not acceptable_address(node.ip, node.port, self.allow_local):
            return False
        freed: list[Bucket] = []
        if known is not None:
            # the id moved: refuse unless the stored entry is stale and the newcomer proved itself
            if not responded or known.state(now) is NodeState.GOOD:
                return False
            freed.append(self._remove(known))
            known = None
        squatter = self._by_addr.get(node.addr)
        if squatter is not None and squatter is not known:
            # the address now claims another id (a restart, or an attempt to overwrite a good entry)
            if squatter.state(now) is NodeState.GOOD:
                return False
            freed.append(self._remove(squatter))
        entry = Entry(node, int.from_bytes(node.id, "big"), now, now)
        if responded:
            entry.last_responded = now
        else:
            entry.last_queried = now
        inserted = self._insert(entry, now)
        for bucket in freed:
            if bucket in self._buckets:
                self._promote(bucket, now)
        return inserted

    def failed(self, node_id: bytes, now: float) -> None:
        """A query to ``node_id`` timed out or got an error reply."""
        self._tick(now)
        self.responders.discard(node_id)
        e = self._by_id.get(node_id)
        if e is None:
            return
        e.note_failure(self.max_failures)
        if not e.bad:
            return
        bucket = self._bucket_for(e.key)
        if e in bucket.replacements:
            self._remove(e)
            return
        if bucket.replacements:
            self._remove(e)
            self._promote(bucket, now)

    def _touch(self, e: Entry, now: float, responded: bool) -> None:
        e.last_seen = now
        if responded:
            e.last_responded = now
            e.fail_count = 0
            e.bad = False
            e.ping_sent = None
        else:
            e.last_queried = now
        bucket = self._bucket_for(e.key)
        if e in bucket.live:
            if responded:
                bucket.last_changed = now
        else:  # a replacement: keep the cache in order of last contact; fill a free slot
            bucket.replacements.remove(e)
            bucket.replacements.append(e)
            self._promote(bucket, now)

    def _insert(self, entry: Entry, now: float) -> bool:
        cpl = ID_BITS - (entry.key ^ self._own).bit_length()
        while True:
            last = len(self._buckets) - 1
            i = cpl if cpl < last else last
            bucket = self._buckets[i]
            if len(bucket.live) < self.capacity(i):
                self._add_live(bucket, entry, now)
                return True
            if i == last and last + 1 < ID_BITS:
                self._split(now)
                continue
            break
        victim = next((e for e in bucket.live if e.bad), None)
        if victim is None and entry.last_responded is not None:
            victim = next((e for e in bucket.live if e.last_responded is None), None)
            if victim is not None:  # demote the never-answered node; it may still answer one day
                bucket.live.remove(victim)
                self._add_replacement(bucket, victim)
                self._add_live(bucket, entry, now)
                return True
        if victim is not None:
            self._remove(victim)
            self._add_live(bucket, entry, now)
            return True
        if self.replacement_size == 0:
            return False
        self._add_replacement(bucket, entry)
        return True

    def _add_live(self, bucket: Bucket, entry: Entry, now: float) -> None:
        bucket.live.append(entry)
        bucket.last_changed = now
        self._by_id[entry.node.id] = entry
        self._by_addr[entry.node.addr] = entry

    def _add_replacement(self, bucket: Bucket, entry: Entry) -> None:
        reps = bucket.replacements
        if len(reps) >= self.replacement_size:
            # evict a never-answered entry first, else the one heard from least recently
            evict = next((e for e in reps if e.last_responded is None), reps[0])
            reps.remove(evict)
            self._forget(evict)
        reps.append(entry)
        self._by_id[entry.node.id] = entry
        self._by_addr[entry.node.addr] = entry

    def _promote(self, bucket: Bucket, now: float) -> None:
        """Move the best replacement into the live list (answered ones first, most recent first)."""
        cap = self.capacity(self._buckets.index(bucket))
        while bucket.replacements and len(bucket.live) < cap:
            best = max(bucket.replacements, key=lambda e: (e.last_responded is not None, e.last_seen))
            bucket.replacements.remove(best)
            bucket.live.append(best)
            bucket.last_changed = now

    def _remove(self, e: Entry) -> Bucket:
        """Drop ``e`` from its bucket and the indexes; returns the bucket (not refilled here)."""
        bucket = self._bucket_for(e.key)
        if e in bucket.live:
            bucket.live.remove(e)
        elif e in bucket.replacements:
            bucket.replacements.remove(e)
        self._forget(e)
        return bucket

    def _forget(self, e: Entry) -> None:
        if self._by_id.get(e.node.id) is e:
            del self._by_id[e.node.id]
        if self._by_addr.get(e.node.addr) is e:
            del self._by_addr[e.node.addr]

    def _split(self, now: float) -> None:
        last = self._buckets[-1]
        depth = len(self._buckets) - 1  # the old last bucket keeps ids with exactly this prefix length
        near = Bucket([], [], last.last_changed)
        far = Bucket([], [], last.last_changed)
        for e in last.live:
            (far if common_prefix_length(e.key, self._own) == depth else near).live.append(e)
        for e in last.replacements:
            (far if common_prefix_length(e.key, self._own) == depth else near).replacements.append(e)
        self._buckets[-1:] = [far, near]
        self._promote(far, now)
        self._promote(near, now)

    # ----------------------------------------------------------------- queries

    def closest(
        self,
        target: bytes,
        count: int = 8,
        *,
        include_questionable: bool = True,
        now: float | None = None,
    ) -> list[NodeInfo]:
        """The ``count`` entries closest to ``target`` by XOR, bad ones never included.

        Ordering is by distance only (good nodes are not moved ahead of questionable ones, which would
        break the XOR ordering iterative lookups depend on); pass ``include_questionable=False`` to get
        good nodes only, judged at ``now`` (default: the latest time the table was given).

        Cost: only the buckets that can hold the answer are looked at. With ``c`` the bucket of the
        target, bucket ``c`` holds the closest ids, then all buckets deeper than ``c`` taken together,
        then buckets ``c-1``, ``c-2``, … each strictly farther than the one before.
        """
        if count <= 0:
            return []
        t = int.from_bytes(target, "big")
        c = self._index(t)
        clock = self._clock if now is None else now
        out: list[NodeInfo] = []
        for group in self._groups(c):
            # a table holds an id once, so distances are unique and the tuples sort by distance alone
            if include_questionable:
                cands = [(e.key ^ t, e.node) for e in group if not e.bad]
            else:
                cands = [(e.key ^ t, e.node) for e in group if not e.bad and clock < e.good_until()]
            if not cands:
                continue
            need = count - len(out)
            if len(cands) > need:
                cands = heapq.nsmallest(need, cands)
            else:
                cands.sort()
            out += [n for _, n in cands]
            if len(out) >= count:
                break
        return out

    def _groups(self, c: int) -> Iterator[list[Entry]]:
        """Bucket ``c``, then the deeper buckets together, then ``c-1`` … ``0``: each group farther off."""
        buckets = self._buckets
        yield buckets[c].live
        if c + 1 < len(buckets):
            yield [e for b in buckets[c + 1 :] for e in b.live]
        for j in range(c - 1, -1, -1):
            yield buckets[j].live

    def _random_id_in(self, i: int) -> bytes:
        last = i == len(self._buckets) - 1
        fixed = i if last else i + 1  # number of leading bits fixed by the bucket
        free = ID_BITS - fixed
        prefix = self._own >> free if fixed else 0
        if not last:
            prefix ^= 1
        value = (prefix << free) | self._rng.getrandbits(free) if free else prefix
        return value.to_bytes(ID_LEN, "big")

    def refresh_targets(self, now: float, interval: float | None = None) -> list[bytes]:
        """Random ids, one in each bucket unchanged for ``interval`` (default 15 min), to find_node.

        Reporting a bucket marks it changed, so it is reported again only after another interval.
        """
        self._tick(now)
        every = self.refresh_interval if interval is None else interval
        targets = []
        for i, b in enumerate(self._buckets):
            if now - b.last_changed >= every:
                targets.append(self._random_id_in(i))
                b.last_changed = now
        return targets

    def nodes_to_ping(self, now: float, limit: int | None = None) -> list[NodeInfo]:
        """Questionable live nodes to ping now, least recently seen first.

        Each is handed out once per ``ping_timeout``; report the outcome with :meth:`heard_from`
        (``responded=True``) or :meth:`failed`.
        """
        self._tick(now)
        due = [
            e
            for b in self._buckets
            for e in b.live
            if e.state(now) is NodeState.QUESTIONABLE
            and (e.ping_sent is None or now >= e.ping_sent + self.ping_timeout)
        ]
        due.sort(key=lambda e: e.last_seen)
        if limit is not None:
            due = due[:limit]
        for e in due:
            e.ping_sent = now
        return [e.node for e in due]

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`refresh_targets` or :meth:`nodes_to_ping` has work; may be in the
        past (work is due now). None only for a table with no buckets to refresh.
        """
        deadline = math.inf
        for b in self._buckets:
            deadline = min(deadline, b.last_changed + self.refresh_interval)
            for e in b.live:
                if e.bad:
                    continue
                due = max(e.good_until(), e.first_seen)
                if e.ping_sent is not None:
                    due = max(due, e.ping_sent + self.ping_timeout)
                deadline = min(deadline, due)
        return None if deadline == math.inf else deadline

    # ----------------------------------------------------------------- persistence

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: hex ids, addresses, and contact times on the driver's clock."""

        def dump(e: Entry) -> dict[str, Any]:
            return {
                "id": e.node.id.hex(),
                "ip": e.node.ip,
                "port": e.node.port,
                "last_seen": finite(e.last_seen),
                "last_responded": finite(e.last_responded),
                "responded": e.last_responded is not None,
            }

        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "own_id": self.own_id.hex(),
            "k": self.k,
            "saved_at": finite(self._clock),
            "nodes": [dump(e) for b in self._buckets for e in b.live],
            "replacements": [dump(e) for b in self._buckets for e in b.replacements],
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], own_id: bytes | None = None, *, now: float = 0.0, **kw: Any
    ) -> RoutingTable:
        """Rebuild a table from :meth:`to_state`. Restored nodes are questionable (pinged soon).

        ``own_id`` overrides the saved id; ``kw`` are passed to the constructor (``k`` defaults to the
        saved one). Malformed entries are skipped; a malformed document raises RemoteProtocolError.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise RemoteProtocolError("not a p2pwatch routing table state")
        if state.get("version") != STATE_VERSION:
            raise RemoteProtocolError(f"unsupported routing table state version {state.get('version')!r}")
        if own_id is None:
            try:
                own_id = bytes.fromhex(str(state["own_id"]))
            except (KeyError, ValueError) as exc:
                raise RemoteProtocolError("routing table state has no valid own_id") from exc
            if len(own_id) != ID_LEN:
                raise RemoteProtocolError("routing table state has no valid own_id")
        saved_k = state.get("k")
        if "k" not in kw and isinstance(saved_k, int) and saved_k > 0:
            kw["k"] = saved_k
        table = cls(own_id, **kw)
        # live entries first, in their saved order, then the replacements: the same layout comes back
        for raw in chain(state.get("nodes") or [], state.get("replacements") or []):
            entry = load_entry(raw, now)
            if entry is None or entry.node.id == table.own_id or entry.node.id in table._by_id:
                continue
            node = entry.node
            if node.addr not in table._by_addr and acceptable_address(node.ip, node.port, table.allow_local):
                table._insert(entry, now)
        for b in table._buckets:
            b.last_changed = -math.inf  # refresh everything once after a restart
        return table
