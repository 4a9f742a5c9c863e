"""Tracker probes against a real tracker: Debian's opentracker on a loopback address (UDP and HTTP).

Debian builds opentracker with a whitelist, so the fixture writes the test infohashes to one. opentracker
identifies a peer by its source address and port, so every fake peer announces from its own 127.x.y.z address
(``TrackerConfig.local_address``). It chroots to ``-d DIR`` and drops to ``nobody`` when run as root, so DIR
(and the whitelist in it) must be readable by nobody.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from p2pwatch.cli import main
from p2pwatch.errors import P2PWatchError, TrackerFailure
from p2pwatch.probe import trackers
from p2pwatch.probe.trackers import TrackerConfig, TrackerTiers, make_peer_id
from p2pwatch.probe.udp_tracker import Peer, ScrapeStats
from tests.conftest import free_port, loopback_address, require_binary

pytestmark = pytest.mark.interop

#: Whitelisted infohashes, one block per test so that tests never see each other's peers.
WHITELISTED = [hashlib.sha1(b"p2pwatch test torrent %d" % i).digest() for i in range(400)]
NOT_WHITELISTED = hashlib.sha1(b"never whitelisted").digest()
READY = WHITELISTED[-1]


def block(start: int, count: int = 1) -> list[bytes]:
    return WHITELISTED[start : start + count]


@dataclass(frozen=True)
class Opentracker:
    ip: str
    port: int

    @property
    def udp(self) -> str:
        return f"udp://{self.ip}:{self.port}/announce"

    @property
    def http(self) -> str:
        return f"http://{self.ip}:{self.port}/announce"


def _free_tcp_udp_port(ip: str) -> int:
    for _ in range(50):
        port = free_port(ip, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def _config(**kwargs: object) -> TrackerConfig:
    settings: dict[str, object] = {"timeout": 10.0, "udp_base_timeout": 0.5, "udp_max_retries": 3}
    return TrackerConfig(**(settings | kwargs))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def opentracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opentracker]:
    binary = require_binary("opentracker")
    root: Path = tmp_path_factory.mktemp("opentracker")
    root.chmod(0o755)  # opentracker reads the whitelist after dropping to nobody, inside this directory
    whitelist = root / "whitelist"
    whitelist.write_text("".join(h.hex() + "\n" for h in WHITELISTED))
    whitelist.chmod(0o644)
    ip = loopback_address()
    port = _free_tcp_udp_port(ip)
    config = root / "opentracker.conf"
    config.write_text(f"listen.tcp_udp {ip}:{port}\naccess.whitelist whitelist\n"
                      f"tracker.rootdir {root}\ntracker.user nobody\n")
    log = (root.parent / "opentracker.log").open("wb")
    proc = subprocess.Popen([binary, "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    tracker = Opentracker(ip, port)
    try:
        _wait_until_ready(proc, tracker)
        yield tracker
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_until_ready(proc: subprocess.Popen[bytes], tracker: Opentracker) -> None:
    """Until the HTTP port answers and the whitelist (read by a thread) is loaded."""
    me = loopback_address()  # a readiness-only address, never used by a test
    config = TrackerConfig(timeout=1.0, local_address=me)
    deadline = time.monotonic() + 15
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"opentracker exited with {proc.returncode}")
        try:
            trio.run(lambda: trackers.announce(tracker.http, READY, port=1, numwant=0, config=config))
            return
        except P2PWatchError as exc:
            last = exc
        time.sleep(0.05)
    pytest.fail(f"opentracker did not become ready: {last}")


async def _announce_from(url: str, infohash: bytes, *, port: int,
                         **kwargs: object) -> tuple[str, trackers.AnnounceResult]:
    """Announce as a distinct fake peer: own source address, own peer id."""
    ip = loopback_address()
    result = await trackers.announce(url, infohash, peer_id=make_peer_id(b"-FK0001-"), port=port,
                                     config=_config(local_address=ip), **kwargs)  # type: ignore[arg-type]
    return ip, result


@pytest.mark.parametrize("kind", ["udp", "http"])
async def test_announces_of_several_peers_are_seen_by_another(opentracker: Opentracker, kind: str) -> None:
    url = getattr(opentracker, kind)
    infohash = block(0 if kind == "udp" else 1)[0]
    with trio.fail_after(30):
        fakes = [await _announce_from(url, infohash, port=6000 + i) for i in range(3)]
        _, seen = await _announce_from(url, infohash, port=7000)
    expected = {Peer(ip, 6000 + i) for i, (ip, _) in enumerate(fakes)}
    assert expected <= set(seen.peers)
    assert seen.leechers == 4 and seen.seeders == 0
    assert seen.interval is not None and seen.interval > 0
    assert seen.tracker == url


@pytest.mark.parametrize("kind", ["udp", "http"])
async def test_scrape_of_more_than_74_infohashes(opentracker: Opentracker, kind: str) -> None:
    url = getattr(opentracker, kind)
    hashes = block(10 if kind == "udp" else 200, 150)
    live = [hashes[0], hashes[73], hashes[74], hashes[149]]  # both sides of every batch boundary
    with trio.fail_after(30):
        for i, infohash in enumerate(live):
            await _announce_from(url, infohash, port=6100 + i, left=0)  # a seeder
        stats = await trackers.scrape(url, hashes, config=_config())
    for infohash in live:
        assert stats[infohash] == ScrapeStats(seeders=1, completed=0, leechers=0)
    if kind == "udp":  # every requested infohash has a row, positional
        assert len(stats) == 150
        assert all(stats[h] == ScrapeStats(0, 0, 0) for h in hashes if h not in live)
    else:  # opentracker omits torrents it does not know
        assert set(stats) == set(live)


@pytest.mark.parametrize("kind", ["udp", "http"])
async def test_probe_deregisters_and_leaves_no_phantom_peer(opentracker: Opentracker, kind: str) -> None:
    url = getattr(opentracker, kind)
    infohash = block(2 if kind == "udp" else 3)[0]
    me = loopback_address()
    with trio.fail_after(30):
        other_ip, _ = await _announce_from(url, infohash, port=6200)
        probe = await trackers.probe_tracker(url, infohash, port=6201, config=_config(local_address=me))
        after = await trackers.scrape(url, [infohash], config=_config())
        _, later = await _announce_from(url, infohash, port=6202)
    assert probe.stopped and probe.stop_error is None and probe.scrape_error is None
    assert Peer(other_ip, 6200) in probe.peers
    assert Peer(me, 6201) not in probe.peers  # opentracker lists the announcer itself; we hide it
    assert (probe.seeders, probe.leechers) == (0, 1)  # scraped after deregistering: only the other peer
    assert after[infohash].leechers == 1
    later_peers = {(p.ip, p.port) for p in later.peers}
    assert (other_ip, 6200) in later_peers and (me, 6201) not in later_peers


@pytest.mark.parametrize("kind", ["udp", "http"])
async def test_whitelisted_and_not_whitelisted(opentracker: Opentracker, kind: str) -> None:
    url = getattr(opentracker, kind)
    with trio.fail_after(30):
        ok = await trackers.announce(url, block(4 if kind == "udp" else 5)[0], config=_config(
            local_address=loopback_address()))
        with pytest.raises(TrackerFailure) as refused:
            await trackers.announce(url, NOT_WHITELISTED, config=_config())
        with pytest.raises(TrackerFailure):
            await trackers.probe_tracker(url, NOT_WHITELISTED, config=_config())
    assert ok.interval is not None and ok.leechers == 1
    assert refused.value.tracker == url
    if kind == "http":
        assert "not authorized" in refused.value.reason


async def test_bep12_tiers_skip_dead_trackers_and_promote_the_one_that_answers(
        opentracker: Opentracker) -> None:
    dead_ip = loopback_address()
    dead_udp = f"udp://{dead_ip}:{free_port(dead_ip)}/announce"  # nothing listens: no answer
    dead_http = f"http://{dead_ip}:{free_port(dead_ip, socket.SOCK_STREAM)}/announce"  # connection refused
    tiers = TrackerTiers([[dead_udp], [dead_http, opentracker.udp], [opentracker.http]])
    config = _config(timeout=2.0, udp_base_timeout=0.05, udp_max_retries=1, local_address=loopback_address())
    with trio.fail_after(30):
        result = await trackers.announce_tiers(tiers, block(6)[0], config=config)
    assert result.tracker == opentracker.udp
    assert tiers.tiers[0] == (dead_udp,)
    assert tiers.tiers[1] == (opentracker.udp, dead_http)  # the responsive tracker moved to the front
    assert list(tiers)[-1] == opentracker.http


def test_cli_probe_tracker_json(opentracker: Opentracker) -> None:
    infohash = block(7)[0]
    other = loopback_address()
    trio.run(lambda: trackers.announce(opentracker.udp, infohash, port=6300, left=0,
                                       config=_config(local_address=other)))
    me = loopback_address()
    runner = CliRunner()
    result = runner.invoke(main, ["probe", "tracker", opentracker.http, infohash.hex(), "--json",
                                  "--allow-local", "--bind", me, "--port", "6301", "--timeout", "10"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["seeders"], doc["leechers"], doc["completed"]) == (1, 0, 0)
    assert doc["peers"] == [{"ip": other, "port": 6300}]
    assert doc["stopped"] is True and doc["tracker"] == opentracker.http
    hidden = runner.invoke(main, ["probe", "tracker", opentracker.udp, infohash.hex(), "--bind", me])
    assert hidden.exit_code == 0, hidden.output
    assert "1 loopback/private peers hidden" in hidden.stdout


def test_cli_probe_tracker_errors_are_one_line(opentracker: Opentracker) -> None:
    runner = CliRunner()
    refused = runner.invoke(main, ["probe", "tracker", opentracker.udp, NOT_WHITELISTED.hex(),
                                   "--timeout", "5"])
    assert refused.exit_code == 1
    assert refused.stderr.count("\n") == 1 and "does not serve this infohash" in refused.stderr
    bad = runner.invoke(main, ["probe", "tracker", opentracker.udp, "not-a-hash"])
    assert bad.exit_code == 2 and "not an infohash" in bad.stderr
    scheme = runner.invoke(main, ["probe", "tracker", "ftp://x/announce", READY.hex()])
    assert scheme.exit_code == 2 and "udp://, http:// or https://" in scheme.stderr
