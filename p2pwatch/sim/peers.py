"""Simulated BitTorrent peers for the metadata stage: a :class:`~p2pwatch.monitor.pipeline.MetadataFetcher`
whose BEP 9 exchanges cost simulated time instead of sockets.

A peer of the population (:mod:`.population`) is reachable or not. A reachable peer hands out the metadata
after a TCP connect, the BitTorrent and extension handshakes (BEP 10) and the ``ut_metadata`` pieces (BEP 9):
``4 + pieces`` round trips of its link. An unreachable peer is either silent (a NAT or a firewall dropping
the SYN: the connect timeout) or refuses at once (one round trip). libtorrent, the fallback, connects to
every peer it is given and to the swarm it finds itself; here it succeeds when one of the peers is
reachable (after its round trips) and otherwise gives up at its timeout.

Every connection is counted per peer IP, for the politeness figures (at most one new connection per second
and one open connection per IP is the pipeline's rule; :attr:`PeerStats.max_per_second` checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trio

from p2pwatch.monitor.pipeline import FAILED, OK, TIMED_OUT, Addr, FetchAttempt
from p2pwatch.sim.population import Population


@dataclass
class PeerStats:
    connections: int = 0
    ok: int = 0
    refused: int = 0
    silent: int = 0
    max_per_second: int = 0
    max_open_per_ip: int = 0
    fallbacks: int = 0
    fallback_ok: int = 0


class SimPeers:
    """Simulated peers answering (or not) BEP 9 metadata requests."""

    def __init__(self, pop: Population, *, connect_timeout: float = 5.0, libtorrent_timeout: float = 60.0,
                 refuse_fraction: float = 0.3) -> None:
        self.pop = pop
        self.connect_timeout = connect_timeout
        self.libtorrent_timeout = libtorrent_timeout
        rng = np.random.default_rng((pop.settings.seed, 13))
        self.refuses = rng.random(pop.pool) < refuse_fraction  # of the unreachable: RST instead of silence
        self.rng = rng
        self.stats = PeerStats()
        self._last1 = np.full(pop.pool, -math.inf)
        self._last2 = np.full(pop.pool, -math.inf)
        self._open: dict[int, int] = {}

    def _rtt(self, p: int) -> float:
        return float(self.pop.peer_rtt[p]) * math.exp(self.rng.normal(0.0, self.pop.settings.jitter_sigma))

    def _count(self, p: int) -> None:
        now = trio.current_time()
        inside = 1 + int(now - self._last1[p] < 1.0) + int(now - self._last2[p] < 1.0)
        self.stats.max_per_second = max(self.stats.max_per_second, inside)
        self._last2[p], self._last1[p] = self._last1[p], now
        self.stats.connections += 1

    async def fetch(self, infohash: bytes, peer: Addr) -> FetchAttempt:
        p = self.pop.peer_index(peer[0])
        if p is None:
            return FetchAttempt(peer, FAILED)
        self._count(p)
        self._open[p] = self._open.get(p, 0) + 1
        self.stats.max_open_per_ip = max(self.stats.max_open_per_ip, self._open[p])
        try:
            if self.pop.peer_reachable[p]:
                pieces = 1 + int(self.rng.integers(0, 3))
                await trio.sleep(self._rtt(p) * (4 + pieces))
                self.stats.ok += 1
                return FetchAttempt(peer, OK, ("metadata", infohash))
            if self.refuses[p]:
                await trio.sleep(self._rtt(p))
                self.stats.refused += 1
                return FetchAttempt(peer, FAILED)
            await trio.sleep(self.connect_timeout)
            self.stats.silent += 1
            return FetchAttempt(peer, TIMED_OUT)
        finally:
            left = self._open[p] - 1
            if left:
                self._open[p] = left
            else:
                del self._open[p]

    async def fallback(self, infohash: bytes, peers: list[Addr]) -> object | None:
        self.stats.fallbacks += 1
        reachable = [p for p in (self.pop.peer_index(ip) for ip, _ in peers) if p is not None
                     and self.pop.peer_reachable[p]]
        if reachable:
            await trio.sleep(min(self.libtorrent_timeout, 2.0 + 6 * self._rtt(reachable[0])))
            self.stats.fallback_ok += 1
            return ("metadata", infohash)
        await trio.sleep(self.libtorrent_timeout)
        return None
