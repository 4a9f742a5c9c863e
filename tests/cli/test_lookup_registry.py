"""``p2pwatch lookup``'s registry: slim entries, piece tables read from the store for the selected items only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from p2pwatch.cli.lookup import registry_for_lookup
from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.match.matcher import exact_metadata_matches
from p2pwatch.match.registered import SlimFingerprint
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import parse_torrent


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, P2PWATCH_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "p2pwatch", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_lookup_holds_slim_entries_and_reads_only_the_selected_tables(tmp_path: Path) -> None:
    home = tmp_path / "home"
    files = []
    for n, size in enumerate((70_000, 90_000, 110_000)):
        path = tmp_path / f"item{n}.bin"
        path.write_bytes(os.urandom(size))
        files.append(path)
    assert _cli(home, "db", "upgrade").returncode == 0
    assert _cli(home, "case", "create", "c1").returncode == 0
    assert _cli(home, "register", "--case", "c1", *map(str, files)).returncode == 0
    engine, index, note = registry_for_lookup({"home": str(home)})
    try:
        assert note is None and index is not None and len(index) == 3
        assert all(isinstance(item.fingerprint, SlimFingerprint) for item in index.contents)
        assert not any(isinstance(item.fingerprint, Fingerprint) for item in index.contents)
        torrent = make_v1_torrent("copy", [("renamed.bin", files[1])], piece_length=16384)
        meta = parse_torrent(torrent)
        trio.run(index.prefetch, meta)
        assert index.tables is not None and len(index.tables) == 1  # only the 90,000-byte item's tables
        matches = trio.run(exact_metadata_matches, index, meta)
        assert [(m.method, m.file_path) for m in matches] == [("exact-metadata", "copy/renamed.bin")]
    finally:
        assert engine is not None
        engine.dispose()


def test_lookup_without_a_database_says_so(tmp_path: Path) -> None:
    engine, index, note = registry_for_lookup({"home": str(tmp_path / "nothing-here")})
    assert engine is None and index is None
    assert note is not None and note.startswith("no registry to match against")
