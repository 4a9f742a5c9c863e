"""Dual-stack DHT (BEP 32) against real libtorrent nodes: six on 127.x (IPv4 DHT), six on ``::1`` (IPv6 DHT).

One torrent is seeded by an IPv4 session and by an IPv6 session. p2pwatch's dual-stack node (an IPv4 and an
IPv6 node, each with its own socket, routing table and id) must find the IPv4 seeder on the IPv4 DHT and
the IPv6 seeder on the IPv6 DHT, with each routing table holding only its own family.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
import trio

from p2pwatch.dht import krpc
from p2pwatch.dht.dualstack import open_dual_stack
from p2pwatch.dht.node_types import DHTConfig
from p2pwatch.errors import ConfigError
from tests.conftest import loopback_address, require_component
from tests.dht_helpers import node_config

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, SwarmSession, random_torrent
except ImportError:  # pragma: no cover - reported by require_component below
    lt = None

pytestmark = pytest.mark.interop


def _has_ipv6_loopback() -> bool:
    out = subprocess.run(["ip", "-6", "addr", "show", "lo"], capture_output=True, text=True, check=False).stdout
    return "::1/128" in out


def _wire(group: list[SwarmSession]) -> None:
    for a in group:
        for b in group:
            if a is not b:
                a.session.add_dht_node(b.endpoint)


async def test_dual_stack_lookups_on_both_dhts(tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None, "pip install libtorrent")
    require_component("IPv6 loopback ::1", _has_ipv6_loopback(), "enable IPv6 on lo")
    data, torrent, infohash = random_torrent(tmp_path, 150_000)
    with LocalSwarm(tmp_path) as local:
        v4 = [local.start_session(loopback_address()) for _ in range(6)]
        v6 = [local.start_session("::1", settings={"outgoing_interfaces": ""}) for _ in range(6)]
        local.seed(v4[0], torrent, data)
        local.seed(v6[0], torrent, data)
        _wire(v4)
        _wire(v6)
        await trio.to_thread.run_sync(lambda: local.wait_dht_ready(min_nodes=3, timeout=30))
        await trio.to_thread.run_sync(lambda: local.wait_seeding(timeout=30))
        local.force_announce()
        config4 = node_config(bootstrap=(v4[3].endpoint,))
        config6 = node_config(bootstrap=(v6[3].endpoint,), ip="::1")
        want4, want6 = v4[0].endpoint, v6[0].endpoint
        with trio.fail_after(90):
            async with open_dual_stack(config4, config6) as pair:
                assert pair.v4 is not None and pair.v6 is not None
                assert pair.v4.own_id != pair.v6.own_id
                assert pair.v6.sock.getsockname()[0] == "::1"
                for _attempt in range(40):  # libtorrent announces asynchronously
                    found = await pair.get_peers(infohash)
                    if {want4, want6} <= set(found.peers):
                        break
                    await trio.sleep(0.5)
                assert want4 in found.peers and want6 in found.peers, found.peers
                assert found.v4 is not None and found.v6 is not None
                # each family's DHT lists only its own family's peers, reported by its own nodes
                assert all(":" not in ip for ip, _ in found.v4.peers)
                assert all(":" in ip for ip, _ in found.v6.peers)
                assert found.peers[want6] <= {s.endpoint for s in v6}
                # two routing tables, each of its own family, both filled from libtorrent
                t4, t6 = list(pair.v4.table.nodes()), list(pair.v6.table.nodes())
                assert len(t4) >= 3 and len(t6) >= 3
                assert all(ipaddress.ip_address(n.ip).version == 4 for n in t4)
                assert all(n.ip == "::1" for n in t6)
                # a libtorrent IPv6 node answers the IPv6 node's find_node (want n6) with nodes6 only
                six = pair.v6
                reply = await six.query(v6[2].endpoint, lambda t: krpc.FindNode(t, six.own_id, infohash,
                                                                                want=(b"n6",)))
                assert reply.nodes6 and all(n.ip == "::1" for n in reply.nodes6) and not reply.nodes


def test_dual_stack_rejects_crossed_families() -> None:
    async def run(c4: DHTConfig | None, c6: DHTConfig | None) -> None:
        async with open_dual_stack(c4, c6, bootstrap=False):
            pass

    with pytest.raises(ConfigError):
        trio.run(run, node_config(ip="::1"), None)
    with pytest.raises(ConfigError):
        trio.run(run, None, node_config(bootstrap=(("127.0.0.1", 1),), ip="::1"))
    with pytest.raises(ConfigError):
        trio.run(run, None, None)
