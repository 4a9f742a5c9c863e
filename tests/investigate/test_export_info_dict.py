"""Issue 10: a hybrid or v2 torrent whose metadata came over BEP 9 (the info dict alone, no ``piece layers``)
exports, the bundle says what its metainfo holds, and the verifier checks the infohashes from the info dict.
A .torrent with its layers given later upgrades the stored metainfo; wrong layers never get in."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from sqlalchemy import Engine

from evidence.torrent import TorrentError
from evidence.torrent_record import check_record
from evidence.verify import EXIT_OK, verify_bundle
from p2pwatch.bundle import keys as keyfile
from p2pwatch.errors import MetainfoError
from p2pwatch.investigate.export import ExportRequest, export_case
from p2pwatch.investigate.registry import (
    add_content,
    create_case,
    load_index,
    record_match,
    stored_metainfo,
    upsert_torrent,
)
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.matcher import exact_metadata_matches
from p2pwatch.storage.db import session_factory, writer_sessionmaker
from p2pwatch.storage.models import Torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_info, parse_torrent
from tests.conftest import require_component

pytest_plugins = ["tests.pg"]
ROOT = Path(__file__).resolve().parents[2]

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import create_torrent
except ImportError:  # pragma: no cover
    lt = None


def _torrent(tmp_path: Path, version: str) -> tuple[Path, Metainfo]:
    """A two-file torrent made by libtorrent: a 7-piece file (needs a piece layer) and a small one."""
    require_component("libtorrent", lt is not None)
    root = tmp_path / f"pack-{version}"
    root.mkdir()
    (root / "clip.bin").write_bytes(os.urandom(7 * 16384 + 1000))
    (root / "note.txt").write_bytes(b"note " * 200)
    return root / "clip.bin", parse_torrent(create_torrent(root, version=version, piece_length=16384))


def _store(engine: Engine, home: Path, content: Path, meta: Metainfo) -> None:
    keyfile.save_key(keyfile.default_key_path(home), keyfile.generate_key())
    with writer_sessionmaker(engine)() as s, s.begin():
        case = create_case(s, "c1")
        add_content(s, case, fingerprint_file(content, media=False))
        torrent = upsert_torrent(s, meta.infohash, metainfo=meta, source="lookup")
        matches = trio.run(exact_metadata_matches, load_index(s), meta)
        assert [m.method for m in matches] == ["exact-metadata"]
        record_match(s, matches[0], torrent)


def _export(engine: Engine, home: Path, out: Path) -> dict:  # type: ignore[type-arg]
    with session_factory(engine)() as s, s.begin():
        export_case(s, ExportRequest("c1", out, home))
    result = verify_bundle(out)
    assert result.exit_code == EXIT_OK, [c.lines() for c in result.failed]
    torrents = next(c for c in result.checks if c.name == "torrents")
    with zipfile.ZipFile(out) as z:
        doc = json.loads(z.read("bundle.json"))
        record = doc["torrents"][0]
        record["_bytes"] = z.read(record["file"])
    record["_details"] = torrents.details
    return record  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", ["hybrid", "v2"])
def test_info_dict_from_bep9_exports_and_verifies(storage_engine: Engine, tmp_path: Path, version: str,
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    content, full = _torrent(tmp_path, version)
    bare = parse_info(full.info_bytes)  # what BEP 9 hands over
    assert bare.missing_layers and not full.missing_layers
    _store(storage_engine, tmp_path, content, bare)
    record = _export(storage_engine, tmp_path, tmp_path / "bare.zip")
    assert record["metainfo"] == "info-dict" and record["file"].endswith(".info")
    assert record["_bytes"] == full.info_bytes
    assert hashlib.sha256(record["_bytes"]).hexdigest() == record["infohash_v2"] == full.infohash_v2.hex()  # type: ignore[union-attr]
    if version == "hybrid":
        assert hashlib.sha1(record["_bytes"]).hexdigest() == record["infohash_v1"]
    assert record["piece_layers"] == {"present": [], "missing": [f"pack-{version}/clip.bin"]}
    assert any("info dict alone" in d and "missing for" in d for d in record["_details"]), record["_details"]
    # and on a bare Python, from a copy of evidence/ alone (no p2pwatch, no site-packages)
    examiner = tmp_path_factory.mktemp("examiner")
    shutil.copytree(ROOT / "evidence", examiner / "evidence", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(tmp_path / "bare.zip", examiner / "bundle.zip")
    proc = subprocess.run([sys.executable, "-I", "-S", "evidence", "verify", "bundle.zip"], capture_output=True,
                          text=True, timeout=120, cwd=examiner, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
    assert proc.returncode == 0 and "the info dict alone" in proc.stdout, proc.stdout + proc.stderr

    # the .torrent with its layers, given later, upgrades what is stored; the bundle then carries it whole
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        upsert_torrent(s, full.infohash, metainfo=full)
    record = _export(storage_engine, tmp_path, tmp_path / "full.zip")
    assert record["metainfo"] == "torrent" and record["file"].endswith(".torrent")
    assert record["piece_layers"] == {"present": [f"pack-{version}/clip.bin"], "missing": []}
    assert parse_torrent(record["_bytes"]).piece_layers == full.piece_layers


def test_stored_layers_are_checked_and_never_downgraded(storage_engine: Engine, tmp_path: Path) -> None:
    content, full = _torrent(tmp_path, "v2")
    _store(storage_engine, tmp_path, content, full)
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        upsert_torrent(s, full.infohash, metainfo=parse_info(full.info_bytes))  # fewer layers: kept as is
        row = s.query(Torrent).one()
        assert row.metainfo == full.torrent_bytes
        assert stored_metainfo(row) is not None
    root = full.layer_files[0].pieces_root
    assert root is not None
    with pytest.raises(MetainfoError, match="does not match its pieces root"):
        parse_info(full.info_bytes).with_piece_layers({root: bytes(32) * 8})
    with writer_sessionmaker(storage_engine)() as s, s.begin(), pytest.raises(MetainfoError, match="does not hash"):
        upsert_torrent(s, b"\x01" * 20, metainfo=full)


def test_a_declaration_that_differs_from_the_file_fails(tmp_path: Path) -> None:
    _content, full = _torrent(tmp_path, "hybrid")
    good = {"infohash": full.infohash.hex(), "file": "torrents/x.info", "metainfo": "info-dict",
            "infohash_v1": full.infohash_v1.hex(), "infohash_v2": full.infohash_v2.hex(),  # type: ignore[union-attr]
            "piece_layers": {"present": [], "missing": ["pack-hybrid/clip.bin"]}}
    assert check_record(good, full.info_bytes)[0] == full.infohash.hex()
    for bad, data, message in [
        ({**good, "metainfo": "torrent"}, full.info_bytes, "named for another kind"),
        ({**good, "piece_layers": {"present": ["pack-hybrid/clip.bin"], "missing": []}}, full.info_bytes,
         "piece_layers differ"),
        (good, full.torrent_bytes, "not a whole .torrent"),
        (good, full.info_bytes[:-1] + b"1:xe", "not strict bencoding"),
        ({**good, "infohash": "00" * 20}, full.info_bytes, "hashes to"),
    ]:
        with pytest.raises(TorrentError, match=message):
            check_record(bad, data or b"")


def test_a_served_v2_piece_needs_its_layer_in_the_store(storage_engine: Engine, tmp_path: Path) -> None:
    """A level-3 row on a v2 piece rests on the piece layer: without it the export refuses (naming the
    file) instead of writing a bundle that fails verification; with it, the verifier re-checks the row."""
    from p2pwatch.errors import BundleError
    from p2pwatch.storage.ledger import ObservationRecord, append_observations

    content, full = _torrent(tmp_path, "v2")
    bare = parse_info(full.info_bytes)
    _store(storage_engine, tmp_path, content, bare)
    clip = full.layer_files[0]
    assert clip.pieces_root is not None
    index = full.file_pieces(clip)[1]
    digest = full.piece_layers[clip.pieces_root][32:64].hex()
    transcript = {"ip": "198.51.100.7", "port": 6881, "infohash": full.infohash.hex(), "level": 3,
                  "piece_verified": index, "piece_hash": digest, "piece_hash_algorithm": "sha256-merkle"}
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        tid = s.query(Torrent).one().id
        append_observations(s, [ObservationRecord(tid, "198.51.100.7", 6881, 3, "probe", datetime.now(UTC),
                                                  transcript=transcript)])
    out = tmp_path / "no-layer.zip"
    with session_factory(storage_engine)() as s, pytest.raises(BundleError, match=r"piece layer of .*clip\.bin"):
        export_case(s, ExportRequest("c1", out, tmp_path))
    assert not out.exists()
    with writer_sessionmaker(storage_engine)() as s, s.begin():  # the layer, as a probe's hash request got it
        upsert_torrent(s, full.infohash, metainfo=bare.with_piece_layers(full.piece_layers))
    record = _export(storage_engine, tmp_path, tmp_path / "with-layer.zip")
    assert record["metainfo"] == "torrent" and record["piece_layers"]["missing"] == []
