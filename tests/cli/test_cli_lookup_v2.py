"""Issue 10: hybrid and v2-only torrents seeded by libtorrent on loopback, looked up by p2pwatch (metadata over
BEP 9, i.e. the info dict without ``piece layers``), matched, recorded, exported and verified by
``python -m evidence verify``; the same torrent given as a .torrent file with its layers; and a v2 torrent of
one multi-piece file, whose seeders reach level 3 only through the layer fetched by BEP 52 hash requests,
which the store then keeps and the bundle carries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import loopback_address, require_component

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, create_torrent
except ImportError:  # pragma: no cover
    lt = None

pytestmark = pytest.mark.interop
REPO = Path(__file__).resolve().parents[2]


def _cli(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, P2PWATCH_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "p2pwatch", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


@pytest.mark.parametrize(("version", "given"), [("hybrid", "magnet"), ("v2", "magnet"), ("v2", "torrent"),
                                               ("v2", "magnet-one-file")])
def test_lookup_record_export_verify(tmp_path: Path, version: str, given: str) -> None:
    require_component("libtorrent", lt is not None)
    home = tmp_path / "home"
    pack = tmp_path / "data" / "pack"
    pack.mkdir(parents=True)
    (pack / "clip.bin").write_bytes(os.urandom(9 * 16384 + 777))  # 10 pieces: its v2 hashes need a layer
    if given != "magnet-one-file":  # a one-piece file: its pieces root verifies a piece without any layer
        (pack / "note.txt").write_bytes(b"note " * 300)
    one_file = given == "magnet-one-file"
    torrent = create_torrent(pack / "clip.bin" if one_file else pack, version=version, piece_length=16384)
    name, clip = ("clip.bin", "clip.bin") if one_file else ("pack", "pack/clip.bin")
    hashes = lt.torrent_info(lt.bdecode(torrent)).info_hashes()  # type: ignore[arg-type]
    v2 = str(hashes.v2)
    if given == "torrent":
        target = str(tmp_path / "given.torrent")
        Path(target).write_bytes(torrent)
    elif version == "hybrid":
        target = f"magnet:?xt=urn:btih:{hashes.v1}"
    else:
        target = f"magnet:?xt=urn:btmh:1220{v2}"
    for args in (("db", "upgrade"), ("case", "create", "c1"), ("register", "--case", "c1", str(pack / "clip.bin")),
                 ("keys", "generate")):
        assert _cli(home, *args).returncode == 0
    with LocalSwarm(tmp_path) as swarm:
        sessions = [swarm.start_session(loopback_address()) for _ in range(6)]
        for s in sessions[:2]:
            swarm.seed(s, torrent, pack if one_file else pack.parent)
        swarm.start_dht(min_nodes=3)
        net = [f"--bootstrap={sessions[3].ip}:{sessions[3].port}", "--allow-local", f"--bind={loopback_address()}"]
        doc: dict[str, object] = {}
        for _ in range(5):
            proc = _cli(home, "lookup", target, "--record", "--json", "--timeout", "60", *net)
            assert proc.returncode == 0, proc.stderr
            doc = json.loads(proc.stdout)
            if len(doc["peers"]) >= 2 and doc["matches"]:  # type: ignore[arg-type]
                break
    assert doc["name"] == name, doc
    assert [(m["method"], m["file"]) for m in doc["matches"]] == [("exact-metadata", clip)]  # type: ignore
    seeders = {f"{s.ip}:{s.port}" for s in sessions[:2]}
    levels = {f"{p['ip']}:{p['port']}": p["level"] for p in doc["peers"]}  # type: ignore[union-attr]
    assert all(levels.get(s, 0) >= 3 for s in seeders), levels
    bundle = tmp_path / "case.zip"
    proc = _cli(home, "export", "--case", "c1", "-o", str(bundle), "--json")
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "evidence", "verify", str(bundle)], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout
    with zipfile.ZipFile(bundle) as z:
        record = json.loads(z.read("bundle.json"))["torrents"][0]
    assert record["infohash_v2"] == v2 and record["version"] == version
    if given in ("torrent", "magnet-one-file"):  # given with the .torrent, or fetched from the seeders
        assert (record["metainfo"], record["piece_layers"]) == ("torrent", {"present": [clip], "missing": []})
        what = "a .torrent file" if given == "torrent" else \
            "the info dict and piece layers only (the layers as fetched from peers, BEP 52, or given)"
        assert f"{what}; v2 piece layers present for 1 of 1" in proc.stdout, proc.stdout
        if given == "magnet-one-file":
            assert {p["piece_verified"] for p in doc["peers"] if p["level"] == 3} <= set(range(10))  # type: ignore
    else:
        assert (record["metainfo"], record["piece_layers"]["missing"]) == ("info-dict", [clip])
        assert "the info dict alone" in proc.stdout and "missing for 'pack/clip.bin'" in proc.stdout
