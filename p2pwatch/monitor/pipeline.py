"""The crawler → metadata pipeline (issue 12): from a discovered infohash to its verified metadata (BEP 9).

For each :class:`Lead` (an infohash, the node whose BEP 51 sample listed it, peers already known):

1. **Ask the node that sampled it** (one BEP 5 ``get_peers`` to that node): it stores the infohash because
   it is among the closest nodes to it, so it usually lists the peers at once, and the nodes it names are
   the other holders (seeds for step 3).
2. **Fetch metadata from several peers at once** (``peers_at_once`` per torrent, ``connections`` overall,
   ``peer_ip_rate`` new connections/s and one open connection per peer IP); the first verified copy wins.
3. **Only when that fails, a full get_peers lookup** (``lookups`` at once) for more peers, and step 2 again
   with the peers not tried yet;
4. **then libtorrent** (``libtorrent`` at once; when every slot is busy the torrent is given up and counted
   rather than waited for: a 60-second fallback must not stall the stages before it).

Every stage is bounded: at most ``active`` leads are in the pipeline (the caller's channel fills up and
pushes back onto the crawler), each lead has a ``deadline``, the outcome channel is bounded (a slow matcher
pushes back too). Everything is counted in :class:`PipelineStats`.

The scheduling is sans-IO in the sense that matters: the DHT and the peer wire are two small ports
(:class:`PeerSource`, :class:`MetadataFetcher`). The monitor daemon plugs in the real DHT node and
BEP 9 probes (:mod:`p2pwatch.monitor.metadata_sources`); the simulated DHT (:mod:`p2pwatch.sim`) plugs in
the same DHT node over a simulated network and simulated peers, so both run this very code. Politeness
towards DHT nodes (``outbound_rate`` queries/s per IP) is the DHT node's own rate limiter.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from p2pwatch import netguard
from p2pwatch.config import MetadataSettings
from p2pwatch.dht import krpc
from p2pwatch.dht.node import DHTNode
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.dht.ratelimit import PerIPRateLimiter
from p2pwatch.errors import KRPCError, P2PWatchError, QueryTimeout
from p2pwatch.monitor.contain import contain

log = logging.getLogger(__name__)

Addr = tuple[str, int]
OK, FAILED, TIMED_OUT, NO_PEERS = "ok", "failed", "timed_out", "no_peers"


@dataclass(frozen=True)
class Lead:
    """An infohash to get metadata for, and where to start looking for its peers."""

    infohash: bytes
    sampled_from: Addr | None = None  # the DHT node whose BEP 51 sample listed it
    peers: tuple[Addr, ...] = ()  # peers already known (e.g. one that announced itself to us)


@dataclass(frozen=True)
class PeersReply:
    """What one DHT node said about an infohash: peers (``values``) and nodes closer to it."""

    peers: tuple[Addr, ...] = ()
    nodes: Sequence[object] = ()  # NodeInfo, for seeding a lookup


@dataclass
class FetchAttempt:
    """One BEP 9 attempt at one peer: ``status`` is ok, failed or timed_out; ``evidence`` is what the
    fetcher keeps of the connection (the daemon's probe result)."""

    peer: Addr
    status: str
    metainfo: object | None = None
    evidence: object | None = None


@dataclass
class MetadataOutcome:
    """The pipeline's verdict for one lead."""

    infohash: bytes
    status: str  # ok | failed | timed_out | no_peers
    metainfo: object | None = None
    source: str | None = None  # direct | lookup | libtorrent
    peers: dict[Addr, set[Addr]] = field(default_factory=dict)  # peer -> the nodes that listed it
    attempts: list[FetchAttempt] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


class PeerSource(Protocol):
    async def ask_node(self, node: Addr, infohash: bytes) -> PeersReply:
        """One get_peers to ``node``; an empty reply when it does not answer."""

    async def lookup(self, infohash: bytes, seeds: Iterable[object]) -> dict[Addr, set[Addr]]:
        """A full get_peers lookup: every peer found, with the nodes that listed it."""


class MetadataFetcher(Protocol):
    async def fetch(self, infohash: bytes, peer: Addr) -> FetchAttempt:
        """One BEP 9 attempt, bounded by the fetcher's own timeouts."""

    async def fallback(self, infohash: bytes, peers: list[Addr]) -> object | None:
        """The last resort (libtorrent): metadata, or None."""


def node_of_family(ip: str, node: DHTNode, node6: DHTNode | None) -> DHTNode | None:
    """BEP 32: the node whose socket is of ``ip``'s family (None for IPv6 when only IPv4 runs)."""
    return node6 if ":" in ip else node


class DHTPeerSource:
    """:class:`PeerSource` over running :class:`~p2pwatch.dht.node.DHTNode` s (real or simulated network).

    Dual stack (BEP 32): with an IPv6 node (``node6``) a sampled-from node is asked through the node of its
    own address family (the IPv4 and the IPv6 DHT are two DHTs, each node with its own socket and its own
    per-IP rate limiter), and a lookup runs on both DHTs at once, each seeded with its own family's nodes;
    their peers are merged (each listing keeps its reporter, so its family stays known).
    """

    def __init__(self, node: DHTNode, node6: DHTNode | None = None) -> None:
        self.node = node
        self.node6 = node6

    @property
    def nodes(self) -> list[DHTNode]:
        return [n for n in (self.node, self.node6) if n is not None]

    def node_for(self, addr: Addr) -> DHTNode | None:
        """The node of ``addr``'s address family; None for an IPv6 address without an IPv6 node."""
        return node_of_family(addr[0], self.node, self.node6)

    async def ask_node(self, node: Addr, infohash: bytes) -> PeersReply:
        me = self.node_for(node)
        if me is None:
            return PeersReply()
        asker, want = me, ((b"n6",) if me is self.node6 else ())
        try:
            reply = await me.query(node, lambda t: krpc.GetPeers(t, asker.own_id, infohash, want=want,
                                                                 read_only=asker.config.read_only))
        except (QueryTimeout, KRPCError, netguard.NetworkRefused, OSError):
            return PeersReply()
        return PeersReply(reply.values, reply.nodes6 if me is self.node6 else reply.nodes)

    async def lookup(self, infohash: bytes, seeds: Iterable[object]) -> dict[Addr, set[Addr]]:
        infos = [s for s in seeds if isinstance(s, NodeInfo)]
        merged: dict[Addr, set[Addr]] = {}

        async def one(node: DHTNode) -> None:
            v6 = node is self.node6
            start = [s for s in infos if (":" in s.ip) == v6] + node.table.closest(infohash, node.config.k)
            try:
                found = await node.get_peers(infohash, seeds=start)
            except (netguard.NetworkRefused, OSError) as exc:
                log.debug("lookup of %s failed: %s", infohash.hex(), exc)
                return
            for peer, reporters in found.peers.items():
                merged.setdefault(peer, set()).update(reporters)

        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                nursery.start_soon(one, node)
        return merged


@dataclass
class PipelineStats:
    leads: int = 0
    direct_asked: int = 0
    direct_with_peers: int = 0
    lookups: int = 0
    lookup_with_peers: int = 0
    fetch_attempts: int = 0
    fetch_ok: int = 0
    fetch_failed: int = 0
    fetch_timed_out: int = 0
    libtorrent: int = 0
    libtorrent_ok: int = 0
    libtorrent_busy: int = 0
    ok: int = 0
    failed: int = 0
    timed_out: int = 0
    no_peers: int = 0
    ok_direct: int = 0
    ok_lookup: int = 0
    active: int = 0
    max_active: int = 0
    max_connections: int = 0
    max_lookups: int = 0
    pipeline_errors: int = 0  # leads failed by an unexpected error (logged with its traceback; also in `failed`)

    def count_outcome(self, outcome: MetadataOutcome) -> None:
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        if outcome.source == "direct":
            self.ok_direct += 1
        elif outcome.source == "lookup":
            self.ok_lookup += 1


class PeerGate:
    """Per peer IP: at most ``concurrent`` open connections and ``rate`` new connections per second."""

    def __init__(self, rate: float, concurrent: int = 1) -> None:
        self.rate = PerIPRateLimiter(rate, burst=1.0)
        self.concurrent = concurrent
        self._busy: dict[str, int] = {}

    def try_acquire(self, ip: str, now: float) -> bool:
        """Take ``ip`` for one connection if it is free and its rate allows one now."""
        if self._busy.get(ip, 0) >= self.concurrent or not self.rate.allow(ip, now):
            return False
        self._busy[ip] = self._busy.get(ip, 0) + 1
        return True

    def wait_hint(self, ip: str, now: float) -> float:
        """Seconds worth waiting before trying ``ip`` again (a busy IP is polled every 0.5 s)."""
        if self._busy.get(ip, 0) >= self.concurrent:
            return 0.5
        return max(self.rate.delay(ip, now), 1e-3)

    def release(self, ip: str) -> None:
        left = self._busy.get(ip, 1) - 1
        if left > 0:
            self._busy[ip] = left
        else:
            self._busy.pop(ip, None)


class MetadataPipeline:
    """Runs leads from a channel to outcomes on another (see the module docstring)."""

    def __init__(self, peers: PeerSource, fetcher: MetadataFetcher, settings: MetadataSettings | None = None, *,
                 max_peers: int = 8) -> None:
        self.source = peers
        self.fetcher = fetcher
        self.settings = s = settings or MetadataSettings()
        self.max_peers = max_peers
        self.stats = PipelineStats()
        self.gate = PeerGate(s.peer_ip_rate)
        self._active = trio.CapacityLimiter(s.active)
        self._connections = trio.CapacityLimiter(s.connections)
        self._lookups = trio.CapacityLimiter(s.lookups)
        self._libtorrent = trio.CapacityLimiter(s.libtorrent)

    async def run(self, leads: trio.MemoryReceiveChannel[Lead], outcomes: trio.MemorySendChannel[MetadataOutcome],
                  *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Process leads until ``leads`` is closed and every lead in flight has finished."""
        async with outcomes, trio.open_nursery() as nursery:
            task_status.started()
            async for lead in leads:
                await self._active.acquire_on_behalf_of(lead)  # back-pressure: at most `active` in flight
                nursery.start_soon(self._one, lead, outcomes)

    async def _one(self, lead: Lead, outcomes: trio.MemorySendChannel[MetadataOutcome]) -> None:
        st = self.stats
        st.leads += 1
        started = trio.current_time()
        try:
            st.active += 1  # a lead is active while it is processed, not while its outcome waits for the matcher
            st.max_active = max(st.max_active, st.active)
            try:
                outcome = MetadataOutcome(lead.infohash, TIMED_OUT, started=started)
                with trio.move_on_after(self.settings.deadline):
                    # bad input or a refused address (typed) or whatever a swarm sends: this lead fails alone
                    with contain(f"metadata for {lead.infohash.hex()}", st, "pipeline_errors",
                                 expected=(P2PWatchError,), logger=log) as guard:
                        outcome = await self.process(lead)
                    if guard.failed:
                        outcome = MetadataOutcome(lead.infohash, FAILED, started=started)
            finally:
                st.active -= 1
            outcome.finished = trio.current_time()
            st.count_outcome(outcome)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await outcomes.send(outcome)  # back-pressure from the matcher: the slot is held until then
        finally:
            self._active.release_on_behalf_of(lead)

    async def process(self, lead: Lead) -> MetadataOutcome:
        """One lead through the stages: direct peers, fetch, lookup, fetch, libtorrent."""
        st = self.stats
        outcome = MetadataOutcome(lead.infohash, FAILED, started=trio.current_time())
        for peer in lead.peers:
            outcome.peers.setdefault(peer, set()).add(peer)
        tried: set[Addr] = set()
        seeds: Sequence[object] = ()
        if lead.sampled_from is not None:
            st.direct_asked += 1
            reply = await self.source.ask_node(lead.sampled_from, lead.infohash)
            seeds = reply.nodes
            if reply.peers:
                st.direct_with_peers += 1
            for peer in reply.peers:
                outcome.peers.setdefault(peer, set()).add(lead.sampled_from)
        if await self._fetch_round(outcome, tried, "direct"):
            return outcome
        async with self._lookups:
            st.lookups += 1
            st.max_lookups = max(st.max_lookups, self._lookups.borrowed_tokens)
            found = await self.source.lookup(lead.infohash, seeds)
        if found:
            st.lookup_with_peers += 1
        for peer, reporters in found.items():
            outcome.peers.setdefault(peer, set()).update(reporters)
        if await self._fetch_round(outcome, tried, "lookup"):
            return outcome
        if not outcome.peers:
            outcome.status = NO_PEERS
            return outcome
        try:
            self._libtorrent.acquire_nowait()
        except trio.WouldBlock:
            st.libtorrent_busy += 1
        else:
            try:
                st.libtorrent += 1
                metainfo = await self.fetcher.fallback(lead.infohash, sorted(outcome.peers))
            finally:
                self._libtorrent.release()
            if metainfo is not None:
                st.libtorrent_ok += 1
                outcome.status, outcome.metainfo, outcome.source = OK, metainfo, "libtorrent"
                return outcome
        attempts = outcome.attempts
        outcome.status = TIMED_OUT if attempts and all(a.status == TIMED_OUT for a in attempts) else FAILED
        return outcome

    async def _fetch_round(self, outcome: MetadataOutcome, tried: set[Addr], source: str) -> bool:
        """BEP 9 from the untried peers, ``peers_at_once`` at a time; True once one delivered metadata.

        A peer whose IP is busy (a connection of another torrent is open) or was connected to less than
        ``1 / peer_ip_rate`` s ago is passed over for the next one and tried again later, so politeness
        towards one popular IP never holds up the other peers of the torrent.
        """
        todo = [p for p in sorted(outcome.peers) if p not in tried][: max(0, self.max_peers - len(tried))]
        if not todo:
            return False
        tried.update(todo)
        pending = deque(todo)
        slots = trio.Semaphore(self.settings.peers_at_once)
        st = self.stats

        async def attempt(peer: Addr, token: object, cancel: trio.CancelScope) -> None:
            try:
                st.fetch_attempts += 1
                st.max_connections = max(st.max_connections, self._connections.borrowed_tokens)
                result = await self.fetcher.fetch(outcome.infohash, peer)
            finally:
                self._connections.release_on_behalf_of(token)
                self.gate.release(peer[0])
                slots.release()
            outcome.attempts.append(result)
            if result.status == OK and result.metainfo is not None:
                st.fetch_ok += 1
                if outcome.status != OK:
                    outcome.status, outcome.metainfo, outcome.source = OK, result.metainfo, source
                    cancel.cancel()
            elif result.status == TIMED_OUT:
                st.fetch_timed_out += 1
            else:
                st.fetch_failed += 1

        async with trio.open_nursery() as nursery:
            while pending and outcome.status != OK:
                await slots.acquire()
                token = object()
                await self._connections.acquire_on_behalf_of(token)  # the connection opens when the IP allows
                now = trio.current_time()
                for _ in range(len(pending)):
                    if self.gate.try_acquire(pending[0][0], now):
                        nursery.start_soon(attempt, pending.popleft(), token, nursery.cancel_scope)
                        break
                    pending.rotate(-1)
                else:  # every remaining peer's IP is busy or rate-limited: wait for the first to free up
                    self._connections.release_on_behalf_of(token)
                    slots.release()
                    await trio.sleep(min(self.gate.wait_hint(p[0], now) for p in pending))
        return outcome.status == OK
