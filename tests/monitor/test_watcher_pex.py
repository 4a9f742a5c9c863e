"""The watcher and BEP 11 end to end: a real opentracker lists ONE seeder of a meshed libtorrent swarm; the
watcher probes it, records the seeders it lists over ut_pex as level-0 listings ("pex" via that seeder), probes
them to level 3, and ``peers`` shows where each came from. When that seeder has left, the next check still
reaches the others through the PEX listings it remembers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from sqlalchemy import Engine, select, update

from p2pwatch.cli.reports import peer_rows, source_text
from p2pwatch.config import MonitorConfig
from p2pwatch.errors import P2PWatchError
from p2pwatch.investigate.geoip import GeoLookup
from p2pwatch.investigate.registry import upsert_torrent
from p2pwatch.monitor.alerts import Alerter
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.monitor.watcher import Watcher
from p2pwatch.probe import trackers
from p2pwatch.probe.trackers import TrackerConfig
from p2pwatch.storage.claims import ensure_watch
from p2pwatch.storage.db import make_engine, upgrade_database, writer_sessionmaker
from p2pwatch.storage.models import Observation, Torrent, Watch
from p2pwatch.storage.writer import open_writer
from p2pwatch.torrent.metainfo import parse_torrent
from tests.conftest import free_port, loopback_address, require_binary, require_component
from tests.pex_swarm import PexSwarm, pex_swarm

try:
    import libtorrent as lt
except ImportError:  # pragma: no cover - depends on the machine
    lt = None

pytestmark = pytest.mark.interop


@asynccontextmanager
async def opentracker(root: Path, infohash: bytes) -> AsyncIterator[str]:
    """Debian's opentracker (built with a whitelist) on its own loopback address; yields its HTTP URL."""
    binary = require_binary("opentracker")
    root.mkdir()
    root.chmod(0o755)  # it reads the whitelist after dropping to nobody, inside this directory
    (root / "whitelist").write_text(infohash.hex() + "\n")
    (root / "whitelist").chmod(0o644)
    ip = loopback_address()
    port = free_port(ip)
    (root / "opentracker.conf").write_text(f"listen.tcp_udp {ip}:{port}\naccess.whitelist whitelist\n"
                                           f"tracker.rootdir {root}\ntracker.user nobody\n")
    url = f"http://{ip}:{port}/announce"
    proc = subprocess.Popen([binary, "-f", str(root / "opentracker.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        ready = TrackerConfig(timeout=1.0, local_address=loopback_address())
        deadline = time.monotonic() + 15
        while True:
            try:
                await trackers.announce(url, infohash, port=1, numwant=0, config=ready)  # once the whitelist is read
                break
            except P2PWatchError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("opentracker did not start")
                await trio.sleep(0.05)
        await trackers.announce(url, infohash, port=1, numwant=0, event=trackers.AnnounceEvent.STOPPED, config=ready)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _config(url: str) -> MonitorConfig:
    config = MonitorConfig()
    config.watcher.trackers = [url]
    config.dht.allow_local = True
    config.probe.pex_wait = 20.0
    return config


async def _watch(engine: Engine, swarm: PexSwarm, url: str) -> int:
    """Announce the first seeder (from its address, with its listen port) and watch the torrent; its id."""
    first = swarm.nodes[0]
    await trackers.announce(url, swarm.infohash, port=first.port, config=TrackerConfig(local_address=first.ip))
    with writer_sessionmaker(engine)() as session:
        torrent = upsert_torrent(session, swarm.infohash, metainfo=parse_torrent(swarm.torrent))
        ensure_watch(session, torrent.id, datetime.now(UTC))
        session.commit()
        return torrent.id


async def _run_watcher_once(engine: Engine, config: MonitorConfig) -> None:
    """Make every watch due, run the watcher until it has examined one torrent, stop it."""
    with writer_sessionmaker(engine)() as session:
        session.execute(update(Watch).values(next_check_at=datetime.now(UTC)))
        session.commit()
    metrics = Metrics()
    with trio.fail_after(120):
        async with open_writer(engine) as writer, trio.open_nursery() as nursery:
            watcher = Watcher(config, writer, None, worker_id="pex-test", alerter=Alerter(), metrics=metrics,
                              geo=GeoLookup(None), bind_ip=None, poll=0.1)
            nursery.start_soon(watcher.run)
            while not metrics.counters["p2pwatch_examinations_total"]:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


def _observed(engine: Engine, torrent_id: int) -> list[tuple[str, int, int, str, str]]:
    with writer_sessionmaker(engine)() as session:
        return [tuple(r) for r in session.execute(  # type: ignore[misc]
            select(Observation.ip, Observation.port, Observation.level, Observation.source, Observation.reporter)
            .where(Observation.torrent_id == torrent_id))]


async def test_watcher_reaches_the_seeders_it_hears_of_by_pex(tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None)
    engine = make_engine(f"sqlite:///{tmp_path / 'p2pwatch.db'}")
    upgrade_database(engine)
    with pex_swarm(tmp_path / "swarm", count=4) as swarm:
        first = swarm.nodes[0]
        async with opentracker(tmp_path / "tracker", swarm.infohash) as url:
            torrent_id = await _watch(engine, swarm, url)
            await _run_watcher_once(engine, _config(url))
            after_first = _observed(engine, torrent_id)
            # the first seeder leaves the swarm and the tracker: only what PEX told us leads to the others now
            first.session.remove_torrent(first.torrents[0])
            await trackers.announce(url, swarm.infohash, port=first.port, event=trackers.AnnounceEvent.STOPPED,
                                    config=TrackerConfig(local_address=first.ip))
            await _run_watcher_once(engine, _config(url))
    after_second = _observed(engine, torrent_id)
    reporter = f"{first.ip}:{first.port}"
    with writer_sessionmaker(engine)() as session:
        stored = session.get(Torrent, torrent_id)
        assert stored is not None
        peers = {(r["ip"], r["port"]): r for r in peer_rows(session, stored, 0)}
    engine.dispose()
    observed = set(after_first)
    assert (first.ip, first.port, 0, "tracker", url) in observed
    assert (first.ip, first.port, 3, "probe", "p2pwatch") in observed
    for ip, port in swarm.endpoints[1:]:
        assert (ip, port, 0, "pex", reporter) in observed, observed  # listed by PEX, the reporter named
        assert (ip, port, 3, "probe", "p2pwatch") in observed, observed  # and reached: a verified piece
        assert peers[(ip, port)]["level"] == 3
        assert reporter in peers[(ip, port)]["pex_via"]
        text = source_text(peers[(ip, port)], shown=3)  # every seeder may PEX the others: any order
        assert text.startswith("pex via ") and reporter in text.split(",probe")[0], text
        # the second check reached them again though nobody listed them on a tracker or the DHT
        assert after_second.count((ip, port, 3, "probe", "p2pwatch")) == 2, after_second
    assert after_second.count((first.ip, first.port, 3, "probe", "p2pwatch")) == 1
    assert peers[first.endpoint]["level"] == 3 and "tracker" in peers[first.endpoint]["sources"]
