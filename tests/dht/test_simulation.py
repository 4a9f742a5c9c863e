"""The in-memory DHT: ground truth, realistic tables, and lookups that find the true closest nodes."""

from __future__ import annotations

import heapq

import pytest

from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.dht.simulation import LookupStats, SimulatedDHT, benchmark_lookups
from p2pwatch.errors import LocalProtocolError


@pytest.fixture(scope="module")
def dht() -> SimulatedDHT:
    return SimulatedDHT(10_000, silent_fraction=0.1, seed=42)


def brute_force_closest(dht: SimulatedDHT, target: bytes, count: int, exclude: int | None = None) -> list[int]:
    t = int.from_bytes(target, "big")
    live = [i for i in range(dht.n_nodes) if not dht.is_silent(i) and i != exclude]
    return heapq.nsmallest(count, live, key=lambda i: dht.ids[i] ^ t)


def test_construction(dht: SimulatedDHT) -> None:
    assert len(dht.ids) == 10_000 == len(set(dht.ids))
    assert dht.ids == sorted(dht.ids)
    assert sum(dht.is_silent(i) for i in range(dht.n_nodes)) == 1000
    assert len({dht.node(i).addr for i in range(dht.n_nodes)}) == 10_000
    assert dht.index_of(dht.node(1234)) == 1234
    assert dht.index_of(NodeInfo(dht.node(5).id, dht.node(6).ip, 6881)) is None
    with pytest.raises(LocalProtocolError):
        SimulatedDHT(10, silent_fraction=1.0)


def test_true_closest_is_the_brute_force_answer(dht: SimulatedDHT) -> None:
    for _ in range(20):
        target = dht.random_target()
        assert dht.true_closest(target) == brute_force_closest(dht, target, 8)
        start = dht.random_live_node()
        assert dht.true_closest(target, 5, exclude=start) == brute_force_closest(dht, target, 5, start)
    own = dht.node(77).id  # a target equal to a node id: that node comes first unless excluded
    if not dht.is_silent(77):
        assert dht.true_closest(own)[0] == 77
    assert 77 not in dht.true_closest(own, exclude=77)


def test_tables_are_realistic_and_deterministic(dht: SimulatedDHT) -> None:
    t = dht.table(99)
    assert 50 <= len(t) <= 8 * t.bucket_count
    assert all(live <= 8 for live, _ in t.bucket_sizes())
    assert sum(rep for _, rep in t.bucket_sizes()) == 0  # exactly what fits, nothing waiting
    own = dht.ids[99]
    # it knows its whole neighbourhood: every node sharing enough leading bits with it
    near = [i for i in range(dht.n_nodes) if i != 99 and (dht.ids[i] ^ own).bit_length() <= 160 - 13]
    assert {dht.node(i).id for i in near} <= {n.id for n in t.nodes()}
    tiny = SimulatedDHT(10_000, silent_fraction=0.1, seed=42, table_cache=1)
    tiny.table(5)
    again = tiny.table(99)
    tiny.table(5)
    assert [n.id for n in tiny.table(99).nodes()] == [n.id for n in again.nodes()] == [n.id for n in t.nodes()]
    assert tiny.tables_built == 4  # the cache held one table, so 99 was rebuilt, identically


def test_lookups_find_the_true_closest_live_nodes(dht: SimulatedDHT) -> None:
    runs = [dht.run_lookup(dht.random_target(), dht.random_live_node()) for _ in range(100)]
    found_all = sum(r.found_all for r in runs)
    assert found_all >= 99, [(r.found, r.expected) for r in runs if not r.found_all]
    assert all(r.found >= r.expected - 1 for r in runs)
    assert all(r.expected == 8 for r in runs)
    queries = sorted(r.queries_sent for r in runs)
    rounds = sorted(r.rounds for r in runs)
    assert queries[50] <= 50 and rounds[50] <= 6
    assert all(r.responses + r.failures <= r.queries_sent for r in runs)
    # silent nodes were met: asked, never answered (slow, then not waited for)
    assert sum(r.queries_sent - r.responses for r in runs) > 0


def test_results_never_contain_silent_nodes() -> None:
    dht = SimulatedDHT(3000, silent_fraction=0.4, seed=3)
    silent_ids = {dht.node(i).id for i in range(dht.n_nodes) if dht.is_silent(i)}
    runs = [dht.run_lookup(dht.random_target(), dht.random_live_node(), kind="find_node") for _ in range(20)]
    assert sum(r.failures for r in runs) > 20
    for stats in runs:
        assert len(stats.result) == 8
        assert not silent_ids & set(stats.result)
        assert stats.found >= stats.expected - 1


def test_stored_values_are_found_with_provenance(dht: SimulatedDHT) -> None:
    infohash = dht.random_target()
    peers = [("5.6.7.8", 51413), ("5.6.7.9", 6881)]
    holders = dht.store_peers(infohash, peers)
    assert holders == brute_force_closest(dht, infohash, 8)
    holder_addrs = {dht.node(i).addr for i in holders}
    for _ in range(10):
        stats = dht.run_lookup(infohash, dht.random_live_node(), kind="get_peers")
        assert set(stats.peers) == set(peers)
        for reporters in stats.peers.values():
            assert reporters <= holder_addrs  # only nodes that hold them say so
        assert len(stats.peers[peers[0]]) >= 6


def test_announce_stores_our_peer_at_the_closest_nodes(dht: SimulatedDHT) -> None:
    infohash = dht.random_target()
    start = dht.random_live_node()
    me = ("3.3.3.3", 51413)
    stats = dht.run_lookup(infohash, start, kind="announce_peer", announce_peer=me)
    assert stats.announced == stats.found >= 7
    closest = dht.true_closest(infohash, exclude=start)
    assert sum(me in dht.stored_at(i).get(infohash, set()) for i in closest) == stats.announced
    later = dht.run_lookup(infohash, dht.random_live_node())
    assert me in later.peers


def test_sample_infohashes_reports_what_nodes_hold() -> None:
    dht = SimulatedDHT(2000, seed=9)
    made = set(dht.populate(300, peers_each=1))
    stats = dht.run_lookup(dht.random_target(), dht.random_live_node(), kind="sample_infohashes")
    assert stats.samples and stats.samples <= made
    assert stats.kind == "sample_infohashes" and stats.peers == {}


def test_lookups_are_deterministic_per_seed() -> None:
    a = SimulatedDHT(2000, silent_fraction=0.2, seed=5)
    b = SimulatedDHT(2000, silent_fraction=0.2, seed=5)
    ra = [a.run_lookup(a.random_target(), a.random_live_node()) for _ in range(5)]
    rb = [b.run_lookup(b.random_target(), b.random_live_node()) for _ in range(5)]
    assert ra == rb
    assert isinstance(ra[0], LookupStats)


def test_bad_kind_rejected(dht: SimulatedDHT) -> None:
    with pytest.raises(LocalProtocolError):
        dht.run_lookup(dht.random_target(), 0, kind="ping")


def test_benchmark_summary() -> None:
    r = benchmark_lookups(n_nodes=2000, silent_fraction=0.1, lookups=30, seed=2)
    assert r["lookups"] == 30 and r["n_nodes"] == 2000
    assert 0.9 <= r["success_k_minus_1"] <= 1.0 and r["success_all"] <= r["success_k_minus_1"]
    assert 8 <= r["queries_median"] <= r["queries_p95"] <= 200
    assert 1 <= r["rounds_median"] <= r["rounds_p95"]
    assert r["wall_seconds"] >= r["setup_seconds"] >= 0
