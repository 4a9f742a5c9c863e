"""The monitor on both DHTs (BEP 32, ``[dht] bind6`` / ``monitor --bind6``).

* the metadata pipeline's :class:`DHTPeerSource` with fake nodes: a sampled-from node is asked through the
  node of its own family (IPv6 with ``want: ["n6"]``), a lookup runs on both and merges their peers, each
  seeded with its own family's nodes;
* against real libtorrent: a torrent seeded only into an IPv6-only libtorrent DHT on ``::1`` is discovered
  by the daemon's IPv6 node (the IPv4 node has no bootstrap and learns nothing) and its metadata fetched;
* a busy IPv6 port is one line naming the address, ``--bind6`` and ``[dht] bind6``; a bind6 that is not
  IPv6 is a configuration error naming the key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from p2pwatch.config import load_config
from p2pwatch.dht import krpc
from p2pwatch.dht.node_types import config_from_settings
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.monitor.daemon import Monitor
from p2pwatch.monitor.pipeline import DHTPeerSource
from p2pwatch.storage.db import default_url, make_engine, upgrade_database
from tests.conftest import loopback_address, require_component, require_ipv6_loopback

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, SwarmSession, random_torrent
except ImportError:  # pragma: no cover - reported by require_component below
    lt = None

IH = bytes(range(20))


@dataclass
class FakeNode:
    """Just what DHTPeerSource uses of a DHTNode; records what it was asked."""

    name: str
    reply: Any
    found: dict[tuple[str, int], set[tuple[str, int]]]
    own_id: bytes = b"\x01" * 20
    config: Any = field(default_factory=lambda: SimpleNamespace(read_only=False, k=8))
    queries: list[tuple[tuple[str, int], krpc.Query]] = field(default_factory=list)
    lookups: list[list[NodeInfo]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.table = SimpleNamespace(closest=lambda target, k: [])

    async def query(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query]) -> Any:
        self.queries.append((addr, build(b"tt")))
        return self.reply

    async def get_peers(self, infohash: bytes, *, seeds: list[NodeInfo]) -> Any:
        self.lookups.append(list(seeds))
        return SimpleNamespace(peers=self.found)


def _pair() -> tuple[FakeNode, FakeNode]:
    n4 = NodeInfo(b"\x04" * 20, "10.0.0.9", 6881)
    n6 = NodeInfo(b"\x06" * 20, "2001:db8::9", 6881)
    v4 = FakeNode("v4", SimpleNamespace(values=(("10.1.1.1", 1),), nodes=(n4,), nodes6=(n6,)),
                  {("10.1.1.1", 1): {("10.0.0.1", 6881)}, ("10.1.1.2", 2): {("10.0.0.2", 6881)}})
    v6 = FakeNode("v6", SimpleNamespace(values=(("2001:db8::1", 1),), nodes=(n4,), nodes6=(n6,)),
                  {("2001:db8::1", 1): {("2001:db8::5", 6881)}, ("10.1.1.1", 1): {("2001:db8::6", 6881)}})
    return v4, v6


async def test_sampled_from_node_is_asked_through_its_family() -> None:
    v4, v6 = _pair()
    source = DHTPeerSource(v4, v6)  # type: ignore[arg-type]
    six = await source.ask_node(("2001:db8::7", 6881), IH)
    assert [a for a, _ in v6.queries] == [("2001:db8::7", 6881)] and not v4.queries
    query = v6.queries[0][1]
    assert isinstance(query, krpc.GetPeers) and query.want == (b"n6",) and query.info_hash == IH
    assert six.peers == (("2001:db8::1", 1),) and [n.ip for n in six.nodes] == ["2001:db8::9"]  # type: ignore[attr-defined]
    four = await source.ask_node(("10.0.0.7", 6881), IH)
    assert [a for a, _ in v4.queries] == [("10.0.0.7", 6881)] and len(v6.queries) == 1
    assert v4.queries[0][1].want == ()  # type: ignore[attr-defined]
    assert [n.ip for n in four.nodes] == ["10.0.0.9"]  # type: ignore[attr-defined]


async def test_lookup_runs_on_both_families_and_merges() -> None:
    v4, v6 = _pair()
    seeds = [NodeInfo(b"\x04" * 20, "10.0.0.3", 1), NodeInfo(b"\x06" * 20, "2001:db8::3", 1), "not a node"]
    found = await DHTPeerSource(v4, v6).lookup(IH, seeds)  # type: ignore[arg-type]
    assert [[s.ip for s in run] for run in v4.lookups] == [["10.0.0.3"]]
    assert [[s.ip for s in run] for run in v6.lookups] == [["2001:db8::3"]]
    assert found == {("10.1.1.1", 1): {("10.0.0.1", 6881), ("2001:db8::6", 6881)},
                     ("10.1.1.2", 2): {("10.0.0.2", 6881)}, ("2001:db8::1", 1): {("2001:db8::5", 6881)}}


async def test_ipv4_only_source_never_sends_to_ipv6() -> None:
    v4, _ = _pair()
    source = DHTPeerSource(v4)  # type: ignore[arg-type]
    reply = await source.ask_node(("2001:db8::7", 6881), IH)
    assert reply.peers == () and reply.nodes == () and not v4.queries
    assert await source.lookup(IH, []) == v4.found and len(v4.lookups) == 1


@dataclass
class SixSwarm:
    infohash: bytes
    nodes: list[SwarmSession]


@pytest.fixture(scope="module")
def six_swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SixSwarm]:
    """Six libtorrent DHT nodes on ::1 only, one of them seeding the torrent: it is on no IPv4 DHT."""
    require_component("libtorrent", lt is not None, "pip install libtorrent")
    require_ipv6_loopback()
    tmp_path = tmp_path_factory.mktemp("six")
    data, torrent, infohash = random_torrent(tmp_path, 150_000)
    with LocalSwarm(tmp_path) as local:
        nodes = [local.start_session("::1", settings={"outgoing_interfaces": ""}) for _ in range(6)]
        local.seed(nodes[0], torrent, data)
        local.start_dht(min_nodes=3, timeout=30, groups=[nodes])
        yield SixSwarm(infohash, nodes)


@pytest.mark.interop
async def test_monitor_finds_and_fetches_a_torrent_only_on_the_ipv6_dht(six_swarm: SixSwarm, tmp_path: Path) -> None:
    engine = make_engine(default_url(tmp_path))
    upgrade_database(engine)
    # every libtorrent node shares the IP ::1: 1 query/s per IP would be 1 query/s to the whole swarm
    config = load_config(environ={}, overrides={
        "dht.allow_local": True, "dht.outbound_rate_per_ip": 50.0, "crawler.sweep_interval": 3.0,
        "crawler.segments": 16, "probe.libtorrent_fallback": False})
    dht4 = config_from_settings(config.dht, bind_host=loopback_address(), bind_port=0, bootstrap=(),
                                state_file=tmp_path / "dht-node.json")
    dht6 = config_from_settings(config.dht, bind_host="::1", bind_port=0, bootstrap=(six_swarm.nodes[3].endpoint,),
                                state_file=tmp_path / "dht-node-ipv6.json")
    mon = Monitor(config, engine, dht4, home=tmp_path, dht6=dht6)
    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mon.run)
                while six_swarm.infohash not in mon.state.checked_ids:
                    await trio.sleep(0.5)
                assert mon.node is not None and mon.node6 is not None and mon.pipeline is not None
                assert mon.node6.own_id != mon.node.own_id  # each family its own BEP 42 id
                assert len(mon.node.table) == 0  # nothing came over IPv4
                t6 = list(mon.node6.table.nodes())
                assert len(t6) >= 3 and all(n.ip == "::1" for n in t6)
                assert mon.pipeline.stats.ok >= 1 and mon.metrics.counters["p2pwatch_metadata_fetched_total"] >= 1
                mon.update_metrics()
                family = {(name, value) for name, value in mon.metrics.counters.items() if "family=" in name}
                sent6 = mon.metrics.counters['p2pwatch_dht_family_queries_sent_total{family="ipv6"}']
                assert sent6 >= 1 and sent6 == mon.node6.stats.queries_out, family
                # the IPv4 node had nobody to ask: every query it sent (none) or got is its own
                assert mon.metrics.counters['p2pwatch_dht_family_responses_total{family="ipv4"}'] == 0, family
                assert mon.metrics.counters['p2pwatch_dht_family_responses_total{family="ipv6"}'] >= 3, family
                assert mon.metrics.counters["p2pwatch_dht_queries_sent_total"] == (
                    mon.node.stats.queries_out + mon.node6.stats.queries_out)
                text = mon.metrics.render()
                assert text.count("# TYPE p2pwatch_dht_family_queries_sent_total counter") == 1
                assert f'p2pwatch_dht_family_queries_sent_total{{family="ipv6"}} {sent6}' in text
                nursery.cancel_scope.cancel()
    finally:
        engine.dispose()
    assert (tmp_path / "dht-node-ipv6.json").exists() and (tmp_path / "dht-node.json").exists()


@pytest.mark.interop
async def test_libtorrent_fallback_reaches_an_ipv6_only_seeder(six_swarm: SixSwarm) -> None:
    """libtorrent connects out from a listen socket of the peer's family: the fallback listens on IPv6 too,
    and an IPv4 ``--bind`` no longer keeps IPv6 connections from leaving (it used to time out)."""
    from p2pwatch.config import ProbeSettings
    from p2pwatch.monitor.metadata_sources import ProbeFetcher

    fetcher = ProbeFetcher(ProbeSettings(libtorrent_timeout=20.0), bind_ip=loopback_address(), bind_ip6="::1",
                           allow_local=True)
    metainfo = await fetcher.fallback(six_swarm.infohash, [six_swarm.nodes[0].endpoint])
    assert metainfo is not None and six_swarm.infohash in metainfo.dht_ids


def test_fallback_listen_and_outgoing_interfaces() -> None:
    from p2pwatch.probe.bulk_fetch import FetchOptions, bulk_settings

    assert bulk_settings(FetchOptions())["listen_interfaces"] == "0.0.0.0:0,[::]:0"
    assert "outgoing_interfaces" not in bulk_settings(FetchOptions(bind_ip="127.0.0.5"))
    pinned = bulk_settings(FetchOptions(bind_ip="127.0.0.5", bind_ip6="::1"))
    assert pinned["listen_interfaces"] == "127.0.0.5:0,[::1]:0" and pinned["outgoing_interfaces"] == "127.0.0.5,::1"
    four = bulk_settings(FetchOptions(bind_ip="127.0.0.5", bind_ip6=None))
    assert four["listen_interfaces"] == "127.0.0.5:0" and four["outgoing_interfaces"] == "127.0.0.5"


def _monitor(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, P2PWATCH_HOME=str(home), **env)
    return subprocess.run([sys.executable, "-m", "p2pwatch", *args], env=environ, text=True, capture_output=True,
                          timeout=120)


@pytest.mark.interop
def test_monitor_command_with_bind6_fetches_from_the_ipv6_dht(six_swarm: SixSwarm, tmp_path: Path) -> None:
    """``p2pwatch monitor --bind6 [::1]:0`` end to end: the command line's IPv6 node bootstraps from the
    IPv6-only libtorrent swarm, discovers the torrent by BEP 51 and fetches its metadata."""
    assert _monitor(tmp_path, "db", "upgrade").returncode == 0
    host, port = six_swarm.nodes[3].endpoint
    out = _monitor(tmp_path, "monitor", "--duration", "25", "--json", "--allow-local",
                   f"--bind={loopback_address()}:0", "--bind6=[::1]:0", f"--bootstrap=[{host}]:{port}",
                   P2PWATCH_DHT_OUTBOUND_RATE_PER_IP="50", P2PWATCH_CRAWLER_SWEEP_INTERVAL="3",
                   P2PWATCH_CRAWLER_SEGMENTS="16", P2PWATCH_PROBE_LIBTORRENT_FALLBACK="false")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["torrents_checked"] >= 1, out.stderr
    assert summary["metrics"]["p2pwatch_metadata_fetched_total"] >= 1, summary["metrics"]
    state6 = json.loads((tmp_path / "dht-node-ipv6.json").read_text())
    assert state6, "the IPv6 node saved no state"


def test_busy_ipv6_port_is_one_line_naming_option_and_key(tmp_path: Path) -> None:
    require_ipv6_loopback()
    assert _monitor(tmp_path, "db", "upgrade").returncode == 0
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as busy:
        busy.bind(("::1", 0))
        port = busy.getsockname()[1]
        out = _monitor(tmp_path, "monitor", "--duration", "5", "--allow-local", f"--bind={loopback_address()}:0",
                       f"--bind6=[::1]:{port}", "--bootstrap=127.0.0.1:9", "--bootstrap=[::1]:9")
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == [f"p2pwatch: error: cannot bind UDP [::1]:{port} for the IPv6 DHT node: the port is already in use "
                     "by another program (perhaps another BitTorrent client); pass --bind6 [IPV6]:PORT with an IPv6 "
                     "address of this machine and a free port (port 0 picks any free one), or set bind6 under [dht] "
                     "in the configuration file (or P2PWATCH_DHT_BIND6; empty runs the IPv4 DHT only)"], lines


def test_bind6_key_must_be_ipv6(tmp_path: Path) -> None:
    assert _monitor(tmp_path, "db", "upgrade").returncode == 0
    out = _monitor(tmp_path, "monitor", "--duration", "1", "--allow-local", "--bootstrap=127.0.0.1:9",
                   P2PWATCH_DHT_BIND6="127.0.0.1:0")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["p2pwatch: error: [dht] bind6 '127.0.0.1:0' is not an IPv6 address "
                                               "(write it as [ADDR]:PORT)"]


async def test_watch_examination_harvests_both_dhts() -> None:
    """The watcher's examine() given both nodes: listings of both families, dht_peers added up."""
    from datetime import UTC, datetime

    from p2pwatch.config import ProbeSettings
    from p2pwatch.investigate.examine import Examination, examine
    from p2pwatch.probe.trackers import TrackerConfig

    class Harvest:
        def __init__(self, peers: dict[tuple[str, int], set[tuple[str, int]]]) -> None:
            self.peers, self.asked = peers, 0

        async def get_peers(self, infohash: bytes, *, scrape: bool = False, seeds: object = None) -> Any:
            self.asked += 1
            return SimpleNamespace(peers={} if scrape else self.peers, closest=[], bf_seeds=[], bf_peers=[])

    v4 = Harvest({("10.1.1.1", 1): {("10.0.0.1", 6881)}})
    v6 = Harvest({("2001:db8::1", 1): {("2001:db8::5", 6881)}, ("2001:db8::2", 2): {("2001:db8::5", 6881)}})
    exam = Examination(IH, datetime.now(UTC))
    await examine(exam, node=[v4, v6], trackers=[], metainfo=None, settings=ProbeSettings(),  # type: ignore[list-item]
                  tracker_config=TrackerConfig(), probe_limit=0, pieces_budget=0)
    assert v4.asked == 2 and v6.asked == 2  # get_peers and the BEP 33 scrape on each DHT
    assert exam.dht_peers == 3
    assert exam.listed == {("10.1.1.1", 1): {("dht", "10.0.0.1:6881")},
                           ("2001:db8::1", 1): {("dht", "2001:db8::5:6881")},
                           ("2001:db8::2", 2): {("dht", "2001:db8::5:6881")}}
