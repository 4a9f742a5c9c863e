"""The crawler → metadata pipeline's scheduling, on trio's mock clock: fallback order, bounds, per-IP limit."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from p2pwatch.config import MetadataSettings
from p2pwatch.errors import LocalProtocolError
from p2pwatch.monitor.metrics import Metrics, PerMinute
from p2pwatch.monitor.pipeline import (
    FAILED,
    NO_PEERS,
    OK,
    TIMED_OUT,
    Addr,
    FetchAttempt,
    Lead,
    MetadataOutcome,
    MetadataPipeline,
    PeersReply,
)

NODE = ("127.1.0.1", 6881)


def ih(n: int) -> bytes:
    return n.to_bytes(20, "big")


@dataclass
class FakeDHT:
    """Peers by infohash: what the sampling node lists, and what a full lookup finds."""

    direct: dict[bytes, tuple[Addr, ...]] = field(default_factory=dict)
    found: dict[bytes, tuple[Addr, ...]] = field(default_factory=dict)
    calls: list[tuple[str, bytes, Addr | None]] = field(default_factory=list)
    lookups_open: int = 0
    max_lookups_open: int = 0

    async def ask_node(self, node: Addr, infohash: bytes) -> PeersReply:
        self.calls.append(("ask", infohash, None))
        await trio.sleep(0.15)
        return PeersReply(self.direct.get(infohash, ()), ())

    async def lookup(self, infohash: bytes, seeds: Iterable[object]) -> dict[Addr, set[Addr]]:
        self.calls.append(("lookup", infohash, None))
        self.lookups_open += 1
        self.max_lookups_open = max(self.max_lookups_open, self.lookups_open)
        try:
            await trio.sleep(1.5)
        finally:
            self.lookups_open -= 1
        return {p: {NODE} for p in self.found.get(infohash, ())}


@dataclass
class FakePeers:
    """good peers deliver after 0.6 s, silent ones time out after 5 s, others refuse after 0.1 s."""

    good: set[Addr] = field(default_factory=set)
    silent: set[Addr] = field(default_factory=set)
    hang: set[Addr] = field(default_factory=set)
    libtorrent_finds: set[bytes] = field(default_factory=set)
    calls: list[tuple[str, bytes, Addr | None]] = field(default_factory=list)
    starts: dict[str, list[float]] = field(default_factory=dict)
    open_by_ip: dict[str, int] = field(default_factory=dict)
    max_open_by_ip: int = 0
    open_total: int = 0
    max_open_total: int = 0

    async def fetch(self, infohash: bytes, peer: Addr) -> FetchAttempt:
        self.calls.append(("fetch", infohash, peer))
        self.starts.setdefault(peer[0], []).append(trio.current_time())
        self.open_by_ip[peer[0]] = self.open_by_ip.get(peer[0], 0) + 1
        self.open_total += 1
        self.max_open_by_ip = max(self.max_open_by_ip, self.open_by_ip[peer[0]])
        self.max_open_total = max(self.max_open_total, self.open_total)
        try:
            if peer in self.hang:
                await trio.sleep_forever()
            if peer in self.good:
                await trio.sleep(0.6)
                return FetchAttempt(peer, OK, {"name": infohash.hex()})
            if peer in self.silent:
                await trio.sleep(5.0)
                return FetchAttempt(peer, TIMED_OUT)
            await trio.sleep(0.1)
            return FetchAttempt(peer, FAILED)
        finally:
            self.open_by_ip[peer[0]] -= 1
            self.open_total -= 1

    async def fallback(self, infohash: bytes, peers: list[Addr]) -> object | None:
        self.calls.append(("libtorrent", infohash, None))
        await trio.sleep(10.0)
        return {"name": "lt"} if infohash in self.libtorrent_finds else None


def peer(i: int, port: int = 6000) -> Addr:
    return (f"127.128.{i // 250}.{i % 250 + 1}", port)


async def run_pipeline(pipeline: MetadataPipeline, leads: list[Lead]) -> list[MetadataOutcome]:
    lead_send, lead_recv = trio.open_memory_channel[Lead](0)
    out_send, out_recv = trio.open_memory_channel[MetadataOutcome](1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run, lead_recv, out_send)
        async with lead_send:
            for lead in leads:
                await lead_send.send(lead)
    return [o async for o in out_recv]


async def test_direct_peers_first_then_lookup_then_libtorrent(autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDHT(direct={ih(1): (peer(1),), ih(2): (peer(2),), ih(3): (peer(3),)},
                  found={ih(2): (peer(2), peer(20)), ih(3): (peer(3),)})
    peers = FakePeers(good={peer(1), peer(20)}, silent={peer(3)}, libtorrent_finds={ih(3)}, calls=dht.calls)
    pipeline = MetadataPipeline(dht, peers, MetadataSettings())
    got = {o.infohash: o for o in await run_pipeline(pipeline, [Lead(ih(n), NODE) for n in (1, 2, 3, 4)])}
    # 1: the sampling node's peers deliver, no lookup
    assert got[ih(1)].status == OK and got[ih(1)].source == "direct"
    assert ("lookup", ih(1), None) not in dht.calls
    assert got[ih(1)].peers == {peer(1): {NODE}}
    # 2: the direct peer refuses, the lookup finds another one, only the new one is tried again
    assert got[ih(2)].status == OK and got[ih(2)].source == "lookup"
    fetched_2 = [p for kind, h, p in peers.calls if kind == "fetch" and h == ih(2)]
    assert fetched_2 == [peer(2), peer(20)]
    # 3: every peer silent; libtorrent last, and it finds it
    order_3 = [kind for kind, h, _ in dht.calls if h == ih(3)]  # one log, in time order
    assert order_3 == ["ask", "fetch", "lookup", "libtorrent"]
    assert got[ih(3)].status == OK and got[ih(3)].source == "libtorrent"
    # 4: nobody lists a peer: no_peers, and libtorrent is not bothered
    assert got[ih(4)].status == NO_PEERS
    assert ("libtorrent", ih(4), None) not in peers.calls
    st = pipeline.stats
    assert (st.ok, st.no_peers, st.ok_direct, st.ok_lookup, st.libtorrent_ok) == (3, 1, 1, 1, 1)
    assert st.direct_asked == 4 and st.direct_with_peers == 3 and st.lookups == 3


async def test_timed_out_and_failed_are_told_apart(autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDHT(direct={ih(1): (peer(1), peer(2)), ih(2): (peer(3), peer(4)), ih(3): (peer(5),)})
    peers = FakePeers(silent={peer(1), peer(2)}, hang={peer(5)})
    settings = MetadataSettings(deadline=60.0)
    pipeline = MetadataPipeline(dht, peers, settings)
    got = {o.infohash: o for o in await run_pipeline(pipeline, [Lead(ih(n), NODE) for n in (1, 2, 3)])}
    assert got[ih(1)].status == TIMED_OUT  # every peer silent, libtorrent found nothing
    assert got[ih(2)].status == FAILED  # peers refused
    assert got[ih(3)].status == TIMED_OUT  # a peer that never ends: the lead's deadline
    assert got[ih(3)].finished - got[ih(3)].started == pytest.approx(60.0)
    assert pipeline.stats.timed_out == 2 and pipeline.stats.failed == 1


async def test_bounds_and_per_ip_politeness_hold(autojump_clock: trio.testing.MockClock) -> None:
    # 200 torrents, all listing the same 3 peers (one popular seeder IP) plus one good peer of their own
    shared = [("127.128.9.9", 6000 + i) for i in range(3)]
    direct = {ih(n): (*shared, peer(n)) for n in range(200)}
    dht = FakeDHT(direct=direct)
    peers = FakePeers(good={peer(n) for n in range(200)}, silent=set(shared))
    settings = MetadataSettings(active=20, connections=16, peers_at_once=3, peer_ip_rate=1.0, lookups=4)
    pipeline = MetadataPipeline(dht, peers, settings)
    started = trio.current_time()
    got = await run_pipeline(pipeline, [Lead(ih(n), NODE) for n in range(200)])
    assert len(got) == 200
    assert [o.status for o in got if o.status != OK] == []
    st = pipeline.stats
    assert st.max_active <= 20 and peers.max_open_total <= 16 and st.max_connections <= 16
    assert peers.max_open_by_ip == 1  # never two connections to one IP at once
    for ip, times in peers.starts.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= 1.0 - 1e-9 for g in gaps), (ip, gaps)  # at most 1 new connection/s per IP
    assert len(peers.starts["127.128.9.9"]) >= 2
    assert trio.current_time() - started < 200  # bounded, yet not serialised behind the shared IP


async def test_lookups_are_bounded_and_libtorrent_never_waited_for(autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDHT(direct={ih(n): (peer(n),) for n in range(40)})
    peers = FakePeers(silent={peer(n) for n in range(40)})
    settings = MetadataSettings(lookups=3, libtorrent=1, active=40)
    pipeline = MetadataPipeline(dht, peers, settings)
    got = await run_pipeline(pipeline, [Lead(ih(n), NODE) for n in range(40)])
    assert len(got) == 40
    assert dht.max_lookups_open == 3
    st = pipeline.stats
    assert st.libtorrent >= 1 and st.libtorrent_busy >= 1 and st.libtorrent + st.libtorrent_busy == 40


async def test_a_slow_consumer_pushes_back_onto_the_producer(autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDHT(direct={ih(n): (peer(n),) for n in range(100)})
    peers = FakePeers(good={peer(n) for n in range(100)})
    pipeline = MetadataPipeline(dht, peers, MetadataSettings(active=5))
    lead_send, lead_recv = trio.open_memory_channel[Lead](0)
    out_send, out_recv = trio.open_memory_channel[MetadataOutcome](2)
    sent = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run, lead_recv, out_send)

        async def produce() -> None:
            nonlocal sent
            for n in range(100):
                await lead_send.send(Lead(ih(n), NODE))
                sent += 1

        nursery.start_soon(produce)
        await trio.sleep(60)  # nobody reads the outcomes
        assert sent <= 5 + 2 + 1  # `active` slots, the outcome buffer, one lead being admitted
        assert pipeline.stats.ok <= 7
        nursery.cancel_scope.cancel()
    assert out_recv is not None


def test_per_minute_rates() -> None:
    m = Metrics()
    rates = PerMinute(["p2pwatch_metadata_ok_total"], window=60.0)
    rates.install(m)
    for t in range(0, 121, 5):
        m.counters["p2pwatch_metadata_ok_total"] = 10 * t  # 10 per second
        rates.sample(m, float(t))
    assert m.gauges["p2pwatch_metadata_ok_per_minute"]() == pytest.approx(600.0)
    assert "p2pwatch_metadata_ok_per_minute 600.0" in m.render()


async def test_a_bad_lead_fails_alone(autojump_clock: trio.testing.MockClock) -> None:
    class Refusing(FakeDHT):
        async def ask_node(self, node: Addr, infohash: bytes) -> PeersReply:
            if len(infohash) != 20:
                raise LocalProtocolError("a DHT target is 20 bytes")
            return await super().ask_node(node, infohash)

    dht = Refusing(direct={ih(1): (peer(1),)})
    pipeline = MetadataPipeline(dht, FakePeers(good={peer(1)}), MetadataSettings())
    got = await run_pipeline(pipeline, [Lead(b"short", NODE), Lead(ih(1), NODE)])
    assert sorted((o.infohash, o.status) for o in got) == [(ih(1), OK), (b"short", FAILED)]
    assert pipeline.stats.failed == 1 and pipeline.stats.active == 0
