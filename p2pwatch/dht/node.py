"""The trio driver of a mainline DHT node (BEP 5, with BEP 32/33/42/43/51).

One UDP socket; it answers every query (so p2pwatch is a good DHT citizen and sees passive traffic),
sends our own queries with transaction ids and timeouts, drives :mod:`~p2pwatch.dht.traversal` lookups,
keeps the routing table fresh, and persists the node id and routing table across restarts.

Structured concurrency: ``async with open_dht_node(config) as node`` runs the node in the caller's
nursery and stops it (saving state) on exit. Passive traffic (incoming ``get_peers``/``announce_peer``/
``sample_infohashes``) is delivered synchronously to subscribers registered with :meth:`DHTNode.subscribe`;
subscribers must not block (the crawler queues into a bounded channel and counts what it drops).

Politeness: incoming queries above ``inbound_rate`` per IP are dropped unanswered, our queries to one IP
wait for ``outbound_rate``; BEP 51 ``interval`` is honoured by the crawler.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from p2pwatch import limits, netguard
from p2pwatch.aio import unwrap_single
from p2pwatch.dht import announce, bep42, join, krpc
from p2pwatch.dht.lookup_stream import LookupStream, NodeAnswered, PeersFound, open_lookup
from p2pwatch.dht.node_types import (
    DatagramSocket,
    DHTConfig,
    ErrorCallback,
    IncomingQuery,
    LookupResult,
    NodeStats,
    ReplyCallback,
    atomic_write,
    load_state,
)
from p2pwatch.dht.nodeinfo import NodeInfo, random_id
from p2pwatch.dht.ratelimit import PerIPRateLimiter
from p2pwatch.dht.responder_cache import ResponderCache
from p2pwatch.dht.routing import RoutingTable
from p2pwatch.dht.server import QueryHandler
from p2pwatch.errors import KRPCError, LocalProtocolError, QueryTimeout

log = logging.getLogger(__name__)

__all__ = [
    "BATCH", "CLIENT_VERSION", "DHTConfig", "DHTNode", "IncomingQuery", "LookupResult", "LookupStream", "NodeAnswered",
    "NodeStats", "PeersFound", "open_dht_node",
]

CLIENT_VERSION = b"PW\x00\x01"
BATCH = 64  # datagrams handled per trio checkpoint in the receive loop
#: What the node's UDP socket is for, in a BindError (the CLI keys its advice on it).
SOCKET_PURPOSE = "the DHT node"
SOCKET_PURPOSE6 = "the IPv6 DHT node"  # BEP 32: its own socket (dht peers/sample --bind6)


class _Pending:
    """One query in flight: its address, the wake-up of the asking task, the reply and an optional callback."""

    __slots__ = ("addr", "event", "on_error", "on_reply", "result", "tid", "unsent")

    def __init__(self, tid: bytes, addr: tuple[str, int], on_reply: ReplyCallback | None,
                 on_error: ErrorCallback | None = None) -> None:
        self.tid = tid
        self.addr = addr
        self.event: trio.Event | None = None  # made by finish_query, if a task waits for the reply
        self.result: krpc.Response | krpc.Error | None = None
        self.on_reply = on_reply
        self.on_error = on_error
        self.unsent: bytes | None = None  # the datagram, while the socket buffer was full


class DHTNode:
    """A running node. Create it with :func:`open_dht_node`."""

    def __init__(self, config: DHTConfig, sock: DatagramSocket) -> None:
        self.config = config
        self.sock = sock
        self.address = sock.getsockname()
        now = trio.current_time()
        state = load_state(config.state_file)
        saved_id = state.get("node_id")
        own_id = config.node_id or (bytes.fromhex(saved_id) if isinstance(saved_id, str) else None)
        self.own_id = own_id or random_id(config.rng)
        saved_table = state.get("routing_table")
        saved = saved_table if isinstance(saved_table, dict) and saved_id == self.own_id.hex() else None
        self.table = self._new_table(ResponderCache(config.responder_cache), saved)
        self.handler = QueryHandler(self.own_id, self.table, now, k=config.k)
        self.stats = NodeStats()
        self._pending: dict[bytes, _Pending] = {}
        self._next_tid = (config.rng or random).getrandbits(16)  # the module: the process-wide generator
        self._inbound = PerIPRateLimiter(config.inbound_rate, burst=config.inbound_rate * 2)
        self._outbound = PerIPRateLimiter(config.outbound_rate, burst=config.outbound_rate)
        self._subscribers: list[Callable[[IncomingQuery], None]] = []
        self._outstanding = trio.Semaphore(config.max_outstanding)
        self._ip_votes: dict[str, set[str]] = {}
        self._callback_ran = False  # set by a reply callback; the receive loop then yields
        saved_ip = state.get("external_ip")
        self.external_ip: str | None = saved_ip if isinstance(saved_ip, str) else None

    # ----------------------------------------------------------------------------------------- receiving

    def subscribe(self, callback: Callable[[IncomingQuery], None]) -> Callable[[], None]:
        """Call ``callback`` for every valid incoming query; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    async def _receive_loop(self) -> None:
        sock = self.sock
        while True:
            handled = 0
            drained = False
            while handled < BATCH:
                item = sock.try_recvfrom(limits.MAX_DATAGRAM)
                if item is None:
                    drained = True
                    break
                handled += 1
                reply = self.datagram_received(item[0], item[1], trio.current_time())
                if reply is not None and not self._send_now(reply, item[1]):
                    await self._send(reply, item[1])
                if self._callback_ran:  # a lookup's consumer was just woken: it runs before the rest is read
                    self._callback_ran = False
                    break
            if drained:
                await sock.wait_readable()
            else:  # twice: trio runs a batch in either order, and a woken consumer must run before we read on
                await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()

    def datagram_received(self, data: bytes, addr: tuple[str, int], now: float) -> bytes | None:
        """Handle one datagram; returns the reply to send, if any. Never raises for remote input."""
        self.stats.received += 1
        try:
            message = krpc.decode(data)
        except KRPCError as exc:
            self.stats.malformed += 1
            return krpc.error_reply(exc)
        if isinstance(message, krpc.Response | krpc.Error):
            self._reply_received(message, addr, now)
            return None
        return self._query_received(message, addr, now)

    def _query_received(self, query: krpc.Query, addr: tuple[str, int], now: float) -> bytes | None:
        self.stats.queries_in += 1
        ip = addr[0]
        if not self._inbound.allow(ip, now):
            self.stats.rate_limited += 1
            return None
        if (not query.read_only and query.sender != self.own_id
                and (not self.config.enforce_node_id or bep42.is_valid_node_id(query.sender, ip))):
            self.table.heard_from(NodeInfo(query.sender, ip, addr[1]), now, responded=False)
        if self._subscribers:
            event = IncomingQuery(query, addr, now)
            for callback in self._subscribers:
                callback(event)
        answer = self.handler.handle(query, addr, now)
        return krpc.encode(answer, client_version=CLIENT_VERSION, external_ip=addr)

    def _reply_received(self, message: krpc.Response | krpc.Error, addr: tuple[str, int], now: float) -> None:
        pending = self._pending.get(message.tid)
        if pending is None or pending.addr != addr:
            self.stats.unexpected += 1
            return
        del self._pending[message.tid]
        pending.result = message
        if isinstance(message, krpc.Response):
            self.stats.responses += 1
            if message.external_ip is not None:
                self._vote_external_ip(message.external_ip[0], addr[0])
            callback: ReplyCallback | ErrorCallback | None = pending.on_reply
        else:
            self.stats.errors_in += 1
            callback = pending.on_error
        if callback is not None:
            self._callback_ran = True
            try:
                callback(message, now)  # type: ignore[arg-type]
            except Exception:  # a bug of the caller's must not stop the receive loop; the asker sees the reply
                log.exception("reply callback for %s failed", addr)
        if pending.event is not None:
            pending.event.set()

    def _vote_external_ip(self, ip: str, voter: str) -> None:
        voters = self._ip_votes.setdefault(ip, set())
        if len(self._ip_votes) > 64:
            self._ip_votes = {ip: voters}
        voters.add(voter)
        if len(voters) >= 3 and self.external_ip != ip:
            self.external_ip = ip
            log.info("external address %s (confirmed by %d nodes)", ip, len(voters))
            if self.config.node_id is None and not bep42.is_valid_node_id(self.own_id, ip):
                self._adopt_node_id(bep42.node_id_for_ip(ip))

    def _new_table(self, responders: ResponderCache, saved: dict[str, object] | None = None) -> RoutingTable:
        """A routing table for our id (restored from ``saved``) that feeds ``responders``."""
        c = self.config
        options = dict(k=c.k, allow_local=c.allow_local, extended=c.extended_table, responders=responders, rng=c.rng)
        if saved is not None:
            return RoutingTable.from_state(saved, own_id=self.own_id, **options)  # type: ignore[arg-type]
        return RoutingTable(self.own_id, **options)  # type: ignore[arg-type]

    def _adopt_node_id(self, new_id: bytes) -> None:
        """Switch to a BEP 42 id for our external address, keeping the nodes we know."""
        log.info("adopting BEP 42 node id %s", new_id.hex())
        now = trio.current_time()
        old_nodes = list(self.table.nodes())
        self.own_id = new_id
        self.table = self._new_table(self.table.responders)  # the cache outlives the id change
        for node in old_nodes:
            self.table.heard_from(node, now, responded=True)
        self.handler.own_id = new_id
        self.handler.table = self.table

    # ------------------------------------------------------------------------------------------- sending

    def _send_now(self, data: bytes, addr: tuple[str, int]) -> bool:
        if self.sock.try_sendto(data, addr):
            self.stats.sent += 1
            return True
        return False

    async def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            await self.sock.sendto(data, addr)
            self.stats.sent += 1
        except OSError as exc:  # unreachable host, ICMP errors: a query to it simply times out
            log.debug("send to %s failed: %s", addr, exc)

    def _new_tid(self) -> bytes:
        while True:
            self._next_tid = (self._next_tid + 1) & 0xFFFF
            tid = self._next_tid.to_bytes(2, "big")
            if tid not in self._pending:
                return tid

    async def query(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query],
                    timeout: float | None = None, *, on_reply: ReplyCallback | None = None) -> krpc.Response:
        """Send the query ``build(tid)`` to ``addr`` and wait for its response.

        Raises :class:`QueryTimeout` when none arrives in time, :class:`KRPCError` (with the node's
        code) for an error reply, and :class:`~p2pwatch.errors.NetworkRefused` when netguard refuses.
        ``on_reply(response, now)``, if given, runs in the receive loop as soon as the response is decoded
        (one task switch earlier than the asker); the callback records for its caller what it handled.
        """
        pending = self.start_query(addr, build, on_reply=on_reply)
        while pending is None:
            # politeness: at most outbound_rate queries/s to one IP, however many tasks ask. Wait for the IP's
            # token without holding an outstanding-query slot (others may need it), then take a slot, and
            # send only if the token is still there (another task may have taken it meanwhile): no await
            # between that check and the datagram leaving (found by the simulation, issue 12)
            delay = self._outbound.delay(addr[0], trio.current_time())
            if delay > 0:
                await trio.sleep(max(delay, 1e-3))
            await self._outstanding.acquire()
            pending = self._send_if_allowed(addr, build, on_reply)
        return await self.finish_query(pending, timeout)

    def start_query(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query], *,
                    on_reply: ReplyCallback | None = None, on_error: ErrorCallback | None = None
                    ) -> _Pending | None:
        """Send ``build(tid)`` now, without yielding, when an outstanding slot is free and the per-IP rate
        allows (issue 12: a lookup's first queries leave at once); None otherwise (use :meth:`query`).

        Every query started here must be passed exactly once to :meth:`finish_query` (which waits for the
        reply) or to :meth:`release_query` (for a caller that takes the reply or error from ``on_reply`` /
        ``on_error`` in the receive loop, and judges the timeout itself); either frees the slot. One whose
        ``unsent`` is not None (the socket buffer was full) must go to :meth:`finish_query`, which sends it.
        """
        netguard.current_policy().check(addr[0], addr[1])
        if self._outbound.delay(addr[0], trio.current_time()) > 0:
            return None  # checked before taking a slot too: a rate-limited IP must not take and give back slots
        try:
            self._outstanding.acquire_nowait()
        except trio.WouldBlock:
            return None
        return self._send_query(addr, build, on_reply, on_error)  # no await since the rate was checked

    def release_query(self, pending: _Pending, *, timed_out: bool = False) -> None:
        """Free a started query's slot without waiting for it (see :meth:`start_query`); a reply that comes
        later is counted as unexpected. ``timed_out``: the caller gave up on it (counted as a timeout)."""
        if self._pending.get(pending.tid) is pending:
            del self._pending[pending.tid]
        if timed_out:
            self.stats.timeouts += 1
        self._outstanding.release()

    def _send_if_allowed(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query],
                         on_reply: ReplyCallback | None, on_error: ErrorCallback | None = None
                         ) -> _Pending | None:
        """With an outstanding slot held: send if the IP's token is there (no await between this check and
        the datagram), else give the slot back and return None."""
        if self._outbound.delay(addr[0], trio.current_time()) > 0:
            self._outstanding.release()
            return None
        return self._send_query(addr, build, on_reply, on_error)

    def _send_query(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query],
                    on_reply: ReplyCallback | None, on_error: ErrorCallback | None) -> _Pending:
        """Register and send one query; its outstanding slot is already held."""
        self._outbound.allow(addr[0], trio.current_time())
        tid = self._new_tid()
        pending = self._pending[tid] = _Pending(tid, addr, on_reply, on_error)
        self.stats.queries_out += 1
        if type(build) is krpc.QueryTemplate:
            data = build.datagram(tid, CLIENT_VERSION)
        else:
            data = krpc.encode(build(tid), client_version=CLIENT_VERSION)
        if not self._send_now(data, addr):
            pending.unsent = data
        return pending

    async def finish_query(self, pending: _Pending, timeout: float | None = None) -> krpc.Response:
        """Wait for the reply of a started query (see :meth:`query` for what it raises); frees its slot."""
        try:
            if pending.unsent is not None:
                await self._send(pending.unsent, pending.addr)
            if pending.result is None:
                pending.event = trio.Event()
                with trio.move_on_after(timeout if timeout is not None else self.config.query_timeout):
                    await pending.event.wait()
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self.release_query(pending)  # cancelled too: the slot is free again
        addr, result = pending.addr, pending.result
        if result is None:
            self.stats.timeouts += 1
            raise QueryTimeout(f"no reply from {addr[0]}:{addr[1]}")
        if isinstance(result, krpc.Error):
            raise KRPCError(f"{addr[0]}:{addr[1]} replied error {result.code}: {result.message}",
                            code=result.code, transaction_id=result.tid)
        return result

    async def ping(self, addr: tuple[str, int]) -> NodeInfo:
        reply = await self.query(addr, lambda t: krpc.Ping(t, self.own_id, read_only=self.config.read_only))
        node = NodeInfo(reply.sender, addr[0], addr[1])
        self.table.heard_from(node, trio.current_time(), responded=True)
        return node

    # ------------------------------------------------------------------------------------------- lookups

    def open_lookup(self, target: bytes, kind: str = "find_node", *, scrape: bool = False,
                    seeds: Iterable[NodeInfo] = (), max_queries: int | None = None,
                    sample_allowed: Callable[[tuple[str, int]], bool] | None = None
                    ) -> AbstractAsyncContextManager[LookupStream]:
        """A streaming lookup (``async with node.open_lookup(...) as stream: async for event in stream``). Seeds
        default to the table's and the responder cache's closest nodes, else the bootstrap nodes (as routers
        of unknown id, queried at once: no separate ping round first)."""
        if len(target) != 20:
            raise LocalProtocolError("a DHT target is 20 bytes")
        seed_list = list(seeds)
        more: Callable[[], list[NodeInfo]] | None = None
        if not seed_list:
            count, first = self.config.k * 2, self.config.alpha + self.config.eager
            seed_list = self._table_seeds(target, min(first, count))
            if first < count and seed_list:  # the first round's seeds now, the rest when its task starts
                more = functools.partial(self._table_seeds, target, count)
        if not seed_list:
            seed_list = [NodeInfo(b"", ip, port) for ip, port in self.config.bootstrap]
        return open_lookup(self, target, kind, seed_list, scrape=scrape, max_queries=max_queries,
                           sample_allowed=sample_allowed, closest_first=not seeds, more_seeds=more)

    def _table_seeds(self, target: bytes, count: int) -> list[NodeInfo]:
        """The table's ``count`` closest to ``target`` and as many from the responder cache, closest first."""
        return self.table.responders.add_to(self.table.closest(target, count), target, count)

    def open_get_peers(self, info_hash: bytes, *, scrape: bool = False, seeds: Iterable[NodeInfo] = ()
                       ) -> AbstractAsyncContextManager[LookupStream]:
        """get_peers (BEP 5) as a stream: a :class:`PeersFound` for every reply listing peers."""
        return self.open_lookup(info_hash, "get_peers", scrape=scrape, seeds=seeds)

    async def lookup(self, target: bytes, kind: str = "find_node", *, scrape: bool = False,
                     seeds: Iterable[NodeInfo] = (), max_queries: int | None = None,
                     sample_allowed: Callable[[tuple[str, int]], bool] | None = None) -> LookupResult:
        """Iterative lookup (BEP 5) towards ``target``: ``find_node``, ``get_peers`` or ``sample_infohashes``.

        For ``sample_infohashes``, nodes for which ``sample_allowed(addr)`` is False (their BEP 51 interval
        has not elapsed) are sent ``find_node`` instead, so the lookup still routes through them.
        """
        async with self.open_lookup(target, kind, scrape=scrape, seeds=seeds, max_queries=max_queries,
                                    sample_allowed=sample_allowed) as stream:
            return await stream.drain()

    async def get_peers(self, info_hash: bytes, *, scrape: bool = False, seeds: Iterable[NodeInfo] = ()
                        ) -> LookupResult:
        """All peers the DHT lists for ``info_hash``, each with the nodes that reported it (level 0)."""
        return await self.lookup(info_hash, "get_peers", scrape=scrape, seeds=seeds)

    async def announce_peer(self, info_hash: bytes, port: int = 0, *, implied_port: bool = True,
                            seed: bool = False) -> int:
        """get_peers, then announce to the k closest nodes that gave a token; returns how many accepted."""
        return await announce.announce_peer(self, info_hash, port, implied_port=implied_port, seed=seed)

    async def sample_infohashes(self, target: bytes | None = None) -> LookupResult:
        """A BEP 51 lookup towards ``target`` (random if None), collecting samples from every responder."""
        return await self.lookup(target or random_id(self.config.rng), "sample_infohashes")

    async def bootstrap(self) -> int:
        """Look up our own id from the bootstrap nodes and the table; returns the routing table size.

        The routers are seeds of unknown id in the same traversal (no ping round first), so a dead router
        or a dead contact costs at most the short timeout, like any slow node of a lookup.
        """
        seeds = [NodeInfo(b"", ip, port) for ip, port in self.config.bootstrap]
        seeds += self.table.closest(self.own_id, self.config.k)
        if seeds:
            await self.lookup(self.own_id, "find_node", seeds=seeds)
        return len(self.table)

    # --------------------------------------------------------------------------------------- maintenance

    async def _maintenance_loop(self) -> None:
        last_save = trio.current_time()
        while True:
            await trio.sleep(self.config.maintenance_interval)
            now = trio.current_time()
            self.handler.store.expire(now)
            async with trio.open_nursery() as nursery:
                for node in self.table.nodes_to_ping(now)[:16]:
                    nursery.start_soon(self._ping_quietly, node)
                for target in self.table.refresh_targets(now)[:2]:
                    nursery.start_soon(self._refresh_quietly, target)
            if now - last_save >= self.config.save_interval:
                await self.save_state()
                last_save = now

    async def _ping_quietly(self, node: NodeInfo) -> None:
        try:
            await self.ping(node.addr)
        except (QueryTimeout, KRPCError, netguard.NetworkRefused, OSError):
            self.table.failed(node.id, trio.current_time())

    async def refresh_far_buckets(self) -> int:
        """Kademlia's join after the own-id lookup (:mod:`~p2pwatch.dht.join`): one lookup towards each range
        farther than our nearest neighbour, at most ``join_refresh`` of them, concurrently. Returns how many."""
        nearest = next((n.id for n in self.table.closest(self.own_id, 1)), None)  # the table never holds us
        targets = join.far_targets(self.own_id, nearest, self.config.join_refresh, self.config.rng)
        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(self._refresh_quietly, target)
        return len(targets)

    async def _refresh_quietly(self, target: bytes) -> None:
        try:
            await self.lookup(target, "find_node", max_queries=32)
        except (netguard.NetworkRefused, OSError) as exc:
            log.debug("bucket refresh failed: %s", exc)

    def state(self) -> dict[str, object]:
        return {"node_id": self.own_id.hex(), "routing_table": self.table.to_state(),
                "external_ip": self.external_ip, "version": 1}

    async def save_state(self) -> None:
        """Persist node id and routing table atomically (write a temporary file, then rename)."""
        path = self.config.state_file
        if path is None:
            return
        data = json.dumps(self.state())
        await trio.to_thread.run_sync(atomic_write, path, data)


@asynccontextmanager
async def open_dht_node(config: DHTConfig, *, bootstrap: bool = True, wait_bootstrap: bool = True,
                        sock: DatagramSocket | None = None) -> AsyncIterator[DHTNode]:
    """Run a DHT node for the duration of the block; its state is saved on the way out.

    With ``wait_bootstrap=False`` the bootstrap lookup runs in the background: the block starts at once and
    its own lookups start from the bootstrap nodes (``dht peers`` does this: both walks overlap).
    ``sock`` replaces the UDP socket (the simulation, :mod:`p2pwatch.sim`, passes its own).
    """
    if sock is None:
        purpose = SOCKET_PURPOSE6 if ":" in config.bind_host else SOCKET_PURPOSE
        sock = await netguard.open_udp_socket(config.bind_host, config.bind_port, purpose=purpose)
    node = DHTNode(config, sock)
    try:
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node._receive_loop)
                nursery.start_soon(node._maintenance_loop)
                try:
                    if bootstrap and (config.bootstrap or len(node.table)):
                        if wait_bootstrap:
                            await node.bootstrap()
                            nursery.start_soon(node.refresh_far_buckets)  # the join goes on meanwhile
                        else:
                            nursery.start_soon(node.bootstrap)
                    yield node
                finally:
                    nursery.cancel_scope.cancel()
                    with trio.CancelScope(shield=True):
                        await node.save_state()
    finally:
        sock.close()
