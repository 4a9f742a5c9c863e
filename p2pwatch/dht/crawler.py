"""The crawler: a BEP 51 keyspace sweep plus passive capture of infohashes from the traffic we answer.

* Sweep: the 160-bit keyspace is cut into ``segments`` equal slices visited in a shuffled order; for each
  slice a lookup towards a random target inside it asks every node on the way for ``sample_infohashes``.
  A node that gave an ``interval`` (BEP 51) is not asked for samples again before it has elapsed: it is
  sent ``find_node`` instead, so the lookup can still route through it.
* Passive capture: every incoming ``get_peers`` and ``announce_peer`` names an infohash somebody is
  interested in; an ``announce_peer`` also names the announcer's address, a level-0 claim
  (DESIGN.md, evidence levels) that it is in the swarm.

Discoveries leave on a bounded trio channel. The sweep awaits the channel (a slow consumer slows the
sweep down); passive capture cannot push back on the network, so when the channel is full it drops the
event and counts it in :attr:`CrawlerStats.dropped`. Each infohash is emitted once
(:class:`~p2pwatch.dht.dedup.InfohashDedup`); announce claims are emitted every time.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from p2pwatch.dht import krpc
from p2pwatch.dht.dedup import InfohashDedup
from p2pwatch.dht.node import DHTNode, IncomingQuery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveredInfohash:
    """An infohash seen for the first time, with where it came from."""

    infohash: bytes
    reported_by: tuple[str, int]
    message: str  # "sample_infohashes" | "get_peers" | "announce_peer"
    at: datetime


@dataclass(frozen=True)
class AnnouncedPeer:
    """Level-0 claim: ``ip:port`` announced itself for ``infohash`` to our node."""

    infohash: bytes
    ip: str
    port: int
    seed: bool
    reported_by: tuple[str, int]
    at: datetime


Discovery = DiscoveredInfohash | AnnouncedPeer


@dataclass
class CrawlerStats:
    sweeps: int = 0
    lookups: int = 0
    samples: int = 0
    discovered: int = 0
    announces: int = 0
    dropped: int = 0
    nodes_sampled: int = 0
    intervals_honoured: int = 0


@dataclass
class Crawler:
    """Feeds :class:`Discovery` events into ``channel`` while :meth:`run` runs."""

    node: DHTNode
    channel: trio.MemorySendChannel[Discovery]
    segments: int = 256
    passive: bool = True
    #: a sweep starts at most this often (politeness; passive capture goes on in between)
    sweep_interval: float = 0.0
    dedup: InfohashDedup = field(default_factory=InfohashDedup)
    stats: CrawlerStats = field(default_factory=CrawlerStats)
    #: the sweep's order and targets (None: the ``random`` module's process-wide generator); the simulation
    #: passes a seeded one (issue 12: a reproducible run)
    rng: random.Random | None = None
    _next_sample: dict[tuple[str, int], float] = field(default_factory=dict)

    def _emit_nowait(self, event: Discovery) -> None:
        try:
            self.channel.send_nowait(event)
        except trio.WouldBlock:
            self.stats.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats.dropped += 1

    def _on_query(self, event: IncomingQuery) -> None:
        query = event.query
        if isinstance(query, krpc.GetPeers):
            infohash, message = query.info_hash, "get_peers"
        elif isinstance(query, krpc.AnnouncePeer):
            infohash, message = query.info_hash, "announce_peer"
            port = event.addr[1] if query.implied_port else query.port
            self.stats.announces += 1
            self._emit_nowait(AnnouncedPeer(infohash, event.addr[0], port, query.seed, event.addr, _utcnow()))
        else:
            return
        if self.dedup.add(infohash):
            self.stats.discovered += 1
            self._emit_nowait(DiscoveredInfohash(infohash, event.addr, message, _utcnow()))

    def may_sample(self, addr: tuple[str, int]) -> bool:
        """False while ``addr``'s BEP 51 interval since our last sample request has not elapsed."""
        allowed = self._next_sample.get(addr)
        if allowed is None or trio.current_time() >= allowed:
            return True
        self.stats.intervals_honoured += 1
        return False

    def sweep_targets(self) -> list[bytes]:
        rng = self.rng or random
        order = list(range(self.segments))
        rng.shuffle(order)
        width = (1 << 160) // self.segments
        return [(i * width + rng.randrange(width)).to_bytes(20, "big") for i in order]

    async def sample_once(self, target: bytes) -> int:
        """One sampling lookup towards ``target``; returns how many new infohashes it produced.

        Seeded from the routing table alone, not the responder cache: a sampling walk yields the nodes it
        passes on the way, and one that starts near its target passes fewer (the simulated crawl found a
        third fewer infohashes a minute with the cache's seeds; DECISIONS, "responder cache")."""
        seeds = self.node.table.closest(target, self.node.config.k * 2)
        result = await self.node.lookup(target, "sample_infohashes", sample_allowed=self.may_sample, seeds=seeds)
        self.stats.lookups += 1
        now = trio.current_time()
        new = 0
        for addr, samples in result.samples.items():
            self.stats.nodes_sampled += 1
            self.stats.samples += len(samples)
            self._next_sample[addr] = now + max(0, min(result.intervals.get(addr, 0), 21600))
            for infohash in samples:
                if self.dedup.add(infohash):
                    new += 1
                    self.stats.discovered += 1
                    await self.channel.send(DiscoveredInfohash(infohash, addr, "sample_infohashes", _utcnow()))
        if len(self._next_sample) > 200_000:
            self._next_sample = {a: t for a, t in self._next_sample.items() if t > now}
        return new

    async def run(self, *, sweeps: int | None = None, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Sweep forever (or ``sweeps`` times) and capture passive traffic meanwhile."""
        unsubscribe = self.node.subscribe(self._on_query) if self.passive else None
        task_status.started()
        try:
            done = 0
            while sweeps is None or done < sweeps:
                started = trio.current_time()
                for target in self.sweep_targets():
                    await self.sample_once(target)
                done += 1
                self.stats.sweeps += 1
                log.info("sweep %d done: %d infohashes so far", done, self.stats.discovered)
                if sweeps is None or done < sweeps:
                    await trio.sleep_until(started + self.sweep_interval)
        finally:
            if unsubscribe is not None:
                unsubscribe()


def _utcnow() -> datetime:
    return datetime.now(UTC)
