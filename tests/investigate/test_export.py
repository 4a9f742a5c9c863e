"""``p2pwatch export`` from a real store (SQLite and PostgreSQL): the bundle verifies, the row-tuple fast path
gives the same bytes as the general mapping path, and a row altered in the database fails the export."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from evidence.verify import EXIT_OK, verify_bundle
from p2pwatch.bundle import keys as keyfile
from p2pwatch.bundle import write_bundle
from p2pwatch.errors import BundleError
from p2pwatch.investigate.export import ExportRequest, build_inputs, export_case
from p2pwatch.investigate.registry import add_content, create_case, record_match, upsert_torrent
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.matcher import Match
from p2pwatch.storage.db import make_engine, session_factory, upgrade_database, writer_sessionmaker
from p2pwatch.storage.ledger import ObservationRecord, append_observations
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import parse_torrent

pytest_plugins = ["tests.pg"]
Tamper = Callable[[Engine, str], None]
T0 = datetime(2025, 6, 1, 8, 30, 0, 250001, tzinfo=UTC)
CREATED = "2025-07-01T00:00:00.000000Z"


def fill(engine: Engine, home: Path, rows: int = 120) -> None:
    """A case with one matched torrent; every fourth row belongs to another torrent (exported redacted)."""
    keyfile.save_key(keyfile.default_key_path(home), keyfile.generate_key())
    data = home / "content.bin"
    data.write_bytes(os.urandom(6 * 16384 + 99))
    meta = parse_torrent(make_v1_torrent("content.bin", [("content.bin", data)], piece_length=16384,
                                         single_file=True))
    other = parse_torrent(make_v1_torrent("other.bin", [("content.bin", data)], piece_length=32768,
                                          single_file=True))
    fp = fingerprint_file(data, media=False)
    with writer_sessionmaker(engine)() as s, s.begin():
        case = create_case(s, "c1")
        content, _ = add_content(s, case, fp)
        torrent = upsert_torrent(s, meta.infohash, metainfo=meta)
        other_torrent = upsert_torrent(s, other.infohash, metainfo=other)
        proof = {"kind": "v1-piece-table", "piece_length": 16384, "first_piece": 0,
                 "pieces_compared": len(meta.piece_hashes), "piece_hashes": [h.hex() for h in meta.piece_hashes],
                 "file_length": fp.size}
        record_match(s, Match("c1", str(content.id), meta.infohash.hex(), 0, "content.bin", "exact-metadata", proof,
                              0), torrent)
        tid, oid = torrent.id, other_torrent.id
    records = []
    for n in range(rows):
        ip, port = (f"198.51.100.{n % 9 + 1}", 6881 + n % 4) if n % 5 else (f"2001:db8::{n % 3 + 1:x}", 51413)
        level = (0, 1, 2, 3, 0)[n % 5] if n % 3 == 0 else 0
        piece = n % len(meta.piece_hashes)
        transcript = None if not level else {
            "ip": ip, "port": port, "infohash": meta.infohash.hex(), "level": level, "client": "Transmission 4.0",
            "have_fraction": 1.0, "piece_verified": piece if level == 3 else None,
            "piece_hash": meta.piece_hashes[piece].hex() if level == 3 else None,
            "piece_hash_algorithm": "sha1" if level == 3 else None, "transcript": [{"n": n}]}
        records.append(ObservationRecord(
            oid if n % 4 == 3 else tid, ip, port, level, "probe" if level else ("dht" if n % 2 else "tracker"),
            T0 + timedelta(seconds=n, microseconds=n), reporter=None if level else "203.0.113.7:6881",
            client="Transmission 4.0 \u00e9\u2603" if level else None,
            peer_id=("2d5452" + f"{n:034x}") if level else None,
            have_fraction=(n % 7) / 7 if level >= 2 else None, transcript=transcript))
    with writer_sessionmaker(engine)() as s, s.begin():
        append_observations(s, records)


def fixed_export(engine: Engine, home: Path, out: Path, *, reference: bool = False) -> Any:
    with session_factory(engine)() as s:
        inputs = build_inputs(s, ExportRequest("c1", out, home), reference=reference)
        return write_bundle(out, **{**inputs, "created_at": CREATED})


def test_export_verifies_and_the_fast_path_gives_the_reference_bytes(storage_engine: Engine, tmp_path: Path) -> None:
    fill(storage_engine, tmp_path)
    fast = fixed_export(storage_engine, tmp_path, tmp_path / "fast.zip")
    reference = fixed_export(storage_engine, tmp_path, tmp_path / "reference.zip", reference=True)
    assert (fast.observations, fast.redacted) == (90, 30)
    assert (tmp_path / "fast.zip").read_bytes() == (tmp_path / "reference.zip").read_bytes()
    assert fast.sha256 == reference.sha256
    result = verify_bundle(tmp_path / "fast.zip")
    assert result.exit_code == EXIT_OK, [c.lines() for c in result.failed]
    with session_factory(storage_engine)() as s, s.begin():
        summary = export_case(s, ExportRequest("c1", tmp_path / "cli.zip", tmp_path))
    assert summary.observations == 90 and verify_bundle(tmp_path / "cli.zip").exit_code == EXIT_OK


@pytest.mark.parametrize(("sql", "message"), [
    ("UPDATE observations SET level = 4 WHERE seq = 10", "seq 10: row_hash does not match"),
    ("UPDATE observations SET observed_at = observed_at + INTERVAL '1 second' WHERE seq = 31",
     "seq 31: row_hash does not match"),
    ("UPDATE observations SET ip = '198.51.100.200' WHERE seq = 7", "seq 7: the address does not match"),
    ("UPDATE observations SET port = NULL WHERE seq = 6", "seq 6: the address does not match"),
    ("UPDATE observations SET client = 'x' WHERE seq = 4", "seq 5: prev_hash is not the hash of the row before"),
    ("UPDATE observations SET row_hash = prev_hash WHERE seq = 13", "seq 13: row_hash does not match"),
    ("DELETE FROM observations WHERE seq = 40", "seq 41 does not follow 39"),
])
def test_a_row_altered_in_the_database_fails_the_export(storage_engine: Engine, tmp_path: Path, tamper: Tamper,
                                                        sql: str, message: str) -> None:
    """The exporter re-hashes every row: an edited row fails with a BundleError naming it, and leaves no file.
    Rows with seq % 4 == 0 belong to the other torrent and are exported redacted, so an edit of one shows at
    the next row's link."""
    fill(storage_engine, tmp_path)
    if storage_engine.dialect.name == "sqlite" and "INTERVAL" in sql:
        sql = "UPDATE observations SET observed_at = '2025-06-01 08:30:31.000032' WHERE seq = 31"
    tamper(storage_engine, sql)
    out = tmp_path / "tampered.zip"
    with session_factory(storage_engine)() as s, s.begin(), pytest.raises(BundleError, match=message):
        export_case(s, ExportRequest("c1", out, tmp_path))
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_a_time_not_in_the_storage_format_fails_the_export(tmp_path: Path, tamper: Tamper) -> None:
    """SQLite holds times as the text SQLAlchemy wrote; the export formats them in SQL, and text in another
    form (here the same instant with five fractional digits) no longer hashes to the stored row_hash, so the
    export refuses it rather than guess."""
    engine = make_engine(f"sqlite:///{tmp_path / 'p2pwatch.db'}")
    try:
        upgrade_database(engine)
        fill(engine, tmp_path, rows=40)
        tamper(engine, "UPDATE observations SET observed_at = '2025-06-01 08:30:29.25003' WHERE seq = 30")
        out = tmp_path / "b.zip"
        with session_factory(engine)() as s, pytest.raises(BundleError, match="seq 30: row_hash does not match"):
            export_case(s, ExportRequest("c1", out, tmp_path))
        assert not out.exists()
    finally:
        engine.dispose()
