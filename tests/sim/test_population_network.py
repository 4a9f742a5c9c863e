"""The simulated DHT's world: exact ground truth, lazily built tables, churn, RTTs, and real KRPC answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trio
import trio.testing

from p2pwatch.dht import krpc
from p2pwatch.sim.network import SimNetwork
from p2pwatch.sim.population import DHT_PORT, Population, PopulationSettings
from p2pwatch.sim.tables import RemoteTables


@pytest.fixture(scope="module")
def pop() -> Population:
    return Population(PopulationSettings(nodes=5_000, seed=3))


def test_ids_unique_sorted_and_addresses_round_trip(pop: Population) -> None:
    assert len(np.unique(pop.hi)) == pop.n and bool(np.all(pop.hi[:-1] < pop.hi[1:]))
    for i in (0, 17, pop.n - 1):
        assert pop.index_of(pop.node_ip(i), DHT_PORT) == i
        assert pop.index_of_id(pop.node_id(i)) == i
        assert pop.node_ip(i).startswith("127.")
    assert pop.index_of(pop.node_ip(3), 6882) is None
    assert 0.45 < 1 - pop.alive.mean() < 0.55


def test_closest_is_the_brute_force_answer(pop: Population) -> None:
    rng = np.random.default_rng(1)
    live = np.flatnonzero(pop.alive)
    for _ in range(30):
        target = rng.bytes(20)
        t = int.from_bytes(target, "big")
        brute = sorted(live, key=lambda i: int.from_bytes(pop.node_id(int(i)), "big") ^ t)[:8]
        assert pop.true_closest_ids(target) == [pop.node_id(int(i)) for i in brute]


def test_storage_is_consistent_both_ways(pop: Population) -> None:
    for t in range(0, pop.t, 997):
        for i in pop.holders(t):
            assert t in pop.stored_at(int(i))
    rng = np.random.default_rng(2)
    for i in rng.choice(np.flatnonzero(pop.announce_alive), 20, replace=False):
        for t in pop.stored_at(int(i)):
            assert pop.holds(int(i), int(t))
    assert len(pop.stored_at(int(np.flatnonzero(~pop.announce_alive)[0]))) == 0


def test_tables_are_deterministic_bounded_and_know_the_neighbourhood(pop: Population) -> None:
    tables = RemoteTables(pop, cache=2)
    first = tables.table(10).copy()
    tables.table(11)
    tables.table(12)  # 10 was evicted
    assert np.array_equal(tables.table(10), first)
    assert tables.built == 4
    own = int(pop.hi[10])
    near = [j for j in range(pop.n) if j != 10 and (int(pop.hi[j]) ^ own).bit_length() <= 64 - 11]
    assert set(near) <= set(first.tolist())
    assert 10 not in first.tolist()
    dead = 1 - pop.alive[first].mean()
    assert 0.2 < dead < 0.8  # liveness is ignored when tables are built


def test_churn_keeps_the_dead_fraction_and_changes_who_is_dead() -> None:
    p = Population(PopulationSettings(nodes=20_000, seed=4, session_s=600))
    before = p.alive.copy()
    for _ in range(60):
        p.churn(1.0)
    assert p.alive.sum() == before.sum()
    changed = (p.alive != before).mean()
    assert 0.05 < changed < 0.2  # 1 - exp(-60/600) ≈ 9.5 % of nodes flipped, each way
    assert np.array_equal(p.announce_alive, before)


def test_rtts_are_log_normal_with_a_long_tail(pop: Population) -> None:
    rtt = pop.rtt.astype(float)
    assert 0.12 < float(np.median(rtt)) < 0.18
    assert float(np.percentile(rtt, 99)) > 3 * float(np.median(rtt))
    assert float(np.log(rtt).std()) == pytest.approx(0.6, abs=0.05)


async def test_remote_nodes_answer_real_krpc_after_their_rtt(pop: Population, autojump_clock: trio.testing.MockClock
                                                             ) -> None:
    net = SimNetwork(pop)
    sock = net.socket
    live = int(np.flatnonzero(pop.alive & pop.bep51)[0])
    dead = int(np.flatnonzero(~pop.alive)[0])
    t = int(pop.stored_at(live)[0]) if len(pop.stored_at(live)) else None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.run)
        start = trio.current_time()
        me = b"\x01" * 20
        sock.try_sendto(krpc.encode(krpc.FindNode(b"a", me, b"\x00" * 20)), (pop.node_ip(dead), DHT_PORT))
        sock.try_sendto(krpc.encode(krpc.SampleInfohashes(b"b", me, b"\x00" * 20)), (pop.node_ip(live), DHT_PORT))
        if t is not None:
            sock.try_sendto(krpc.encode(krpc.GetPeers(b"c", me, pop.infohash(t))), (pop.node_ip(live), DHT_PORT))
        replies = {}
        with trio.move_on_after(10):
            while len(replies) < (2 if t is not None else 1):
                await sock.wait_readable()
                data, _addr = sock.try_recvfrom(1500) or (b"", ("", 0))
                msg = krpc.decode(data)
                assert isinstance(msg, krpc.Response)
                replies[msg.tid] = (msg, trio.current_time() - start)
        nursery.cancel_scope.cancel()
    assert b"a" not in replies  # the dead node never answers
    sample, rtt = replies[b"b"]
    assert rtt == pytest.approx(float(pop.rtt[live]), rel=0.8)
    assert sample.interval == 21600 and sample.num == len(pop.stored_at(live)) and sample.samples
    assert len(sample.nodes) == 8
    if t is not None:
        peers, _ = replies[b"c"]
        assert len(peers.values) == min(50, len(pop.peers_of(t)))
    assert net.stats.unanswered_dead == 1 and net.stats.max_per_second == 2
    assert math.isfinite(rtt)


async def test_concurrent_queries_to_one_ip_leave_at_most_one_a_second(autojump_clock: trio.testing.MockClock
                                                                       ) -> None:
    from p2pwatch.dht.node import DHTConfig, open_dht_node

    pop = Population(PopulationSettings(nodes=200, seed=9))
    net = SimNetwork(pop)
    target = int(np.flatnonzero(pop.alive)[0])
    addr = (pop.node_ip(target), DHT_PORT)
    config = DHTConfig(bind_host="127.0.0.1", allow_local=True, outbound_rate=1.0, max_outstanding=4)
    got: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.run)
        async with open_dht_node(config, sock=net.socket, bootstrap=False) as node:
            start = trio.current_time()

            async def ask() -> None:
                await node.ping(addr)
                got.append(trio.current_time() - start)

            async with trio.open_nursery() as asks:
                for _ in range(12):  # more askers than outstanding slots, all for the same IP
                    asks.start_soon(ask)
        nursery.cancel_scope.cancel()
    assert len(got) == 12 and int(net.received[target]) == 12
    assert net.stats.max_per_second == 1  # never two datagrams to that IP within one second
    assert max(got) >= 11.0  # the twelfth left at least 11 s after the first
