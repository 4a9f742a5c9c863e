"""The monitor end to end on the demo swarm (real libtorrent DHT nodes and seeders on loopback).

* discovery by crawling alone (no watch list), every registered copy confirmed with the expected method and
  no decoy; level 3 for the real seeders, level 0 only for the listed-but-absent address; the exported
  bundle verifies;
* SIGKILL in the middle of a run, then a restart: nothing reported committed is lost, the chain verifies,
  the node id and the watch list survive, and the restarted monitor keeps recording;
* SIGTERM stops it cleanly (exit 0, DHT state saved).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import func, select

from p2pwatch.match.media import ffmpeg_available
from p2pwatch.storage.db import default_url, make_engine, writer_sessionmaker
from p2pwatch.storage.models import Match, Observation, Watch
from p2pwatch.storage.reading import verify_chain
from p2pwatch.testswarm.demo import run_demo
from p2pwatch.testswarm.demoswarm import DemoContent, start_demo_swarm, stop_demo_swarm
from tests.conftest import require_component

try:
    import libtorrent as lt
except ImportError:  # pragma: no cover
    lt = None

pytestmark = pytest.mark.interop


def _require() -> None:
    require_component("libtorrent", lt is not None)
    require_component("ffmpeg", ffmpeg_available(), "pip install imageio-ffmpeg")


async def test_demo_run_confirms_every_copy_and_no_decoy(tmp_path: Path) -> None:
    _require()
    result = await run_demo(tmp_path, Console(file=open(os.devnull, "w")), timeout=120)  # noqa: SIM115
    found = {m["label"]: m for m in result.matches}
    assert set(found) == {"exact", "renamed", "reencoded", "hybrid", "v2"}, result.matches
    for match in found.values():
        assert match["method"] == match["expected"], match
    assert found["exact"]["bytes_fetched"] == 0
    assert 0 < found["renamed"]["bytes_fetched"] <= 64 * 1024 * 101 // 100  # one 64 KiB piece
    assert "decoy" not in found
    # every torrent went through triage; the copies were confirmed behind it (issue 13)
    assert result.triage.get("p2pwatch_triage_confirmed_total", 0) >= 3, result.triage
    assert result.triage.get("p2pwatch_triage_queued_total", 0) >= 3, result.triage
    for label in ("exact", "renamed", "reencoded", "hybrid", "v2"):
        levels = {f"{p['ip']}:{p['port']}": p["level"] for p in result.peers[label]}
        assert levels and all(v == 3 for k, v in levels.items() if not k.startswith("127.0.44.200")), levels
        assert result.status[label] == "alive"
    absent = [p for p in result.peers["exact"] if p["ip"] == "127.0.44.200"]
    assert [(p["port"], p["level"], p["sources"]) for p in absent] == [(9, 0, ["dht"])]
    assert result.verified and result.bundle is not None and result.bundle.exists()
    # the hybrid copy's metadata came over BEP 9: exported as its info dict alone, the layer it lacks listed
    hybrid = result.exported["hybrid"]
    assert (hybrid["version"], hybrid["metainfo"]) == ("hybrid", "info-dict"), hybrid
    assert hybrid["file"].endswith(".info") and hybrid["piece_layers"]["missing"] == ["clip_0412_hd.mp4"]
    assert result.exported["exact"]["metainfo"] == "info-dict"  # a v1 copy found on the DHT: the same
    # the v2 copy's seeders were proven only after the probes fetched its piece layer (BEP 52 hash requests),
    # which the store kept: exported as a .torrent holding it
    v2 = result.exported["v2"]
    assert (v2["version"], v2["metainfo"]) == ("v2", "torrent"), v2
    assert v2["piece_layers"] == {"present": ["clip_0412_v2.mp4"], "missing": []}


def _cli(home: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    # a 10-node swarm: at the default 1 query/s per IP the crawler's sweeps would starve the watcher's lookups
    env = dict(os.environ, P2PWATCH_HOME=str(home), P2PWATCH_CRAWLER_SWEEP_INTERVAL="5",
               P2PWATCH_DHT_OUTBOUND_RATE_PER_IP="20")
    return subprocess.Popen([sys.executable, "-m", "p2pwatch", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, P2PWATCH_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "p2pwatch", *args], env=env, text=True, capture_output=True,
                          timeout=120)


def _counts(home: Path) -> tuple[int, int, int]:
    engine = make_engine(default_url(home))
    try:
        with writer_sessionmaker(engine)() as s:
            return (s.scalar(select(func.count()).select_from(Match)) or 0,
                    s.scalar(select(func.count()).select_from(Observation)) or 0,
                    s.scalar(select(func.count()).select_from(Watch)) or 0)
    finally:
        engine.dispose()


def test_sigkill_then_restart_resumes_without_loss(tmp_path: Path) -> None:
    _require()
    content = DemoContent.generate(tmp_path / "content")
    home = tmp_path / "home"
    assert _run(home, "db", "upgrade").returncode == 0
    assert _run(home, "case", "create", "k").returncode == 0
    assert _run(home, "register", "--case", "k", str(content.registered)).returncode == 0
    demo = start_demo_swarm(content, prefix="127.0.45")
    try:
        net = [*(f"--bootstrap={b}" for b in demo.bootstrap), "--allow-local", "--bind=127.0.45.100:0"]
        first = _cli(home, "monitor", "--log-format", "json", *net)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _counts(home)[1] < 5:
            time.sleep(0.5)
        matches, observations, _watches = _counts(home)
        assert matches >= 1 and observations >= 5, first.stderr.read() if first.poll() is not None else ""
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        after_kill = _counts(home)
        engine = make_engine(default_url(home))
        with writer_sessionmaker(engine)() as s:
            report = verify_chain(s)
        engine.dispose()
        assert report.ok, report
        assert after_kill[1] >= observations  # everything committed before the kill is still there
        state = json.loads((home / "dht-node.json").read_text()) if (home / "dht-node.json").exists() else None
        second = _cli(home, "monitor", "--duration", "25", "--json", *net)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        summary = json.loads(out)
        final = _counts(home)
        assert final[2] >= after_kill[2] and final[1] > after_kill[1], (after_kill, final, summary)
        engine = make_engine(default_url(home))
        with writer_sessionmaker(engine)() as s:
            assert verify_chain(s).ok
        engine.dispose()
        saved = json.loads((home / "dht-node.json").read_text())
        if state is not None:
            assert saved["node_id"] == state["node_id"]  # the same node id after a restart
        # SIGTERM: a clean stop, state saved
        third = _cli(home, "monitor", *net)
        time.sleep(6)
        third.send_signal(signal.SIGTERM)
        _, err = third.communicate(timeout=60)
        assert third.returncode == 0, err
        assert json.loads((home / "dht-node.json").read_text())["node_id"] == saved["node_id"]
    finally:
        stop_demo_swarm(demo)
