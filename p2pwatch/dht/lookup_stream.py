"""Streaming lookups (BEP 5 get_peers / find_node, BEP 51 sample_infohashes) for the trio DHT driver.

:func:`open_lookup` runs one :class:`~p2pwatch.dht.traversal.Traversal` in a task of its own and delivers
what each reply brings as it arrives, through a bounded queue (:class:`~p2pwatch.dht.event_queue.EventQueue`):
a :class:`PeersFound` for every reply carrying ``values`` (so a caller acts on the first seeders at once), a
:class:`NodeAnswered` for every reply. Iteration ends when the traversal ends; the whole
:class:`LookupResult` is then ``stream.result``.

The slow-contact rule lives in the sans-IO traversal: a query past ``short_timeout`` gives its slot to the
next candidate and no longer holds the end back; it is still awaited (until ``query_timeout``) while the
lookup goes on, and a late reply is still used. The lookup ends when the k closest *responding* nodes have
answered (issue 12; libtorrent widens the branch factor the same way, but waits for slow nodes to fail).

With a driver that has ``start_query`` (:class:`~p2pwatch.dht.node.DHTNode`) no task waits for a query: its
reply or error comes by callback in the node's receive loop, which applies it and queues its events; the
lookup's own task judges the full timeout and frees the query's slot. A task per query remains only for a
query that could not leave at once (its IP's rate, a full socket buffer) or a driver with ``query`` alone.

A reply that lists peers puts its :class:`PeersFound` in the queue from the receive loop itself; the rest
of it (the routing table, the traversal's new candidates, its :class:`NodeAnswered`) waits for the lookup's
task, which runs after the consumer: the first seeders reach the caller before any routing work (issue 12).

The queue is bounded: with no room, a reply waits for the lookup's task, which waits for room and sends no
new query meanwhile, so a consumer that does not keep up holds back the lookup, not memory.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from p2pwatch import netguard
from p2pwatch.bounded import remember
from p2pwatch.dht import krpc
from p2pwatch.dht.event_queue import EventQueue, Wakeup
from p2pwatch.dht.node_types import DHTConfig, LookupResult
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.dht.routing import RoutingTable, acceptable_address
from p2pwatch.dht.traversal import Traversal
from p2pwatch.errors import KRPCError, LocalProtocolError, QueryTimeout

__all__ = ["STREAM_BUFFER", "LookupEvent", "LookupStream", "NodeAnswered", "PeersFound", "is_ipv6", "open_lookup"]

Addr = tuple[str, int]
STREAM_BUFFER = 256  # events buffered between a lookup and its consumer


@dataclass(frozen=True)
class PeersFound:
    """One reply's ``values``: ``peers`` as reported by ``reporter``; ``new`` the ones not seen before."""

    reporter: Addr
    peers: tuple[Addr, ...]
    new: tuple[Addr, ...]
    at: float


@dataclass(frozen=True)
class NodeAnswered:
    """A node answered (``nodes`` it told us of, ``samples`` for BEP 51)."""

    node: NodeInfo
    nodes: int
    samples: tuple[bytes, ...]
    at: float


LookupEvent = PeersFound | NodeAnswered


class Querier(Protocol):
    """What a lookup needs from the node driver (:class:`~p2pwatch.dht.node.DHTNode`)."""

    config: DHTConfig
    table: RoutingTable
    own_id: bytes

    async def query(self, addr: Addr, build: Callable[[bytes], krpc.Query],
                    timeout: float | None = None) -> krpc.Response: ...


class StartedQuery(Protocol):
    """A query :meth:`StartingQuerier.start_query` returned: ``unsent`` is its datagram while the socket
    buffer was full (a task must then :meth:`~StartingQuerier.finish_query` it), else None."""

    unsent: bytes | None


class StartingQuerier(Querier, Protocol):
    """A driver that can also send a query without yielding and run callbacks on its reply or error in the
    receive loop (:meth:`~p2pwatch.dht.node.DHTNode.start_query`): a lookup's queries then need no task
    each, and a reply reaches the consumer with no task switch between (issue 12)."""

    def start_query(self, addr: Addr, build: Callable[[bytes], krpc.Query], *,
                    on_reply: Callable[[krpc.Response, float], None] | None = None,
                    on_error: Callable[[krpc.Error, float], None] | None = None) -> StartedQuery | None: ...

    def release_query(self, pending: Any, *, timed_out: bool = False) -> None: ...

    async def finish_query(self, pending: Any, timeout: float | None = None) -> krpc.Response: ...


class _Flight:
    """A lookup's query sent without a task: to whom, which query, and the driver's handle."""

    __slots__ = ("node", "pending", "use")

    def __init__(self, node: NodeInfo, use: Callable[[bytes], krpc.Query]) -> None:
        self.node = node
        self.use = use
        self.pending: Any = None


class LookupStream:
    """Async iterator over a running lookup's events; ``result`` once iteration has ended."""

    def __init__(self, receive: EventQueue[LookupEvent], traversal: Traversal,
                 result: LookupResult) -> None:
        self._receive = receive
        self.traversal = traversal
        self._result = result
        self.finished = False

    def __aiter__(self) -> AsyncIterator[LookupEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[LookupEvent]:
        async for event in self._receive:
            yield event
        self.finished = True

    async def drain(self) -> LookupResult:
        """Consume the remaining events; returns :attr:`result`."""
        async for _ in self:
            pass
        return self.result

    @property
    def result(self) -> LookupResult:
        t = self.traversal
        r = self._result
        r.closest, r.peers, r.tokens = t.result(), t.peers, t.tokens
        r.queries, r.responses = t.queries_sent, t.responses
        return r


def is_ipv6(config: DHTConfig) -> bool:
    """Does this node run on the IPv6 DHT (BEP 32: a separate DHT, its own socket and routing table)?"""
    return ":" in config.bind_host


#: the query shapes (one per kind and flags, shared by every node of the process), so no lookup's query is
#: encoded again, not even a new node's first
_SHAPES: dict[tuple[str, bool, bool, bool], krpc.QueryShape] = {}
_MAX_SHAPES = 64


def builder(node: Querier, kind: str, target: bytes, scrape: bool) -> Callable[[bytes], krpc.Query]:
    """The query of a lookup step, from the :class:`~p2pwatch.dht.krpc.QueryShape` of that kind: its bytes
    are the shape's, with the node's id and the target spliced in (no encoding per lookup). An IPv6 node asks
    for ``nodes6`` explicitly (BEP 32 ``want``); an IPv4 node sends no ``want``, so plain BEP 5 nodes answer
    it as before."""
    ro, ipv6 = node.config.read_only, is_ipv6(node.config)
    key = (kind, scrape, ro, ipv6)
    shape = _SHAPES.get(key)
    if shape is None:
        shape = remember(_SHAPES, key, krpc.QueryShape(_make_query(kind, scrape, ro, ipv6)), _MAX_SHAPES)
    return shape.template(node.own_id, target)


def _make_query(kind: str, scrape: bool, ro: bool, ipv6: bool) -> Callable[[bytes, bytes, bytes], krpc.Query]:
    want = (b"n6",) if ipv6 else ()
    if kind == "get_peers":
        return lambda t, own, target: krpc.GetPeers(t, own, target, want=want, scrape=scrape, read_only=ro)
    if kind == "sample_infohashes":
        return lambda t, own, target: krpc.SampleInfohashes(t, own, target, want=want, read_only=ro)
    if kind == "find_node":
        return lambda t, own, target: krpc.FindNode(t, own, target, want=want, read_only=ro)
    raise LocalProtocolError(f"unknown lookup kind {kind!r}")


@asynccontextmanager
async def open_lookup(node: Querier, target: bytes, kind: str, seeds: Iterable[NodeInfo], *,
                      scrape: bool = False, max_queries: int | None = None,
                      sample_allowed: Callable[[Addr], bool] | None = None,
                      buffer: int = STREAM_BUFFER, closest_first: bool = False,
                      more_seeds: Callable[[], Iterable[NodeInfo]] | None = None) -> AsyncIterator[LookupStream]:
    """Run a lookup towards ``target`` for the duration of the block, streaming its events.

    Leaving the block early cancels the lookup (its queries are abandoned). ``closest_first``: ``seeds`` are
    sorted by distance to ``target`` (a routing table's closest), so the first round, which is the first
    ``alpha + eager`` of them, is sent before the traversal takes in the rest. ``more_seeds`` gives further
    seeds (the first ones may come again) once the first round is out: a routing table's wider closest set,
    computed after the first datagrams left.
    """
    config = node.config
    now = trio.current_time()
    seeds = list(seeds)
    split = config.alpha + config.eager if closest_first else len(seeds)
    later = seeds[split:]
    more = [more_seeds] if more_seeds is not None else []  # taken once, by ``seed_later``
    build = builder(node, kind, target, scrape)
    route_only = builder(node, "find_node", target, False)
    ipv6 = is_ipv6(config)
    starter: StartingQuerier | None = node if hasattr(node, "start_query") else None  # type: ignore[assignment]

    def peers_found(peer_node: NodeInfo, reply: krpc.Response, at: float) -> PeersFound:
        listed, new = traversal.record_peers(peer_node.addr, reply.values)
        return PeersFound(peer_node.addr, tuple(listed), tuple(new), at)

    def process(peer_node: NodeInfo, use: Callable[[bytes], krpc.Query], reply: krpc.Response,
                at: float, peers_out: bool = False) -> list[LookupEvent]:
        """Apply one reply to the traversal and the result; the events it brings, in order (its
        :class:`PeersFound` left out when ``peers_out``: the receive loop sent it ahead)."""
        seed_later()
        answered = NodeInfo(reply.sender, peer_node.ip, peer_node.port)
        node.table.heard_from(answered, at, responded=True)
        events: list[LookupEvent] = []
        if reply.values and not peers_out:
            events.append(peers_found(peer_node, reply, at))
        nodes = reply.nodes6 if ipv6 else reply.nodes  # BEP 32: each DHT walks its own address family
        traversal.on_response(answered, at, nodes=nodes, token=reply.token, samples=reply.samples)
        if use is build and kind == "sample_infohashes":
            result.samples[peer_node.addr] = reply.samples
            if reply.interval is not None:
                result.intervals[peer_node.addr] = reply.interval
        if reply.bf_seeds:
            result.bf_seeds.append(reply.bf_seeds)
        if reply.bf_peers:
            result.bf_peers.append(reply.bf_peers)
        events.append(NodeAnswered(answered, len(nodes), tuple(reply.samples), at))
        return events

    def seed_later() -> None:
        """The seeds past the first round join the traversal: at the driver's first step, or before the
        traversal judges a reply or a failure, whichever comes first."""
        if more:
            later.extend(more.pop()())
        if later:
            traversal.add_seeds(later)
            later.clear()

    def failed(peer_node: NodeInfo) -> None:
        at = trio.current_time()
        seed_later()
        traversal.on_failure(peer_node, at)
        node.table.failed(peer_node.id, at)
        if started_driving:
            wake.set()
        else:  # in the first round: the next candidate goes at once, before the driver starts
            refused_first.append(peer_node)

    def in_receive_loop(flight: _Flight) -> tuple[Callable[[krpc.Response, float], None],
                                                  Callable[[krpc.Error, float], None]]:
        """The reply and error callbacks of a query without a waiting task: they run in the node's receive
        loop. With room in the channel the reply is applied and its events queued right there (the consumer
        wakes with no task in between); otherwise the driver takes it and waits for room (back-pressure)."""
        def taken(at: float) -> bool:
            if flying.get(flight.node.addr) is not flight:
                return False  # abandoned at the end, or a query a task finishes (its datagram was not sent)
            del flying[flight.node.addr]
            assert starter is not None
            starter.release_query(flight.pending)
            return not ended

        def on_reply(reply: krpc.Response, at: float) -> None:
            if not taken(at):
                return
            if held or outbox.room() < 2:
                deferred.append((flight.node, flight.use, reply, at, False))
                held.append(True)
            elif reply.values:  # the peers go to the consumer now; the driver routes once the consumer ran
                outbox.put_nowait(peers_found(flight.node, reply, at))
                deferred.append((flight.node, flight.use, reply, at, True))
            else:
                for event in process(flight.node, flight.use, reply, at):
                    outbox.put_nowait(event)
            wake.set()

        def on_error(error: krpc.Error, at: float) -> None:
            if taken(at):
                failed(flight.node)
        return on_reply, on_error

    flying: dict[Addr, _Flight] = {}  # queries sent without a task: their replies come by callback
    # replies the driver applies: those that found the channel full (all their events to come, and each one
    # in ``held``, so later replies queue behind them), and those whose peers went ahead (``peers_out``)
    deferred: collections.deque[tuple[NodeInfo, Callable[[bytes], krpc.Query], krpc.Response, float, bool]] = \
        collections.deque()
    held: list[bool] = []
    waits: set[trio.CancelScope] = set()  # tasks still waiting for their reply (cancelled at the end)
    ended: list[bool] = []

    async def wait_reply(peer_node: NodeInfo, get: Callable[[], Awaitable[krpc.Response]]) -> krpc.Response | None:
        """The reply, or None after a failure (recorded) or when the lookup ended first. Only waiting is cut
        short at the end: a task that has its reply delivers its events, so none is lost to a slow consumer."""
        if ended:
            return None
        with trio.CancelScope() as scope:
            waits.add(scope)
            try:
                return await get()
            except (QueryTimeout, KRPCError, netguard.NetworkRefused, OSError):
                failed(peer_node)
            finally:
                waits.discard(scope)
        return None

    async def deliver(peer_node: NodeInfo, use: Callable[[bytes], krpc.Query], reply: krpc.Response,
                      at: float | None = None, peers_out: bool = False) -> None:
        if not peers_out and held:
            held.pop()
        for event in process(peer_node, use, reply, trio.current_time() if at is None else at, peers_out):
            await outbox.put(event)
        wake.set()  # after the events, so the last reply's are queued before the end

    async def ask(peer_node: NodeInfo, use: Callable[[bytes], krpc.Query], started: Any = None) -> None:
        """Send (when not yet sent) and wait in a task: a rate-limited IP, a full socket buffer, or a driver
        without ``start_query``."""
        if started is not None:
            assert starter is not None
            reply = await wait_reply(peer_node, lambda: starter.finish_query(started, timeout=config.query_timeout))
        else:
            reply = await wait_reply(peer_node, lambda: node.query(peer_node.addr, use, timeout=config.query_timeout))
        if reply is not None and not ended:
            await deliver(peer_node, use, reply)

    def launch(peer_node: NodeInfo, refused: Callable[[NodeInfo], None] | None = None
               ) -> Callable[[], Awaitable[None]] | None:
        """Send the query to ``peer_node`` now if the driver can (without yielding; its reply then comes by
        callback, no task waits for it); else the task that sends it and waits. None when netguard refused
        (given to ``refused``, by default a failure of the traversal's query)."""
        use = build if sample_allowed is None or sample_allowed(peer_node.addr) else route_only
        if starter is not None:
            flight = _Flight(peer_node, use)
            on_reply, on_error = in_receive_loop(flight)
            try:
                started = starter.start_query(peer_node.addr, use, on_reply=on_reply, on_error=on_error)
            except netguard.NetworkRefused:
                (refused or failed)(peer_node)
                return None
            if started is not None:
                if started.unsent is not None:  # the socket buffer was full: a task sends it and waits
                    return functools.partial(ask, peer_node, use, started)
                flight.pending = started
                flying[peer_node.addr] = flight
                return None
        return functools.partial(ask, peer_node, use)

    def expire(timed_out: list[NodeInfo], at: float) -> None:
        """Queries without a task that the traversal failed at the full timeout: their slots freed."""
        assert starter is not None
        for peer_node in timed_out:
            flight = flying.pop(peer_node.addr, None)
            if flight is not None:
                starter.release_query(flight.pending, timed_out=True)
                node.table.failed(peer_node.id, at)

    async def drive(first_round: list[Callable[[], Awaitable[None]] | None]) -> None:
        try:
            if not any(first_round):
                # every first query is out without a task: nothing to do before a reply or a timeout, and this
                # task's first step often runs just before the receive loop's, so it stays short (issue 12)
                with trio.move_on_at(traversal.next_deadline() or now + config.query_timeout):
                    await wake.wait()
                    await trio.lowlevel.checkpoint()
            seed_later()  # after the first reply reached the consumer: the rest of the seeds can wait till now
            async with trio.open_nursery() as queries:
                for waiter in first_round:
                    if waiter is not None:
                        queries.start_soon(waiter)
                while True:
                    at = trio.current_time()
                    timed_out = traversal.on_tick(at)
                    if timed_out and starter is not None:
                        expire(timed_out, at)
                    while deferred:
                        await deliver(*deferred.popleft())
                    if traversal.done:
                        break
                    for peer_node in traversal.next_queries(at):
                        waiter = launch(peer_node)
                        if waiter is not None:
                            queries.start_soon(waiter)
                    deadline = traversal.next_deadline()
                    with trio.move_on_at(deadline if deadline is not None else at + config.query_timeout):
                        await wake.wait()
                        # the consumer, woken by the same reply, runs first: it acts on the peers, we route
                        await trio.lowlevel.checkpoint()
                ended.append(True)
                for scope in list(waits):
                    scope.cancel()
        finally:  # none of it is a checkpoint, so a Cancelled never replaces a failure of the nursery
            ended.append(True)
            abandon()
            outbox.close()

    def abandon() -> None:
        """Free the slots of the queries still without a reply (the lookup ended, or was cancelled)."""
        if starter is not None:
            for flight in flying.values():
                starter.release_query(flight.pending)
        flying.clear()

    # the first round leaves before the caller gets the stream (a task would send a scheduler pass later), and
    # before the channels are made: after an idle spell every first-run line costs (issue 12, ~40 us here).
    # Their waits start with the driver, which always runs (a trio task runs to its first checkpoint). The
    # other seeds join at the driver's first step (``seed_later``), after the first reply's peers went out
    started_driving = False
    refused_first: list[NodeInfo] = []
    # the closest seed is asked before the traversal is even built: it is the likeliest to hold the peers, and
    # its reply takes longer than the rest of this set-up (issue 12, ~70 us of a cold start here)
    early: list[NodeInfo] = []  # that seed, once asked
    refused_early: list[NodeInfo] = []
    first_round: list[Callable[[], Awaitable[None]] | None] = []
    if closest_first and seeds and starter is not None and max_queries != 0 and seeds[0].id != node.own_id \
            and acceptable_address(seeds[0].ip, seeds[0].port, config.allow_local):  # as Traversal._add judges
        early.append(seeds[0])
        first_round.append(launch(seeds[0], refused=refused_early.append))
    traversal = Traversal(target, seeds[:split], alpha=config.alpha, k=config.k, short_timeout=config.short_timeout,
                          full_timeout=config.query_timeout, now=now, allow_local=config.allow_local,
                          max_queries=max_queries, own_id=node.own_id, width=config.width, widen=config.widen,
                          slow_grace=config.slow_grace, eager=config.eager)
    result = LookupResult(target, [], {}, {})
    for peer_node in early:
        queried = traversal.sent_before(peer_node, now)
        assert queried, "the first seed is the traversal's first candidate"
    for peer_node in refused_early:
        failed(peer_node)  # like any refusal in the first round: the next seed goes at once
    first = traversal.next_queries(now)
    first_round += [launch(peer_node) for peer_node in first]
    # some of the first seeds were unusable or refused: the next ones' turn is now, not at the first reply
    again = bool(refused_first) or (bool(later or more) and len(first) + bool(early) < config.alpha)
    while again:
        seed_later()
        refused_first.clear()
        first_round += [launch(peer_node) for peer_node in traversal.next_queries(now)]
        again = bool(refused_first)
    started_driving = True
    outbox = EventQueue[LookupEvent](buffer)
    wake = Wakeup()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive, first_round)
        try:
            yield LookupStream(outbox, traversal, result)
        finally:
            nursery.cancel_scope.cancel()
