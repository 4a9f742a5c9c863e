"""Appending to, reading and verifying the hash-chained tables, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import DBAPIError

from p2pwatch.errors import AppendOnlyViolation, LocalProtocolError
from p2pwatch.storage.chain import GENESIS_HASH, address_digest, canonical_json, row_hash
from p2pwatch.storage.db import session_factory, writer_sessionmaker
from p2pwatch.storage.ledger import (
    ObservationRecord,
    PeerCache,
    append_audit,
    append_observations,
    chain_head,
    clean_text,
    iter_observations,
    verify_chain,
)
from p2pwatch.storage.models import AuditEntry, Observation, Peer

if TYPE_CHECKING:
    from tests.pg import TemporaryPostgres

pytest_plugins = ["tests.pg"]
AddTorrent = Callable[..., int]
Tamper = Callable[[Engine, str], None]

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TORRENT_A = "aa" * 20
TORRENT_B = "bb" * 20


def record(torrent_id: int, n: int, **overrides: object) -> ObservationRecord:
    """The n-th test observation; defaults follow its level (n % 5 unless given)."""
    level = int(overrides.get("level", n % 5))  # type: ignore[call-overload]
    values: dict[str, object] = dict(
        torrent_id=torrent_id, ip=f"198.51.100.{n % 250 + 1}", port=6881 + n, level=level,
        source="probe" if level else "dht", observed_at=T0 + timedelta(seconds=n),
        reporter=None if level else f"192.0.2.{n % 200 + 1}:6881",
        client="qBittorrent 4.6" if level else None, peer_id=("2d71" + f"{n:036x}") if level else None,
        have_fraction=(n % 7) / 7 if level >= 2 else None,
        transcript=[{"event": "handshake", "n": n}] if level else None)
    values.update(overrides)
    return ObservationRecord(**values)  # type: ignore[arg-type]


def append(engine: Engine, records: list[ObservationRecord]) -> tuple[int, int]:
    with writer_sessionmaker(engine)() as session, session.begin():
        result = append_observations(session, records)
    return result.first_seq, result.last_seq


def verify(engine: Engine, **kwargs: object):  # type: ignore[no-untyped-def]
    with session_factory(engine)() as session:
        return verify_chain(session, **kwargs)  # type: ignore[arg-type]


def test_append_extends_one_chain(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    a = add_torrent(storage_engine, TORRENT_A)
    b = add_torrent(storage_engine, TORRENT_B)
    assert append(storage_engine, [record(a, n) for n in range(10)]) == (1, 10)
    assert append(storage_engine, [record(b, n) for n in range(10, 15)]) == (11, 15)
    assert append(storage_engine, [record(a, n) for n in range(15, 40)]) == (16, 40)
    report = verify(storage_engine)
    assert report.ok, report.problems
    assert (report.checked, report.first_seq, report.last_seq) == (40, 1, 40)
    with session_factory(storage_engine)() as session:
        assert chain_head(session) == (40, report.last_hash)
        rows = list(iter_observations(session))
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.row_hash
        assert after.seq == before.seq + 1


def test_stored_rows_match_their_records(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    a = add_torrent(storage_engine, TORRENT_A)
    records = [record(a, n) for n in range(12)]
    records.append(record(a, 12, ip="2001:DB8:0:0::1", client="bad\x00name\udcff", have_fraction=1 / 3))
    append(storage_engine, records)
    with session_factory(storage_engine)() as session:
        stored = list(iter_observations(session))
    assert len(stored) == len(records)
    for rec, row in zip(records, stored, strict=True):
        assert (row.infohash, row.ip, row.port, row.level, row.source) == (TORRENT_A, rec.ip, rec.port, rec.level,
                                                                          rec.source)
        assert (row.reporter, row.client, row.peer_id, row.have_fraction) == (rec.reporter, rec.client, rec.peer_id,
                                                                             rec.have_fraction)
        assert row.observed_at == rec.observed_at and row.observed_at.tzinfo is not None
        assert row.row_hash == row_hash(row.fields(), row.prev_hash)
        assert row.addr_digest == address_digest(row.addr_salt or "", rec.ip, rec.port, rec.reporter)
        if rec.transcript is None:
            assert row.transcript_sha256 is None
        else:
            assert row.transcript_sha256 == hashlib.sha256(canonical_json(rec.transcript).encode()).hexdigest()
    last = stored[-1]
    assert last.ip == "2001:db8::1"
    assert last.client == "bad\ufffdname\ufffd"
    assert last.have_fraction == 0.333333


def test_iter_observations_filters_and_pages(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    a = add_torrent(storage_engine, TORRENT_A)
    b = add_torrent(storage_engine, TORRENT_B)
    append(storage_engine, [record(a if n % 3 else b, n) for n in range(50)])
    with session_factory(storage_engine)() as session:
        everything = [o.seq for o in iter_observations(session, batch=7)]
        only_b = [o.seq for o in iter_observations(session, torrent_ids=[b], batch=4)]
        window = [o.seq for o in iter_observations(session, batch=3, start_seq=10, end_seq=20)]
        partial = verify_chain(session, start_seq=11, end_seq=30, batch=6)
    assert everything == list(range(1, 51))
    assert only_b == [n + 1 for n in range(50) if n % 3 == 0]
    assert window == list(range(10, 21))
    assert partial.ok and (partial.checked, partial.first_seq, partial.last_seq) == (20, 11, 30)


def test_identical_transcripts_are_stored_once(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    a = add_torrent(storage_engine, TORRENT_A)
    same = {"handshake": "ok"}
    append(storage_engine, [record(a, 1, transcript=same), record(a, 2, transcript=same)])
    append(storage_engine, [record(a, 3, transcript=same)])
    with session_factory(storage_engine)() as session:
        ids = {o.transcript_id for o in iter_observations(session)}
    assert len(ids) == 1 and None not in ids
    assert verify(storage_engine).ok


def test_unknown_torrent_writes_nothing(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    a = add_torrent(storage_engine, TORRENT_A)
    append(storage_engine, [record(a, 1)])
    with pytest.raises(LocalProtocolError, match="unknown torrent"):
        append(storage_engine, [record(a, 2), record(9999, 3)])
    with session_factory(storage_engine)() as session:
        assert chain_head(session)[0] == 1
    assert verify(storage_engine).ok


def test_tampering_is_found_at_the_tampered_rows(storage_engine: Engine, add_torrent: AddTorrent,
                                                 tamper: Tamper) -> None:
    a = add_torrent(storage_engine, TORRENT_A)
    b = add_torrent(storage_engine, TORRENT_B)
    append(storage_engine, [record(a, n) for n in range(1, 13)])
    assert verify(storage_engine).ok
    tamper(storage_engine, "UPDATE observations SET level = 4 WHERE seq = 2")
    tamper(storage_engine, "UPDATE observations SET ip = '203.0.113.99' WHERE seq = 4")
    tamper(storage_engine, f"UPDATE observations SET torrent_id = {b} WHERE seq = 5")
    tamper(storage_engine, "UPDATE transcripts SET body = '[]' WHERE id = "
                           "(SELECT transcript_id FROM observations WHERE seq = 7)")
    tamper(storage_engine, "DELETE FROM observations WHERE seq = 9")
    tamper(storage_engine, "DELETE FROM observations WHERE seq = 12")
    report = verify(storage_engine)
    assert not report.ok
    found = {(p.seq, p.reason.split()[0]) for p in report.problems}
    assert {seq for seq, _ in found} == {2, 4, 5, 7, 10, 12}
    assert (4, "address") in found and (7, "transcript") in found and (12, "chain") in found


def test_append_only_is_enforced_in_three_layers(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    a = add_torrent(storage_engine, TORRENT_A)
    append(storage_engine, [record(a, n) for n in range(5)])  # seq 1 is level 0, seq 4 is level 3
    sessions = writer_sessionmaker(storage_engine)
    with sessions() as session:
        obs = session.get(Observation, 2)
        assert obs is not None
        obs.level = 4
        with pytest.raises(AppendOnlyViolation):
            session.flush()
    with sessions() as session:
        obs = session.get(Observation, 2)
        session.delete(obs)
        with pytest.raises(AppendOnlyViolation):
            session.flush()
    for statement in (update(Observation).values(level=4), delete(Observation), delete(AuditEntry),
                      update(AuditEntry).values(actor="x")):
        with sessions() as session, pytest.raises(AppendOnlyViolation):
            session.execute(statement)
    refused = ["UPDATE observations SET level = 4 WHERE seq = 2",
               "DELETE FROM observations WHERE seq = 5",
               "UPDATE observations SET ip = NULL, port = NULL, reporter = NULL, addr_salt = NULL WHERE seq = 4",
               "UPDATE observations SET ip = NULL, port = NULL, reporter = NULL, addr_salt = NULL, level = 1 "
               "WHERE seq = 1",
               "UPDATE chain_heads SET seq = 1 WHERE name = 'observations'",
               "DELETE FROM chain_heads"]
    for sql in refused:
        with pytest.raises(DBAPIError), storage_engine.begin() as conn:
            conn.exec_driver_sql(sql)
    with storage_engine.begin() as conn:  # exactly a purge of a level-0 row: allowed
        conn.exec_driver_sql("UPDATE observations SET ip = NULL, port = NULL, reporter = NULL, addr_salt = NULL "
                             "WHERE seq = 1")
    with session_factory(storage_engine)() as session:
        append_audit(session, "test", "noop")
        session.commit()
    for sql in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError), storage_engine.begin() as conn:
            conn.exec_driver_sql(sql)
    report = verify(storage_engine)
    assert report.ok and report.purged == 1 and report.checked == 5


def test_audit_chain(storage_engine: Engine, tamper: Tamper) -> None:
    sessions = writer_sessionmaker(storage_engine)
    for n in range(4):
        with sessions() as session, session.begin():
            result = append_audit(session, "investigator", "export", {"case": "c1", "n": n, "files": ["a", "é"]},
                                  at=T0 + timedelta(minutes=n))
        assert result.last_seq == n + 1
    report = verify(storage_engine, chain="audit")
    assert report.ok and report.checked == 4
    with session_factory(storage_engine)() as session:
        entries = session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars().all()
        assert entries[2].detail == {"case": "c1", "n": 2, "files": ["a", "é"]}
        assert entries[2].at == T0 + timedelta(minutes=2)
    tamper(storage_engine, "UPDATE audit_log SET detail = '{\"case\":\"c2\"}' WHERE seq = 3")
    report = verify(storage_engine, chain="audit")
    assert [p.seq for p in report.problems] == [3]


def test_peers_are_summarised(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    a = add_torrent(storage_engine, TORRENT_A)
    ip = "203.0.113.5"
    first = [record(a, 0, ip=ip, port=1000, level=0, source="dht", observed_at=T0),
             record(a, 1, ip=ip, port=1000, level=1, source="probe", client="Transmission 4",
                    observed_at=T0 + timedelta(seconds=5), country="NL", asn=64500, org="Example BV")]
    cache = PeerCache()
    with writer_sessionmaker(storage_engine)() as session, session.begin():
        append_observations(session, first, peers=cache)
    later = [record(a, 2, ip=ip, port=1000, level=0, source="tracker", observed_at=T0 + timedelta(seconds=30)),
             record(a, 3, ip=ip, port=1000, level=3, source="probe", observed_at=T0 + timedelta(seconds=31),
                    client=None, peer_id=None),
             record(a, 4, ip=ip, port=1000, level=0, source="dht", observed_at=T0 + timedelta(hours=2))]
    for rec in later:
        with writer_sessionmaker(storage_engine)() as session, session.begin():
            append_observations(session, [rec], peers=cache)
    with session_factory(storage_engine)() as session:
        peer = session.execute(select(Peer).where(Peer.ip == ip)).scalar_one()
    assert (peer.port, peer.client, peer.country, peer.asn, peer.org) == (1000, "Transmission 4", "NL", 64500,
                                                                          "Example BV")
    assert peer.max_level == 3  # raised by the level-3 row even within the last-seen granularity
    assert peer.first_seen == T0
    assert peer.last_seen == T0 + timedelta(hours=2)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"level": 5}, "level"),
    ({"source": "carrier-pigeon"}, "source"),
    ({"ip": "999.1.1.1"}, "IP address"),
    ({"ip": "010.1.1.1"}, "IP address"),
    ({"port": 70000}, "port"),
    ({"peer_id": "xyz"}, "peer_id"),
    ({"have_fraction": float("nan")}, "have_fraction"),
    ({"transcript": {"bytes": b"raw"}}, "transcript"),
])
def test_bad_records_fail_their_producer(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        record(1, 1, **overrides)


def test_record_normalisation() -> None:
    rec = record(1, 1, peer_id=b"-qB4620-" + bytes(12), observed_at=datetime(2024, 1, 1, 1, 0))
    assert rec.peer_id == (b"-qB4620-" + bytes(12)).hex()
    assert rec.observed_at == datetime(2024, 1, 1, 1, 0, tzinfo=UTC)
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("ok") == "ok"


def test_streaming_memory_is_bounded(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    import tracemalloc

    a = add_torrent(storage_engine, TORRENT_A)
    total = 20_000
    for start in range(0, total, 5_000):
        append(storage_engine, [record(a, n, transcript=None) for n in range(start, start + 5_000)])
    with session_factory(storage_engine)() as session:
        tracemalloc.start()
        try:
            seen = 0
            last = 0
            for row in iter_observations(session, batch=500):
                assert row.seq == last + 1
                last = row.seq
                seen += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert seen == total
    # 20,000 rows held at once would take well over 10 MB of Python objects; 500 at a time stay far below
    assert peak < 4 * 1024 * 1024, peak


def test_server_time_zone_does_not_shift_times(postgres_server: TemporaryPostgres, add_torrent: AddTorrent) -> None:
    from p2pwatch.storage.db import make_engine

    url = postgres_server.migrated_database()
    engine = make_engine(url, connect_args={"options": "-c timezone=Asia/Seoul"})
    try:
        a = add_torrent(engine, TORRENT_A)
        records = [record(a, n) for n in range(5)]
        append(engine, records)
        with session_factory(engine)() as session:
            stored = list(iter_observations(session))
            assert verify_chain(session).ok
        assert [o.observed_at for o in stored] == [r.observed_at for r in records]
    finally:
        engine.dispose()
