"""The simulated DHT's population: nodes, their liveness and churn, link round trip times, and torrents.

Everything is a numpy array indexed by node (or torrent) number, so a million nodes cost tens of MB:

* node ids: 20 random bytes each, sorted; ``hi`` holds their first 8 bytes as ``uint64`` and is unique (ids
  are redrawn until it is), so XOR order on ``hi`` is the XOR order of the whole 160-bit ids;
* addresses: node ``i`` is ``127.x.y.z`` for ``0x7F010000 + i`` (loopback only, netguard's test policy; no
  socket is ever opened), port 6881; metadata peers live in ``127.128.0.0/9``;
* ``alive``: a node that is not alive never answers (half of them at any time by default: mldht's
  measurement of the contacts in real routing tables); churn swaps live and dead nodes at a steady rate
  (mean session ``session_s``), so the dead fraction stays put while who is dead changes;
* ``rtt``: each link's base round trip time from us, log-normal (median ``rtt_median``, ``rtt_sigma``: a
  long tail); each datagram adds a log-normal jitter on top;
* ``bep51``: the nodes that implement sample_infohashes (the others answer it as find_node, as libtorrent
  does for a query it does not know that carries a ``target``).

Torrents: random infohashes, each with a heavy-tailed number of peers drawn from a shared pool (a peer can
sit in several swarms, as on the real network), each peer reachable for metadata or not. A torrent's peers
are stored at the ``k`` closest nodes that were alive when the peers announced (at the start: the run is
shorter than the 30-minute re-announce period); a holder that has died since simply does not answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from p2pwatch.errors import LocalProtocolError

DHT_PORT = 6881
NODE_BASE = 0x7F010000  # 127.1.0.0
PEER_BASE = 0x7F800000  # 127.128.0.0
MAX_NODES = 0x7F800000 - NODE_BASE
U64 = np.uint64


def ip_of(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def ip_value(ip: str) -> int | None:
    parts = ip.split(".")
    if len(parts) != 4:
        return None
    try:
        a, b, c, d = (int(p) for p in parts)
    except ValueError:
        return None
    return (a << 24) | (b << 16) | (c << 8) | d


def prefix_bounds(sorted_hi: np.ndarray, target: int, bits: int) -> tuple[int, int]:
    """Positions in ``sorted_hi`` of the values sharing ``target``'s top ``bits`` bits (``bits`` ≤ 64)."""
    if bits <= 0:
        return 0, len(sorted_hi)
    shift = 64 - bits
    start = (target >> shift) << shift
    end = start + (1 << shift)
    lo = int(np.searchsorted(sorted_hi, U64(start), side="left"))
    hi = len(sorted_hi) if end >= 1 << 64 else int(np.searchsorted(sorted_hi, U64(end), side="left"))
    return lo, hi


@dataclass
class PopulationSettings:
    nodes: int = 100_000
    dead_fraction: float = 0.5
    bep51_fraction: float = 0.3
    rtt_median: float = 0.15
    rtt_sigma: float = 0.6
    jitter_sigma: float = 0.15
    loss: float = 0.0  # datagrams lost on the way (issue 12 does not model loss; see DECISIONS)
    session_s: float = 1800.0  # mean time a node stays alive (and dead) before churn flips it
    torrents_per_node: float = 2.0
    peers_mean: float = 5.0
    peer_pool_per_node: float = 2.0
    peer_reachable: float = 0.4
    k: int = 8
    seed: int = 1


class Population:
    """Nodes and torrents of one simulated DHT (see the module docstring)."""

    def __init__(self, s: PopulationSettings) -> None:
        if not 16 <= s.nodes <= MAX_NODES:
            raise LocalProtocolError(f"nodes must be between 16 and {MAX_NODES}")
        if not 0.0 <= s.dead_fraction < 1.0:
            raise LocalProtocolError("dead_fraction must be in [0, 1)")
        self.settings = s
        self.k = s.k
        self.rng = np.random.default_rng(s.seed)
        n = self.n = s.nodes
        hi = np.unique(self.rng.integers(0, 2**64, size=n, dtype=U64, endpoint=False))
        while len(hi) < n:
            extra = self.rng.integers(0, 2**64, size=n - len(hi), dtype=U64)
            hi = np.unique(np.concatenate([hi, extra]))
        self.hi: np.ndarray = hi  # sorted, unique
        self.lo_bytes: np.ndarray = self.rng.integers(0, 256, size=(n, 12), dtype=np.uint8)  # the other 12 bytes
        self.alive: np.ndarray = self.rng.random(n) >= s.dead_fraction
        self.bep51: np.ndarray = self.rng.random(n) < s.bep51_fraction
        self.rtt: np.ndarray = np.exp(self.rng.normal(math.log(s.rtt_median), s.rtt_sigma, n)).astype(np.float32)
        self.announce_alive: np.ndarray = self.alive.copy()
        self.flips = 0
        self._build_torrents()

    # ----------------------------------------------------------------- nodes

    def node_id(self, i: int) -> bytes:
        return int(self.hi[i]).to_bytes(8, "big") + self.lo_bytes[i].tobytes()

    @staticmethod
    def node_ip(i: int) -> str:
        return ip_of(NODE_BASE + i)

    def index_of(self, ip: str, port: int) -> int | None:
        value = ip_value(ip)
        if value is None or port != DHT_PORT:
            return None
        i = value - NODE_BASE
        return i if 0 <= i < self.n else None

    def index_of_id(self, node_id: bytes) -> int | None:
        if len(node_id) != 20:
            return None
        key = int.from_bytes(node_id[:8], "big")
        i = int(np.searchsorted(self.hi, U64(key)))
        return i if i < self.n and int(self.hi[i]) == key and self.node_id(i) == node_id else None

    def random_live(self, rng: np.random.Generator, count: int = 1) -> list[int]:
        live = np.flatnonzero(self.alive)
        return [int(x) for x in rng.choice(live, size=count, replace=False)]

    def churn(self, dt: float) -> int:
        """Let ``dt`` seconds of churn happen: as many live nodes die as dead ones come back."""
        p = 1.0 - math.exp(-dt / self.settings.session_s)
        live = np.flatnonzero(self.alive)
        dead = np.flatnonzero(~self.alive)
        count = min(int(self.rng.binomial(len(live), p)), len(dead))
        if count:
            self.alive[self.rng.choice(live, count, replace=False)] = False
            self.alive[self.rng.choice(dead, count, replace=False)] = True
            self.flips += 2 * count
        return count

    # ----------------------------------------------------------------- ground truth

    def closest(self, target_hi: int, count: int, mask: np.ndarray | None = None) -> np.ndarray:
        """The ``count`` nodes (among ``mask``, default the live ones) closest to ``target_hi`` by XOR.

        Exact: every node sharing ``b`` leading bits with the target is closer than every node that does
        not, so the answer lies in the smallest prefix range of the target holding ``count`` such nodes.
        """
        mask = self.alive if mask is None else mask
        bits = max(0, int(math.log2(max(1.0, self.n / (4 * count)))))
        while True:
            lo, hi = prefix_bounds(self.hi, target_hi, bits)
            idx = lo + np.flatnonzero(mask[lo:hi])
            if len(idx) >= count or bits == 0:
                break
            bits = max(0, bits - 2)
        order = np.argsort(self.hi[idx] ^ U64(target_hi), kind="stable")
        return idx[order[:count]]

    def true_closest_ids(self, target: bytes, count: int | None = None) -> list[bytes]:
        """Ids of the ``count`` (default k) live nodes closest to ``target``, closest first."""
        got = self.closest(int.from_bytes(target[:8], "big"), count or self.k)
        return [self.node_id(int(i)) for i in got]

    # ----------------------------------------------------------------- torrents

    def _build_torrents(self) -> None:
        s, rng = self.settings, self.rng
        t = self.t = max(1, int(self.n * s.torrents_per_node))
        self.t_hi: np.ndarray = np.sort(rng.integers(0, 2**64, size=t, dtype=U64))
        self.t_lo: np.ndarray = rng.integers(0, 256, size=(t, 12), dtype=np.uint8)
        counts = 1 + np.minimum(rng.geometric(1.0 / max(1.0, s.peers_mean), size=t) - 1, 199)
        self.t_offsets: np.ndarray = np.zeros(t + 1, dtype=np.int64)
        np.cumsum(counts, out=self.t_offsets[1:])
        pool = self.pool = max(16, int(self.n * s.peer_pool_per_node))
        if pool > (1 << 23) - 2:
            raise LocalProtocolError("peer pool too large for 127.128.0.0/9")
        self.t_peers: np.ndarray = rng.integers(0, pool, size=int(self.t_offsets[-1]), dtype=np.int32)
        self.peer_reachable: np.ndarray = rng.random(pool) < s.peer_reachable
        self.peer_rtt: np.ndarray = np.exp(rng.normal(math.log(s.rtt_median), s.rtt_sigma, pool)).astype(np.float32)
        self.peer_port: np.ndarray = rng.integers(1024, 65535, size=pool, dtype=np.int32)
        # BEP 5 storage: each depth-`store_bits` prefix range holds ~64 nodes alive at announce time, so the
        # k holders of a torrent are always nodes of its own range (see stored_at)
        self.store_bits = max(0, int(math.log2(max(1.0, self.announce_alive.sum() / 64))))

    def infohash(self, t: int) -> bytes:
        return int(self.t_hi[t]).to_bytes(8, "big") + self.t_lo[t].tobytes()

    def torrent_index(self, infohash: bytes) -> int | None:
        if len(infohash) != 20:
            return None
        key = int.from_bytes(infohash[:8], "big")
        lo = int(np.searchsorted(self.t_hi, U64(key), side="left"))
        hi = int(np.searchsorted(self.t_hi, U64(key), side="right"))
        for t in range(lo, hi):
            if self.t_lo[t].tobytes() == infohash[8:]:
                return t
        return None

    def peers_of(self, t: int) -> np.ndarray:
        return self.t_peers[self.t_offsets[t]:self.t_offsets[t + 1]]

    @staticmethod
    def peer_addr_ip(p: int) -> str:
        return ip_of(PEER_BASE + 1 + p)

    def peer_index(self, ip: str) -> int | None:
        value = ip_value(ip)
        if value is None:
            return None
        p = value - PEER_BASE - 1
        return p if 0 <= p < self.pool else None

    def holders(self, t: int) -> np.ndarray:
        """The k nodes that stored torrent ``t``'s peers (closest among those alive at announce time)."""
        return self.closest(int(self.t_hi[t]), self.k, self.announce_alive)

    def holds(self, i: int, t: int) -> bool:
        return bool(self.announce_alive[i]) and i in self.holders(t)

    def stored_at(self, i: int) -> np.ndarray:
        """Torrents whose peers node ``i`` stores (empty for a node that was dead at announce time).

        Only torrents of ``i``'s own depth-``store_bits`` prefix range can have it as a holder: each range
        holds ≥ k announce-time live nodes (checked; the depth is lowered when one does not), all closer to
        its torrents than any node outside it.
        """
        if not self.announce_alive[i]:
            return np.zeros(0, dtype=np.int64)
        own = int(self.hi[i])
        bits = self.store_bits
        while True:
            lo, hi = prefix_bounds(self.hi, own, bits)
            nodes = lo + np.flatnonzero(self.announce_alive[lo:hi])
            if len(nodes) >= 2 * self.k or bits == 0:
                break
            bits -= 1
        tlo, thi = prefix_bounds(self.t_hi, own, bits)
        if thi == tlo:
            return np.zeros(0, dtype=np.int64)
        dist = self.t_hi[tlo:thi, None] ^ self.hi[nodes][None, :]
        k = min(self.k, len(nodes))
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < len(nodes) else np.tile(
            np.arange(len(nodes)), (thi - tlo, 1))
        mine = int(np.searchsorted(nodes, i))
        rows = np.flatnonzero((nearest == mine).any(axis=1))
        return tlo + rows
