"""The simulated network: the datagram socket our real :class:`~p2pwatch.dht.node.DHTNode` uses, and the
remote nodes' KRPC answers (BEP 5 ping/find_node/get_peers/announce_peer, BEP 51 sample_infohashes).

Our node's datagrams are real KRPC bytes; a remote node decodes them, answers from its lazily built table
(:mod:`.tables`) and the peers it stores (:mod:`.population`), and the answer, encoded, arrives on our socket
after the link's round trip time (base RTT of the link times a log-normal jitter). A dead node, or a lost
datagram, produces nothing: only our node's own timeouts end such a query.

Everything a remote node receives from us is counted; ``max_per_second`` is the most queries any single
node (IP) received within one second (a sliding window: ``t - t_prev < 1`` for the last two arrivals).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
import trio

from p2pwatch import netguard
from p2pwatch.dht import krpc
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.errors import KRPCError
from p2pwatch.sim.population import DHT_PORT, Population
from p2pwatch.sim.tables import RemoteTables

Addr = tuple[str, int]
SAMPLES_PER_REPLY = 20  # BEP 51: as many as fit; libtorrent sends up to 20
MAX_VALUES = 50


@dataclass
class NetworkStats:
    queries: Counter[str] = field(default_factory=Counter)
    replies: int = 0
    unanswered_dead: int = 0
    lost: int = 0
    not_a_node: int = 0
    max_per_second: int = 0
    samples_sent: int = 0


class SimSocket:
    """The :class:`~p2pwatch.netguard.GuardedUDPSocket` interface, over :class:`SimNetwork` (no OS socket)."""

    def __init__(self, network: SimNetwork, address: Addr) -> None:
        self.network = network
        self.address = address
        self.inbox: deque[tuple[bytes, Addr]] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self.closed = False

    def getsockname(self) -> Addr:
        return self.address

    def try_sendto(self, data: bytes, addr: Addr) -> bool:
        netguard.current_policy().check(addr[0], addr[1])
        self.network.from_us(data, addr)
        return True

    async def sendto(self, data: bytes, addr: Addr) -> None:
        self.try_sendto(data, addr)
        await trio.lowlevel.checkpoint()

    def try_recvfrom(self, size: int) -> tuple[bytes, Addr] | None:
        if not self.inbox:
            return None
        data, addr = self.inbox.popleft()
        return data[:size], addr

    async def wait_readable(self) -> None:
        if self.inbox:
            await trio.lowlevel.checkpoint()
            return
        await self._lot.park()

    def deliver(self, data: bytes, addr: Addr) -> None:
        if not self.closed:
            self.inbox.append((data, addr))
            self._lot.unpark_all()

    def close(self) -> None:
        self.closed = True


class SimNetwork:
    """Remote nodes answering our node, with latency, loss and churn (:meth:`run` delivers the answers)."""

    def __init__(self, pop: Population, *, our_address: Addr = ("127.0.0.1", DHT_PORT), table_cache: int = 20_000,
                 sample_interval: int = 21600, seed: int = 0) -> None:
        self.pop = pop
        self.tables = RemoteTables(pop, cache=table_cache)
        self.sample_interval = sample_interval
        self.socket = SimSocket(self, our_address)
        self.stats = NetworkStats()
        self.rng = np.random.default_rng((pop.settings.seed, 11, seed))
        self._heap: list[tuple[float, int, bytes, Addr]] = []
        self._seq = 0
        self._scope: trio.CancelScope | None = None
        self._last1 = np.full(pop.n, -math.inf)
        self._last2 = np.full(pop.n, -math.inf)
        self.received = np.zeros(pop.n, dtype=np.int32)
        self._stored: OrderedDict[int, np.ndarray] = OrderedDict()
        self._store_cache = table_cache
        self._our_ip = our_address

    # ----------------------------------------------------------------- delivery

    def _schedule(self, at: float, data: bytes, addr: Addr) -> None:
        heapq.heappush(self._heap, (at, self._seq, data, addr))
        self._seq += 1
        if self._scope is not None and at < self._scope.deadline:
            self._scope.deadline = at

    async def run(self) -> None:
        """Deliver answers to our socket at their arrival times (run this in the simulation's nursery)."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, data, addr = heapq.heappop(heap)
                self.socket.deliver(data, addr)
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None

    # ----------------------------------------------------------------- remote nodes

    def _count(self, i: int, now: float) -> None:
        inside = 1 + (now - self._last1[i] < 1.0) + (now - self._last2[i] < 1.0)
        if inside > self.stats.max_per_second:
            self.stats.max_per_second = int(inside)
        self._last2[i] = self._last1[i]
        self._last1[i] = now
        self.received[i] += 1

    def from_us(self, data: bytes, addr: Addr) -> None:
        """A datagram our node sent to ``addr``."""
        pop = self.pop
        i = pop.index_of(addr[0], addr[1])
        if i is None:
            self.stats.not_a_node += 1
            return
        now = trio.current_time()
        self._count(i, now)
        try:
            message = krpc.decode(data)
        except KRPCError:
            return
        if not isinstance(message, krpc.Ping | krpc.FindNode | krpc.GetPeers | krpc.AnnouncePeer
                          | krpc.SampleInfohashes):
            return  # our node's replies to nobody, or a query kind nobody sends
        self.stats.queries[type(message).__name__] += 1
        if not pop.alive[i]:
            self.stats.unanswered_dead += 1
            return
        if self.rng.random() < pop.settings.loss:
            self.stats.lost += 1
            return
        reply = self.answer(i, message)
        delay = float(pop.rtt[i]) * math.exp(self.rng.normal(0.0, pop.settings.jitter_sigma))
        self.stats.replies += 1
        self._schedule(now + delay, krpc.encode(reply, client_version=b"SM\x00\x01", external_ip=self._our_ip),
                       (addr[0], addr[1]))

    def _nodes(self, i: int, target: bytes) -> tuple[NodeInfo, ...]:
        pop = self.pop
        got = self.tables.closest(i, int.from_bytes(target[:8], "big"))
        return tuple(NodeInfo(pop.node_id(int(j)), pop.node_ip(int(j)), DHT_PORT) for j in got)

    def stored(self, i: int) -> np.ndarray:
        got = self._stored.get(i)
        if got is None:
            got = self._stored[i] = self.pop.stored_at(i)
            if len(self._stored) > self._store_cache:
                self._stored.popitem(last=False)
        else:
            self._stored.move_to_end(i)
        return got

    @staticmethod
    def token(i: int) -> bytes:
        return b"tk" + i.to_bytes(4, "big")

    def answer(self, i: int, q: krpc.Query) -> krpc.Response:
        pop = self.pop
        own = pop.node_id(i)
        if isinstance(q, krpc.Ping | krpc.AnnouncePeer):
            return krpc.Response(q.tid, own)
        if isinstance(q, krpc.FindNode):
            return krpc.Response(q.tid, own, nodes=self._nodes(i, q.target))
        if isinstance(q, krpc.GetPeers):
            values: tuple[Addr, ...] = ()
            t = pop.torrent_index(q.info_hash)
            if t is not None and pop.holds(i, t):
                peers = pop.peers_of(t)[:MAX_VALUES]
                values = tuple((pop.peer_addr_ip(int(p)), int(pop.peer_port[p])) for p in peers)
            return krpc.Response(q.tid, own, nodes=self._nodes(i, q.info_hash), values=values, token=self.token(i))
        assert isinstance(q, krpc.SampleInfohashes)
        nodes = self._nodes(i, q.target)
        if not pop.bep51[i]:  # answered as find_node (libtorrent: an unknown query with a target)
            return krpc.Response(q.tid, own, nodes=nodes)
        held = self.stored(i)
        picks = held if len(held) <= SAMPLES_PER_REPLY else self.rng.choice(held, SAMPLES_PER_REPLY, replace=False)
        samples = tuple(pop.infohash(int(t)) for t in picks)
        self.stats.samples_sent += len(samples)
        return krpc.Response(q.tid, own, nodes=nodes, samples=samples, num=len(held), interval=self.sample_interval)
