"""A loopback swarm for the BEP 11 tests: libtorrent seeders of one torrent, each on its own 127.x address,
all connected to each other, so that libtorrent's ut_pex plugin (on by default) lists the others to whoever
connects.

Two libtorrent behaviours matter (src/ut_pex.cpp, settings_pack):

* ``close_redundant_connections`` (default on) closes seed-to-seed connections, and a seeder with no other
  connection sends no PEX at all (the plugin needs more than one peer), so it is turned off here;
* a new connection gets its first ut_pex message at the plugin's next one-second tick (then one a minute),
  rate-limited to one message per 0.1-3 s across the process, so the probe's ``pex`` wait of a few seconds
  covers it; the 60 s interval only spaces the later messages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import loopback_address

PEX_SWARM_SETTINGS: dict[str, Any] = {
    "close_redundant_connections": False,
    "allow_multiple_connections_per_ip": True,
}


@dataclass
class PexSwarm:
    nodes: list[Any]  # p2pwatch.testswarm.localswarm.SwarmSession
    torrent: bytes
    infohash: bytes

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [n.endpoint for n in self.nodes]


@contextmanager
def pex_swarm(workdir: Path, count: int = 4, size: int = 200_000) -> Iterator[PexSwarm]:
    """``count`` seeders, fully meshed (every pair connected) before the block starts."""
    from p2pwatch.testswarm.localswarm import LocalSwarm, random_torrent

    workdir.mkdir(parents=True, exist_ok=True)
    data, torrent, infohash = random_torrent(workdir, size)
    with LocalSwarm(workdir, extra_settings=PEX_SWARM_SETTINGS) as swarm:
        nodes = [swarm.start_session(loopback_address(), dht=False) for _ in range(count)]
        for node in nodes:
            swarm.seed(node, torrent, data)
        swarm.wait_seeding()
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                a.torrents[0].connect_peer(b.endpoint)
        deadline = time.monotonic() + 30
        while not all(n.torrents[0].status().num_peers >= count - 1 for n in nodes):
            if time.monotonic() > deadline:
                peers = [n.torrents[0].status().num_peers for n in nodes]
                raise AssertionError(f"libtorrent seeders did not connect to each other: {peers}")
            time.sleep(0.05)
        yield PexSwarm(nodes, torrent, infohash)
