"""The responder cache (issue 12): exact XOR search, least-recently-answered eviction, what feeds it, and a
lookup on a real loopback DHT that starts from the cache alone."""

from __future__ import annotations

import random

import pytest
import trio

from p2pwatch.dht.nodeinfo import NodeInfo, random_id
from p2pwatch.dht.responder_cache import ResponderCache
from p2pwatch.dht.routing import RoutingTable
from p2pwatch.errors import LocalProtocolError
from tests.dht_helpers import open_nodes


def node(i: int, node_id: bytes | None = None) -> NodeInfo:
    return NodeInfo(node_id if node_id is not None else random_id(), f"10.0.{i >> 8 & 255}.{i & 255}", 6881)


def brute_closest(nodes: list[NodeInfo], target: bytes, count: int) -> list[bytes]:
    t = int.from_bytes(target, "big")
    return [n.id for n in sorted(nodes, key=lambda n: int.from_bytes(n.id, "big") ^ t)[:count]]


def clustered_ids(rng: random.Random, count: int) -> list[bytes]:
    """Ids in a few tight clusters (long shared prefixes), where a window around the target is not enough."""
    bases = [rng.getrandbits(160) for _ in range(4)]
    return [(rng.choice(bases) ^ rng.getrandbits(rng.choice((8, 40, 120)))).to_bytes(20, "big")
            for _ in range(count)]


@pytest.mark.parametrize("layout", ["uniform", "clustered"])
def test_closest_is_exact(layout: str) -> None:
    rng = random.Random(7)
    ids = ([rng.getrandbits(160).to_bytes(20, "big") for _ in range(3000)] if layout == "uniform"
           else list(dict.fromkeys(clustered_ids(rng, 3000))))
    nodes = [node(i, x) for i, x in enumerate(ids)]
    cache = ResponderCache(capacity=10_000)
    for n in nodes:
        cache.add(n)
    assert len(cache) == len(nodes)
    targets = [rng.getrandbits(160).to_bytes(20, "big") for _ in range(100)] + ids[:20]
    targets += [(int.from_bytes(x, "big") ^ 1).to_bytes(20, "big") for x in ids[20:40]]
    for target in targets:
        for count in (1, 8, 16, 33):
            assert [n.id for n in cache.closest(target, count)] == brute_closest(nodes, target, count)
    assert len(cache.closest(targets[0], 10_000)) == len(nodes)
    assert cache.closest(targets[0], 0) == []


def test_least_recently_answered_goes_first_and_failures_leave() -> None:
    a, b, c, d = (node(i) for i in range(4))
    cache = ResponderCache(capacity=3)
    for n in (a, b, c):
        cache.add(n)
    moved = NodeInfo(a.id, "10.9.9.9", 6881)
    cache.add(moved)  # a answered again, from another address: the latest address counts, a is fresh
    cache.add(d)
    assert b.id not in cache and {a.id, c.id, d.id} <= {n.id for n in cache.closest(a.id, 3)}
    assert cache.closest(a.id, 1) == [moved]
    cache.discard(c.id)
    cache.discard(c.id)  # twice is harmless
    cache.discard(random_id())  # as is an id never cached
    assert sorted(n.id for n in cache.closest(d.id, 5)) == sorted([a.id, d.id])
    assert len(cache) == 2


def test_bad_input() -> None:
    with pytest.raises(LocalProtocolError):
        ResponderCache(capacity=-1)
    cache = ResponderCache(capacity=4)
    with pytest.raises(LocalProtocolError):
        cache.closest(b"short", 8)
    cache.add(NodeInfo(b"", "10.0.0.1", 6881))  # a router of unknown id is no seed
    cache.add(NodeInfo(b"x" * 19, "10.0.0.2", 6881))
    assert len(cache) == 0 and cache.closest(random_id(), 8) == []
    off = ResponderCache(capacity=0)
    off.add(node(1))
    assert len(off) == 0


def test_add_to_keeps_every_table_seed_and_orders_by_distance() -> None:
    rng = random.Random(3)
    target = rng.getrandbits(160).to_bytes(20, "big")
    pool = [node(i, rng.getrandbits(160).to_bytes(20, "big")) for i in range(200)]
    table_seeds = pool[:16]
    cache = ResponderCache()
    for n in pool[8:]:  # half of the table's seeds are cached too
        cache.add(n)
    seeds = cache.add_to(list(table_seeds), target, 16)
    ids = [n.id for n in seeds]
    assert len(ids) == len(set(ids))
    assert {n.id for n in table_seeds} <= set(ids)
    assert set(brute_closest(pool[8:], target, 16)) <= set(ids)
    assert ids == brute_closest(seeds, target, len(seeds))
    ordered = sorted(table_seeds, key=lambda n: int.from_bytes(n.id, "big") ^ int.from_bytes(target, "big"))
    assert ResponderCache().add_to(ordered, target, 16) == ordered  # an empty cache: the table's, as they came


def test_routing_table_feeds_the_cache_with_responders_only() -> None:
    own = random_id()
    cache = ResponderCache()
    table = RoutingTable(own, k=2, allow_local=True, responders=cache)  # the test's 10.x addresses
    answered = [node(i) for i in range(40)]
    for n in answered:
        table.heard_from(n, 1.0, responded=True)
    assert len(table) < len(answered)  # the buckets are full ...
    assert len(cache) == len(answered)  # ... but every responder is a seed
    querier = node(99)
    table.heard_from(querier, 2.0, responded=False)  # a node that only queried us proved nothing
    table.heard_from(NodeInfo(own, "10.1.1.1", 6881), 2.0, responded=True)
    assert querier.id not in cache and own not in cache
    table.failed(answered[0].id, 3.0)
    assert answered[0].id not in cache and len(cache) == len(answered) - 1
    assert len(RoutingTable(own).responders) == 0  # without a cache, the table keeps none
    strict = ResponderCache()
    RoutingTable(own, responders=strict).heard_from(node(7), 4.0, responded=True)
    assert len(strict) == 0  # an address the table refuses (private, allow_local off) is no seed either


async def test_a_lookup_seeds_from_the_cache_when_the_table_has_forgotten() -> None:
    with trio.fail_after(30):
        async with open_nodes(10, responder_cache=1000) as nodes:
            asker = nodes[-1]
            await asker.bootstrap()
            cache = asker.table.responders
            answered = {n.own_id for n in nodes} & {n.id for n in cache.closest(asker.own_id, 100)}
            assert len(answered) >= 5
            target = nodes[4].own_id
            asker.config.bootstrap = ()  # no routers to fall back on either
            empty = ResponderCache(0)
            asker.table = RoutingTable(asker.own_id, allow_local=True, responders=empty)
            async with asker.open_lookup(target, "find_node") as stream:  # the control: no seeds at all
                assert (await stream.drain()).responses == 0
            asker.table = RoutingTable(asker.own_id, allow_local=True, responders=cache)
            assert asker.table.closest(target, 16) == []
            async with asker.open_lookup(target, "find_node") as stream:
                result = await stream.drain()
            assert result.closest and result.closest[0].id == target
            assert result.responses >= 5
