"""Streaming get_peers against real libtorrent nodes with a dead contact in the closest set (issue 12).

Sixteen libtorrent sessions on their own 127.x addresses, three seeding one torrent; a node whose id is the
infohash but for one bit joins, is listed by the libtorrent nodes, then goes silent (its port bound, never
read). p2pwatch's streaming lookup must list every seeder, query the dead node (it is in the closest set)
and end without waiting for its full query timeout: the dead node is still only *slow* at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pwatch.dht.node import PeersFound, open_dht_node
from p2pwatch.dht.traversal import QueryState
from tests.conftest import loopback_address, require_component
from tests.dht_helpers import node_config

try:
    import libtorrent as lt

    from p2pwatch.testswarm.deadcontact import dead_id_for, plant_dead_contact
    from p2pwatch.testswarm.localswarm import LocalSwarm, random_torrent
except ImportError:  # pragma: no cover - reported by require_component below
    lt = None

pytestmark = pytest.mark.interop


async def test_streaming_get_peers_with_a_dead_contact(tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None, "pip install libtorrent")
    data, torrent, infohash = random_torrent(tmp_path, 200_000)
    with LocalSwarm(tmp_path) as local:
        sessions = [local.start_session(loopback_address()) for _ in range(16)]
        seeders = sessions[:3]
        for s in seeders:
            local.seed(s, torrent, data)
        await trio.to_thread.run_sync(lambda: local.start_dht(min_nodes=8, timeout=30))
        swarm = [s.endpoint for s in sessions]
        silent = await plant_dead_contact(loopback_address(), infohash, swarm)
        try:
            want = {s.endpoint for s in seeders}
            bootstrap = (sessions[8].endpoint,)
            with trio.fail_after(120):
                for _attempt in range(30):  # libtorrent announces asynchronously: retry until all are stored
                    config = node_config(bootstrap=bootstrap, query_timeout=30.0, short_timeout=0.5)
                    async with open_dht_node(config, wait_bootstrap=False) as node, \
                            node.open_get_peers(infohash) as stream:
                        streamed: set[tuple[str, int]] = set()
                        async for event in stream:
                            if isinstance(event, PeersFound):
                                streamed.update(event.new)
                        result = stream.result
                        dead_state = stream.traversal.state_of(dead_id_for(infohash))
                    if want <= set(result.peers):
                        break
                    await trio.sleep(1.0)
            assert want <= set(result.peers), f"seeders missing: {want - set(result.peers)}"
            assert streamed == set(result.peers)  # everything in the result was streamed as it came
            assert all(result.peers[p] <= set(swarm) for p in want)  # provenance: libtorrent nodes said so
            # the dead node was among the closest and asked; the lookup ended long before its 30 s timeout
            assert dead_state is QueryState.SLOW
            # the result holds responders only (a loaded machine may leave a live node slow too)
            assert {n.addr for n in result.closest} <= set(swarm)
            assert dead_id_for(infohash) not in [n.id for n in result.closest]
        finally:
            silent.close()
