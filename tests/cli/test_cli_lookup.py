"""``p2pwatch lookup`` end to end against real libtorrent DHT nodes and seeders on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from p2pwatch.torrent.maker import make_v1_torrent
from tests.conftest import loopback_address, require_component

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm
except ImportError:  # pragma: no cover
    lt = None

pytestmark = pytest.mark.interop


def _cli(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, P2PWATCH_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "p2pwatch", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_lookup_finds_peers_metadata_match_and_records(tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None)
    home = tmp_path / "home"
    original = tmp_path / "private.bin"
    original.write_bytes(os.urandom(200_000))
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "a.txt").write_bytes(b"readme " * 300)
    shutil.copy(original, pack / "holiday.bin")
    torrent = make_v1_torrent("pack", [("a.txt", pack / "a.txt"), ("holiday.bin", pack / "holiday.bin")],
                              piece_length=32768)
    infohash = str(lt.torrent_info(lt.bdecode(torrent)).info_hashes().v1)
    assert _cli(home, "db", "upgrade").returncode == 0
    assert _cli(home, "case", "create", "c1").returncode == 0
    assert _cli(home, "register", "--case", "c1", str(original)).returncode == 0
    with LocalSwarm(tmp_path) as swarm:
        sessions = [swarm.start_session(loopback_address()) for _ in range(8)]
        for s in sessions[:2]:
            swarm.seed(s, torrent, tmp_path)
        swarm.start_dht(min_nodes=4)
        net = [f"--bootstrap={sessions[4].ip}:{sessions[4].port}", "--allow-local", f"--bind={loopback_address()}"]
        doc: dict[str, object] = {}
        for _ in range(5):
            proc = _cli(home, "lookup", f"magnet:?xt=urn:btih:{infohash}", "--record", "--json", "--timeout", "60",
                        *net)
            assert proc.returncode == 0, proc.stderr
            doc = json.loads(proc.stdout)
            if len(doc["peers"]) >= 2:  # type: ignore[arg-type]
                break
    seeders = {f"{s.ip}:{s.port}" for s in sessions[:2]}
    assert doc["name"] == "pack", doc
    assert doc["dht_scrape"]["seeders"] >= 1  # type: ignore[index]
    assert [f["path"] for f in doc["files"]] == ["pack/a.txt", "pack/holiday.bin"]  # type: ignore[index]
    assert {f"{p['ip']}:{p['port']}" for p in doc["peers"]} >= seeders  # type: ignore[union-attr]
    levels = {f"{p['ip']}:{p['port']}": p["level"] for p in doc["peers"]}  # type: ignore[union-attr]
    assert all(levels[s] == 3 for s in seeders), levels
    assert [(m["method"], m["file"]) for m in doc["matches"]] == [("exact-piece", "pack/holiday.bin")]  # type: ignore
    assert doc["recorded_observations"] >= 4  # type: ignore[operator]
    listed = json.loads(_cli(home, "matches", "--json").stdout)
    assert [(m["case"], m["infohash"], m["method"]) for m in listed] == [("c1", infohash, "exact-piece")]
    # peers and timeline read back what was recorded; export + verify close the loop
    peers = json.loads(_cli(home, "peers", infohash, "--min-level", "3", "--json").stdout)
    assert {f"{p['ip']}:{p['port']}" for p in peers} == seeders
    assert all("probe" in p["sources"] and "dht" in p["sources"] for p in peers)
    timeline = json.loads(_cli(home, "timeline", infohash, "--json").stdout)
    assert timeline["status"] == "alive" and timeline["samples"]
    assert _cli(home, "keys", "generate").returncode == 0
    bundle = tmp_path / "case.zip"
    proc = _cli(home, "export", "--case", "c1", "-o", str(bundle), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["distribution_peers"] == 2
    proc = _cli(home, "verify", str(bundle))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "evidence", "verify", str(bundle)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stdout
