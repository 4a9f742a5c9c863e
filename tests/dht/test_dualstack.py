"""Dual-stack DHT (BEP 32) against real libtorrent nodes: six on 127.x (IPv4 DHT), six on ``::1`` (IPv6 DHT).

One torrent is seeded by an IPv4 session and by an IPv6 session. p2pwatch's dual-stack node (an IPv4 and an
IPv6 node, each with its own socket, routing table and id) must find the IPv4 seeder on the IPv4 DHT and
the IPv6 seeder on the IPv6 DHT, with each routing table holding only its own family.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from p2pwatch.dht import krpc
from p2pwatch.dht.dualstack import open_dual_stack
from p2pwatch.dht.node_types import DHTConfig
from p2pwatch.errors import ConfigError
from tests.conftest import loopback_address, require_component, require_ipv6_loopback
from tests.dht_helpers import node_config

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, SwarmSession, random_torrent
except ImportError:  # pragma: no cover - reported by require_component below
    lt = None

pytestmark = pytest.mark.interop


@dataclass
class DualSwarm:
    infohash: bytes
    v4: list[SwarmSession]
    v6: list[SwarmSession]


@pytest.fixture(scope="module")
def dual_swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DualSwarm]:
    """Six libtorrent nodes on 127.x and six on ::1, one seeder of the torrent in each family."""
    require_component("libtorrent", lt is not None, "pip install libtorrent")
    require_ipv6_loopback()
    tmp_path = tmp_path_factory.mktemp("dualstack")
    data, torrent, infohash = random_torrent(tmp_path, 150_000)
    with LocalSwarm(tmp_path) as local:
        v4 = [local.start_session(loopback_address()) for _ in range(6)]
        v6 = [local.start_session("::1", settings={"outgoing_interfaces": ""}) for _ in range(6)]
        local.seed(v4[0], torrent, data)
        local.seed(v6[0], torrent, data)
        local.start_dht(min_nodes=3, timeout=30, groups=[v4, v6])
        yield DualSwarm(infohash, v4, v6)


async def test_dual_stack_lookups_on_both_dhts(dual_swarm: DualSwarm) -> None:
    infohash, v4, v6 = dual_swarm.infohash, dual_swarm.v4, dual_swarm.v6
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


def test_dht_peers_cli_searches_both_dhts(dual_swarm: DualSwarm, tmp_path: Path) -> None:
    """``p2pwatch dht peers --bind6``: one command, the IPv4 and the IPv6 DHT, peers of both families."""
    want4, want6 = dual_swarm.v4[0].endpoint, dual_swarm.v6[0].endpoint
    boot4, boot6 = dual_swarm.v4[3].endpoint, dual_swarm.v6[3].endpoint
    args = [sys.executable, "-m", "p2pwatch", "dht", "peers", dual_swarm.infohash.hex(), "--allow-local",
            f"--bind={loopback_address()}", "--bind6=[::1]:0", f"--bootstrap={boot4[0]}:{boot4[1]}",
            f"--bootstrap=[::1]:{boot6[1]}", "--timeout=20"]
    env = dict(os.environ, P2PWATCH_HOME=str(tmp_path))
    for _attempt in range(20):  # libtorrent announces asynchronously
        text = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
        assert text.returncode == 0, text.stderr
        if f"[::1]:{want6[1]}  reported by [::1]:" in text.stdout and f"{want4[0]}:{want4[1]}  reported by" \
                in text.stdout:
            break
    assert f"[::1]:{want6[1]}  reported by [::1]:" in text.stdout, text.stdout
    assert f"{want4[0]}:{want4[1]}  reported by 127." in text.stdout, text.stdout
    listed = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    peers = {(p["ip"], p["port"]): p["reported_by"] for p in json.loads(listed.stdout)}
    assert want4 in peers and want6 in peers
    assert all(r.startswith("[::1]:") for r in peers[want6])  # reported on the IPv6 DHT
    assert all(not r.startswith("[") for r in peers[want4])


def test_bind6_must_be_ipv6(tmp_path: Path) -> None:
    env = dict(os.environ, P2PWATCH_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "p2pwatch", "dht", "peers", "00" * 20, "--allow-local",
                          "--bind6=127.0.0.1:0", "--bootstrap=127.0.0.1:9"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["p2pwatch: error: --bind6 '127.0.0.1:0' is not an IPv6 address "
                                               "(write it as [ADDR]:PORT)"]


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
