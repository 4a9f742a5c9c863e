"""Streaming lookups and the slow-contact rule, on trio's MockClock (autojump) over an in-memory network.

The network answers through the same ``query`` interface as :class:`~p2pwatch.dht.node.DHTNode`; replies
take a per-node round-trip time of virtual seconds, silent nodes never answer (the query times out).
The target is id 0, so a node's id is its distance. Every test runs twice: over a driver with ``query`` alone,
and over one with :class:`~p2pwatch.dht.node.DHTNode`'s ``start_query``/``finish_query`` (queries sent without
yielding, replies applied by the callback before the asker resumes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from p2pwatch.dht import krpc, lookup_stream
from p2pwatch.dht.lookup_stream import NodeAnswered, PeersFound, open_lookup
from p2pwatch.dht.node_types import DHTConfig
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.dht.routing import RoutingTable
from p2pwatch.dht.traversal import QueryState, Traversal
from p2pwatch.errors import NetworkRefused, QueryTimeout

TARGET = bytes(20)
OWN = b"\xff" * 20


def N(d: int) -> NodeInfo:
    return NodeInfo(d.to_bytes(20, "big"), f"8.0.{d >> 8}.{d & 255}", 6881)


def ADDR(d: int) -> tuple[str, int]:
    return N(d).addr


@dataclass
class FakeNet:
    """A node driver stand-in: ``query`` answers from tables of who knows whom."""

    knows: dict[int, list[int]] = field(default_factory=dict)
    values: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    rtt: dict[int, float] = field(default_factory=dict)
    silent: set[int] = field(default_factory=set)
    routers: dict[tuple[str, int], int] = field(default_factory=dict)  # address of a seed of unknown id
    config: DHTConfig = field(default_factory=lambda: DHTConfig(short_timeout=0.5, query_timeout=5.0))
    own_id: bytes = OWN
    asked: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.table = RoutingTable(OWN, k=8)
        self.by_addr = {N(d).addr: d for d in range(1, 4096)}

    async def query(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query],
                    timeout: float | None = None) -> krpc.Response:
        d = self.routers.get(addr, self.by_addr.get(addr))
        assert d is not None
        self.asked.append((trio.current_time(), d))
        q = build(b"tt")
        assert isinstance(q, krpc.GetPeers | krpc.FindNode)
        if d in self.silent:
            await trio.sleep(timeout or self.config.query_timeout)
            raise QueryTimeout(f"no reply from {addr}")
        await trio.sleep(self.rtt.get(d, 0.05))
        values = tuple(self.values.get(d, ())) if isinstance(q, krpc.GetPeers) else ()
        return krpc.Response(b"tt", N(d).id, nodes=tuple(N(x) for x in self.knows.get(d, [])), values=values,
                             token=b"tok" if isinstance(q, krpc.GetPeers) else None)


class FakePending:
    """A query a StartingFakeNet started: released once by the lookup."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.unsent: bytes | None = None
        self.released = False


@dataclass
class StartingFakeNet(FakeNet):
    """FakeNet with the driver's fast path: ``start_query`` sends, and the reply comes by callback after the
    node's round-trip time from a task of the fake network (in DHTNode: from the receive loop); the lookup
    frees every started query with ``release_query`` exactly once (checked)."""

    started: int = 0
    released: int = 0
    timed_out: int = 0
    refused: set[int] = field(default_factory=set)  # netguard refuses these

    def start_query(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query], *,
                    on_reply: Callable[[krpc.Response, float], None] | None = None,
                    on_error: Callable[[krpc.Error, float], None] | None = None) -> FakePending:
        if self.by_addr.get(addr) in self.refused:
            raise NetworkRefused(f"network policy refuses {addr[0]}")
        self.started += 1
        pending = FakePending(addr)
        trio.lowlevel.spawn_system_task(self._answer, pending, build, on_reply)
        return pending

    async def _answer(self, pending: FakePending, build: Callable[[bytes], krpc.Query],
                      on_reply: Callable[[krpc.Response, float], None] | None) -> None:
        try:
            reply = await self.query(pending.addr, build)
        except QueryTimeout:
            return
        if not pending.released and on_reply is not None:
            on_reply(reply, trio.current_time())

    def release_query(self, pending: FakePending, *, timed_out: bool = False) -> None:
        assert not pending.released, "a started query released twice"
        pending.released = True
        self.released += 1
        self.timed_out += timed_out

    async def finish_query(self, pending: FakePending, timeout: float | None = None) -> krpc.Response:
        raise AssertionError("no datagram is left unsent here: finish_query is never needed")


@pytest.fixture(params=[FakeNet, StartingFakeNet], ids=["query", "start_query"])
def Net(request: pytest.FixtureRequest) -> type[FakeNet]:
    return request.param  # type: ignore[no-any-return]


def ring(net: FakeNet, ids: list[int]) -> None:
    for d in ids:
        net.knows[d] = ids


async def test_peers_stream_as_each_reply_arrives(
        autojump_clock: trio.testing.MockClock, Net: type[FakeNet]) -> None:
    net = Net()
    ring(net, list(range(1, 13)))
    net.values = {3: [("9.9.9.1", 1), ("9.9.9.2", 2)], 7: [("9.9.9.2", 2), ("9.9.9.3", 3)]}
    net.rtt = {7: 0.4}
    events: list[tuple[float, object]] = []
    start = trio.current_time()
    async with open_lookup(net, TARGET, "get_peers", [N(12), N(11)]) as stream:
        async for event in stream:
            events.append((trio.current_time() - start, event))
        end = trio.current_time() - start
    found = [(t, e) for t, e in events if isinstance(e, PeersFound)]
    assert [e.reporter for _, e in found] == [ADDR(3), ADDR(7)]  # 7 is slower: its listing comes second
    first, second = found[0][1], found[1][1]
    assert set(first.new) == {("9.9.9.1", 1), ("9.9.9.2", 2)}
    assert second.peers == (("9.9.9.2", 2), ("9.9.9.3", 3)) and second.new == (("9.9.9.3", 3),)
    assert found[0][0] < found[1][0] <= end  # delivered when they came, before the end
    assert found[0][0] == pytest.approx(first.at - start)
    assert sum(isinstance(e, NodeAnswered) for _, e in events) == stream.result.responses
    result = stream.result
    assert [int.from_bytes(n.id, "big") for n in result.closest] == list(range(1, 9))
    assert result.peers[("9.9.9.2", 2)] == {ADDR(3), ADDR(7)}
    assert result.tokens[N(1).id] == b"tok"


async def test_dead_contact_in_closest_set_ends_by_short_timeout(
        autojump_clock: trio.testing.MockClock, Net: type[FakeNet]) -> None:
    net = Net()
    ring(net, list(range(1, 16)))
    net.silent = {1}  # the very closest node is dead, and everybody lists it
    net.values = {2: [("9.9.9.9", 9)]}
    start = trio.current_time()
    async with open_lookup(net, TARGET, "get_peers", [N(15), N(14), N(13)]) as stream:
        result = await stream.drain()
    took = trio.current_time() - start
    asked_dead = min(t for t, d in net.asked if d == 1) - start
    # two rounds of 0.05 s reach the closest nodes, then the dead one costs its short timeout, not 5 s
    assert took <= asked_dead + net.config.short_timeout + 0.1 + 1e-9
    assert took < 1.0
    # it ends when the k (8) closest *responding* nodes have answered
    assert [int.from_bytes(n.id, "big") for n in result.closest] == list(range(2, 10))
    assert ("9.9.9.9", 9) in result.peers
    assert stream.traversal.failures == 0  # the dead node was never waited for until its full timeout


async def test_many_dead_contacts_widen_instead_of_waiting(
        autojump_clock: trio.testing.MockClock, Net: type[FakeNet]) -> None:
    net = Net()
    ids = list(range(1, 31))
    ring(net, ids)
    net.silent = set(range(1, 12, 2))  # six of the closest eleven are dead
    start = trio.current_time()
    async with open_lookup(net, TARGET, "find_node", [N(30), N(29), N(28)]) as stream:
        result = await stream.drain()
    took = trio.current_time() - start
    live = [d for d in ids if d not in net.silent]
    assert [int.from_bytes(n.id, "big") for n in result.closest] == live[:8]
    # dead ones cost a few waves of short timeouts (alpha slots at a time), never a full timeout
    assert took < 3 * net.config.short_timeout < net.config.query_timeout
    assert stream.traversal.failures == 0


async def test_bootstrap_from_routers_with_a_dead_router(
        autojump_clock: trio.testing.MockClock, Net: type[FakeNet]) -> None:
    net = Net()
    ring(net, list(range(1, 13)))
    live_router, dead_router = ("8.1.0.1", 6881), ("8.1.0.2", 6881)
    net.routers = {live_router: 12, dead_router: 4000}
    net.silent = {4000}
    seeds = [NodeInfo(b"", *live_router), NodeInfo(b"", *dead_router)]
    start = trio.current_time()
    async with open_lookup(net, OWN, "find_node", seeds) as stream:
        await stream.drain()
    assert trio.current_time() - start < 1.0  # the dead router is slow after 0.5 s and then not waited for
    assert len(net.table) >= 8  # every responder entered the routing table


async def test_leaving_the_block_early_cancels_the_lookup(
        autojump_clock: trio.testing.MockClock, Net: type[FakeNet]) -> None:
    net = Net()
    ring(net, list(range(1, 13)))
    net.values = {12: [("9.9.9.9", 9)]}
    with trio.fail_after(1):
        async with open_lookup(net, TARGET, "get_peers", [N(12)]) as stream:
            async for event in stream:
                if isinstance(event, PeersFound):
                    break
    assert not stream.finished and stream.result.peers == {("9.9.9.9", 9): {ADDR(12)}}


async def test_fast_path_sends_every_query_without_a_task(autojump_clock: trio.testing.MockClock) -> None:
    net = StartingFakeNet()
    ring(net, list(range(1, 13)))
    net.values = {3: [("9.9.9.1", 1)]}
    async with open_lookup(net, TARGET, "get_peers", [N(12), N(11), N(10)]) as stream:
        # the first round is sent before the caller holds the stream
        assert net.started == 3 and len(net.asked) == 0  # FakeNet records when the reply is awaited
        result = await stream.drain()
    assert net.started == len(net.asked) == result.queries == net.released
    assert ("9.9.9.1", 1) in result.peers


@pytest.mark.parametrize("leave_early", [False, True])
async def test_every_started_query_is_released_once(autojump_clock: trio.testing.MockClock,
                                                     leave_early: bool) -> None:
    """Queries without a task: the ones answered, the dead ones past the full timeout (counted as timeouts,
    and as failures in the routing table), and the ones still out when the lookup ends or is left."""
    net = StartingFakeNet(config=DHTConfig(short_timeout=0.5, query_timeout=2.0, slow_grace=3.0))
    ring(net, list(range(1, 16)))
    net.silent = {1, 2}  # among the closest: the grace holds the end until after their full timeout
    net.values = {14: [("9.9.9.9", 9)]}
    failed: list[bytes] = []
    net.table.failed = lambda node_id, now: failed.append(node_id)  # type: ignore[method-assign]
    async with open_lookup(net, TARGET, "get_peers", [N(15), N(14), N(13)]) as stream:
        async for event in stream:
            if leave_early and isinstance(event, PeersFound):
                break
    assert net.started == net.released > 0
    if leave_early:
        assert net.timed_out == 0 and not stream.finished
    else:
        assert net.timed_out == 2 and stream.finished
        assert stream.result.responses == 13
        assert sorted(failed) == [N(1).id, N(2).id]


async def test_a_slow_consumer_holds_back_the_replies_not_memory(autojump_clock: trio.testing.MockClock,
                                                                Net: type[FakeNet]) -> None:
    net = Net()
    ring(net, list(range(1, 21)))
    net.values = {d: [(f"9.9.9.{d}", d)] for d in range(1, 21)}
    events: list[object] = []
    async with open_lookup(net, TARGET, "get_peers", [N(20), N(19), N(18)], buffer=2) as stream:
        async for event in stream:
            events.append(event)
            await trio.sleep(1.0)  # far slower than the replies
    found = [e for e in events if isinstance(e, PeersFound)]
    answered = [e for e in events if isinstance(e, NodeAnswered)]
    assert len(answered) == stream.result.responses >= 8  # none lost while the channel was full
    assert {p for e in found for p in e.peers} == set(stream.result.peers)
    # each reply's PeersFound comes before its NodeAnswered
    for e in found:
        later = [a for a in events[events.index(e):] if isinstance(a, NodeAnswered) and a.node.addr == e.reporter]
        assert later


async def test_a_driver_bug_is_raised_not_swallowed_as_an_early_end(autojump_clock: trio.testing.MockClock) -> None:
    """A failure inside the lookup's tasks reaches the caller instead of looking like a finished lookup with
    partial results."""

    class Broken(FakeNet):
        async def query(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query],
                        timeout: float | None = None) -> krpc.Response:
            if self.by_addr.get(addr) == 5:
                raise RuntimeError("driver bug")
            return await super().query(addr, build, timeout)

    net = Broken()
    ring(net, list(range(1, 13)))
    with pytest.raises(BaseException) as caught:
        async with open_lookup(net, TARGET, "find_node", [N(12), N(11), N(10)]) as stream:
            await stream.drain()
    leaves = caught.value.exceptions if isinstance(caught.value, BaseExceptionGroup) else [caught.value]
    flat = [e for leaf in leaves for e in (leaf.exceptions if isinstance(leaf, BaseExceptionGroup) else [leaf])]
    assert any(isinstance(e, RuntimeError) and str(e) == "driver bug" for e in flat), caught.value


async def test_closest_first_sends_alpha_at_once_even_past_an_unusable_seed(
        autojump_clock: trio.testing.MockClock) -> None:
    net = StartingFakeNet()
    ring(net, list(range(1, 13)))
    unusable = NodeInfo(N(1).id, N(1).ip, 0)  # port 0: never a valid contact
    seeds = [unusable] + [N(d) for d in range(2, 12)]
    start = trio.current_time()
    async with open_lookup(net, TARGET, "find_node", seeds, closest_first=True) as stream:
        assert net.started == 3  # N(2), N(3), and N(4) from the seeds taken in after the first ones
        result = await stream.drain()
    assert sorted(d for t, d in net.asked if t == start) == [2, 3, 4]
    assert [int.from_bytes(n.id, "big") for n in result.closest][:3] == [1, 2, 3]
    assert net.released == net.started


@pytest.mark.parametrize("closest_first", [False, True])
async def test_a_refused_first_query_gives_its_place_at_once(autojump_clock: trio.testing.MockClock,
                                                             closest_first: bool) -> None:
    """A first-round query netguard refuses is recorded as failed and the next candidate is sent in its place
    before the caller gets the stream, not when the first reply comes."""
    net = StartingFakeNet(refused={2})
    ring(net, list(range(1, 13)))
    start = trio.current_time()
    async with open_lookup(net, TARGET, "find_node", [N(d) for d in range(2, 12)],
                           closest_first=closest_first) as stream:
        assert net.started == 3  # 3 and 4, and 5 in 2's place
        result = await stream.drain()
    assert sorted(d for t, d in net.asked if t == start) == [3, 4, 5]
    assert stream.traversal.state_of(N(2).id) is QueryState.FAILED
    assert N(2) not in result.closest and net.released == net.started


async def test_the_closest_seed_is_asked_before_the_traversal_is_built(
        autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: the first datagram of a closest-first lookup leaves before the traversal exists; the traversal
    then holds it in flight, so it is not asked twice and the round is still alpha queries."""
    net = StartingFakeNet()
    ring(net, list(range(1, 13)))
    started_when_built: list[int] = []

    class Recording(lookup_stream.Traversal):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            started_when_built.append(net.started)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(lookup_stream, "Traversal", Recording)
    start = trio.current_time()
    async with open_lookup(net, TARGET, "find_node", [N(d) for d in range(2, 12)], closest_first=True) as stream:
        assert started_when_built == [1]
        assert stream.traversal.state_of(N(2).id) is QueryState.IN_FLIGHT
        assert net.started == 3
        result = await stream.drain()
    assert sorted(d for t, d in net.asked if t == start) == [2, 3, 4]
    assert [d for _, d in net.asked].count(2) == 1
    assert [int.from_bytes(n.id, "big") for n in result.closest][:3] == [1, 2, 3]
    assert net.released == net.started


def test_sent_before_marks_only_a_candidate_still_to_query() -> None:
    t = Traversal(TARGET, [N(2), N(3)], now=0.0, alpha=1)
    assert t.sent_before(N(3), 0.0)
    assert not t.sent_before(N(3), 0.0)  # already in flight
    assert not t.sent_before(N(9), 0.0)  # not a candidate
    assert not t.sent_before(NodeInfo(N(4).id, N(2).ip, N(2).port), 0.0)  # another id at that address
    assert t.queries_sent == 1 and t.next_queries(0.0) == []  # alpha 1: the one slot is taken
