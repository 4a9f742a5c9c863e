"""Loopback interop of p2pwatch's DHT node with real libtorrent sessions (software no one here wrote).

Nine libtorrent sessions with DHT on, each on its own 127.0.0.x address, six of them seeding three
torrents (v1 single-file, v1 multi-file, hybrid v1+v2). p2pwatch's node must
(a) find every seeder of every torrent via get_peers,
(b) discover every seeded infohash via BEP 51 sample_infohashes,
(c) be used by libtorrent: a peer announced through our node is found by libtorrent's own dht_get_peers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from p2pwatch.dht.crawler import Crawler, DiscoveredInfohash, Discovery
from p2pwatch.dht.node import open_dht_node
from tests.conftest import loopback_address, require_component
from tests.dht_helpers import node_config

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, SwarmSession, create_torrent, pop_alerts
except ImportError:  # pragma: no cover - reported by require_component below
    lt = None

pytestmark = pytest.mark.interop


def _infohashes(torrent: bytes) -> list[bytes]:
    """The DHT ids libtorrent announces for a torrent: v1, and the truncated v2 for hybrids."""
    ti = lt.torrent_info(lt.bdecode(torrent))
    hashes = ti.info_hashes()
    out = []
    if hashes.has_v1():
        out.append(bytes(hashes.v1.to_bytes()))
    if hashes.has_v2():
        out.append(bytes(hashes.v2.to_bytes())[:20])
    return out


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[tuple[LocalSwarm, dict[bytes, list[SwarmSession]]]]:
    require_component("libtorrent", lt is not None, "pip install libtorrent")
    data = tmp_path / "data"
    data.mkdir()
    (data / "single.bin").write_bytes(os.urandom(300_000))
    multi = data / "album"
    multi.mkdir()
    for i in range(3):
        (multi / f"part{i}.bin").write_bytes(os.urandom(70_000 + i))
    (data / "hybrid.bin").write_bytes(os.urandom(200_000))
    torrents = [
        create_torrent(data / "single.bin", version="v1"),
        create_torrent(multi, version="v1"),
        create_torrent(data / "hybrid.bin", version="hybrid"),
    ]
    seeders_of = {0: [0, 1, 2], 1: [3, 4], 2: [5]}
    with LocalSwarm(tmp_path) as local:
        sessions = [local.start_session(loopback_address()) for _ in range(9)]
        expected: dict[bytes, list[SwarmSession]] = {}
        for t_index, seeders in seeders_of.items():
            for s_index in seeders:
                local.seed(sessions[s_index], torrents[t_index], data)
            for infohash in _infohashes(torrents[t_index]):
                expected[infohash] = [sessions[i] for i in seeders]
        local.start_dht(min_nodes=4, timeout=30)
        yield local, expected



async def test_libtorrent_interop(swarm: tuple[LocalSwarm, dict[bytes, list[SwarmSession]]]) -> None:
    local, expected = swarm
    bootstrap = tuple(s.endpoint for s in local.sessions[:3])
    with trio.fail_after(150):
        async with open_dht_node(node_config(bootstrap=bootstrap, query_timeout=1.5)) as node:
            assert len(node.table) >= 3

            # (a) every seeder of every torrent via get_peers (libtorrent announces asynchronously: retry)
            missing: dict[bytes, set[tuple[str, int]]] = {}
            for _attempt in range(40):
                missing = {}
                for infohash, seeders in expected.items():
                    found = await node.get_peers(infohash)
                    want = {s.endpoint for s in seeders}
                    lacking = want - set(found.peers)
                    if lacking:
                        missing[infohash] = lacking
                    else:
                        for peer in want:  # provenance: every listing names libtorrent nodes that said so
                            assert found.peers[peer] <= {s.endpoint for s in local.sessions}
                if not missing:
                    break
                await trio.sleep(1.0)
            assert not missing, f"seeders not found via get_peers: {missing}"

            # (b) every seeded infohash via BEP 51 sample_infohashes
            send, receive = trio.open_memory_channel[Discovery](10_000)
            crawler = Crawler(node, send, segments=8, passive=False)
            discovered: set[bytes] = set()
            for _attempt in range(20):
                for target in crawler.sweep_targets():
                    await crawler.sample_once(target)
                while True:
                    try:
                        event = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    assert isinstance(event, DiscoveredInfohash)
                    assert event.message == "sample_infohashes"
                    discovered.add(event.infohash)
                if set(expected) <= discovered:
                    break
                crawler._next_sample.clear()  # libtorrent's interval here is 0; re-ask in the next sweep
                await trio.sleep(0.5)
            assert set(expected) <= discovered, f"not sampled: {[h.hex() for h in set(expected) - discovered]}"
            assert crawler.stats.nodes_sampled >= 5

            # (c) a peer announced through our node is found by libtorrent's own dht_get_peers
            fake_infohash = os.urandom(20)
            accepted = await node.announce_peer(fake_infohash, port=45678, implied_port=False)
            assert accepted >= 3
            asker = local.sessions[-1]
            seen: set[tuple[str, int]] = set()
            for _attempt in range(20):
                asker.session.dht_get_peers(lt.sha1_hash(fake_infohash))
                for _ in range(30):
                    await trio.sleep(0.1)
                    for alert in pop_alerts(asker):
                        if isinstance(alert, lt.dht_get_peers_reply_alert) and \
                                bytes(alert.info_hash.to_bytes()) == fake_infohash:
                            seen.update((ip, port) for ip, port in alert.peers())
                    if (node.address[0], 45678) in seen:
                        break
                if (node.address[0], 45678) in seen:
                    break
            assert (node.address[0], 45678) in seen, f"libtorrent found {seen}"
            # and libtorrent sessions answered (and sent) real traffic to us
            assert node.stats.responses > 20
