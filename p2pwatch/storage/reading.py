"""Reading the evidence store back: streaming observations and verifying the hash chains.

``iter_observations`` streams a table of any size in ``seq`` order through one ordered query fetched
``batch`` rows at a time (a server-side cursor on PostgreSQL, a lazily stepped cursor on SQLite), so memory
stays bounded however many rows there are. The exporter reads 1,000,000-row cases through
``export_rows_select`` and ``iter_driver_batches``: the rows as the bundle writer's tuples, straight from the
driver's cursor, with the timestamps formatted by the database.

``verify_chain`` recomputes a chain (``observations`` or ``audit``) with p2pwatch.storage.chain, checks each
unpurged row's salted address digest and each transcript's SHA-256, and, for a check to the end, that the
chain head names the last row. Problems are reported per row (``ChainReport``), never raised.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Text, func, select, type_coerce
from sqlalchemy.orm import Session

from p2pwatch.errors import LocalProtocolError
from p2pwatch.storage.chain import (
    GENESIS_HASH,
    ChainChecker,
    ChainReport,
    address_digest,
    audit_fields,
    format_timestamp,
    observation_fields,
    observation_template,
)
from p2pwatch.storage.models import AuditEntry, Base, ChainHead, Observation, Torrent
from p2pwatch.storage.models import Transcript as TranscriptRow

_TABLES = Base.metadata.tables
_OBS = _TABLES[Observation.__tablename__]
_TORRENTS = _TABLES[Torrent.__tablename__]
_TRANSCRIPTS = _TABLES[TranscriptRow.__tablename__]
_HEADS = _TABLES[ChainHead.__tablename__]
_AUDIT = _TABLES[AuditEntry.__tablename__]
_CURSOR_IDS = itertools.count()


@dataclass(frozen=True, slots=True)
class StoredObservation:
    """An observation row as stored, with its torrent's DHT id and its transcript's SHA-256."""

    seq: int
    torrent_id: int
    infohash: str
    ip: str | None
    port: int | None
    reporter: str | None
    addr_salt: str | None
    addr_digest: str
    level: int
    source: str
    client: str | None
    peer_id: str | None
    have_fraction: float | None
    transcript_id: int | None
    transcript_sha256: str | None
    observed_at: datetime
    prev_hash: str
    row_hash: str

    @property
    def purged(self) -> bool:
        return self.ip is None

    def fields(self) -> dict[str, Any]:
        """The hashed fields (p2pwatch.storage.chain)."""
        return observation_fields(seq=self.seq, observed_at=self.observed_at, torrent=self.infohash,
                                  addr=self.addr_digest, level=self.level, source=self.source,
                                  client=self.client, peer_id=self.peer_id, have_fraction=self.have_fraction,
                                  transcript=self.transcript_sha256)


def _observation_select(with_body: bool) -> Select[Any]:
    """Observation rows joined with their torrent's DHT id and transcript hash, in StoredObservation order."""
    o = _OBS.c
    cols: list[Any] = [o.seq, o.torrent_id, _TORRENTS.c.dht_id, o.ip, o.port, o.reporter, o.addr_salt,
                       o.addr_digest, o.level, o.source, o.client, o.peer_id, o.have_fraction, o.transcript_id,
                       _TRANSCRIPTS.c.sha256, o.observed_at, o.prev_hash, o.row_hash]
    if with_body:
        cols.append(_TRANSCRIPTS.c.body)
    return (select(*cols).join(_TORRENTS, _TORRENTS.c.id == o.torrent_id)
            .outerjoin(_TRANSCRIPTS, _TRANSCRIPTS.c.id == o.transcript_id))


def _pages(session: Session, base: Select[Any], key: Any, start: int | None, end: int | None,
           batch: int) -> Iterator[Any]:
    """One ordered query, streamed ``batch`` rows at a time (a server-side cursor on PostgreSQL)."""
    stmt = base
    if start is not None:
        stmt = stmt.where(key >= start)
    if end is not None:
        stmt = stmt.where(key <= end)
    result = session.execute(stmt.order_by(key), execution_options={"yield_per": batch})
    for partition in result.partitions():
        yield from partition


def _stored(row: Any) -> StoredObservation:
    return StoredObservation(*row[:18])


def iter_observations(session: Session, torrent_ids: Iterable[int] | None = None, batch: int = 10_000, *,
                      start_seq: int | None = None, end_seq: int | None = None) -> Iterator[StoredObservation]:
    """Stream observations in ``seq`` order, ``batch`` rows per query (memory stays bounded)."""
    base = _observation_select(False)
    if torrent_ids is not None:
        base = base.where(_OBS.c.torrent_id.in_(sorted(set(torrent_ids))))
    for row in _pages(session, base, _OBS.c.seq, start_seq, end_seq, batch):
        yield _stored(row)


def iter_observation_rows(session: Session, start_seq: int | None = None, end_seq: int | None = None,
                          batch: int = 10_000) -> Iterator[Any]:
    """Like :func:`iter_observations` but yields the raw row tuples (same field order as
    :class:`StoredObservation`), for exporters that stream a million rows."""
    return _pages(session, _observation_select(False), _OBS.c.seq, start_seq, end_seq, batch)


#: Columns of :func:`export_rows_select`: the bundle writer's row tuple (p2pwatch.bundle.rows.ROW_FIELDS),
#: then the row's torrent id.
EXPORT_COLUMNS = ("seq", "observed_at", "torrent", "addr", "level", "source", "client", "peer_id",
                  "have_fraction", "transcript", "prev_hash", "row_hash", "ip", "port", "reporter", "addr_salt",
                  "torrent_id")


def chain_time_sql(column: Any, dialect: str) -> Any:
    """SQL giving a ``UTCDateTime`` column as the chain's text, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``
    (p2pwatch.storage.chain.format_timestamp), so no row needs a datetime object. SQLite holds the text
    SQLAlchemy wrote, ``YYYY-MM-DD HH:MM:SS.ffffff``; text in any other form comes out different from what
    was hashed, and the bundle writer, which re-hashes every row, refuses it."""
    if dialect == "sqlite":
        return func.replace(type_coerce(column, Text), " ", "T").concat("Z")
    return func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')


def export_rows_select(dialect: str, start_seq: int, end_seq: int) -> Select[Any]:
    """The observations ``[start_seq, end_seq]`` in seq order, as :data:`EXPORT_COLUMNS`."""
    o = _OBS.c
    return (select(o.seq, chain_time_sql(o.observed_at, dialect), _TORRENTS.c.dht_id, o.addr_digest, o.level,
                   o.source, o.client, o.peer_id, o.have_fraction, _TRANSCRIPTS.c.sha256, o.prev_hash, o.row_hash,
                   o.ip, o.port, o.reporter, o.addr_salt, o.torrent_id)
            .join(_TORRENTS, _TORRENTS.c.id == o.torrent_id)
            .outerjoin(_TRANSCRIPTS, _TRANSCRIPTS.c.id == o.transcript_id)
            .where(o.seq >= int(start_seq), o.seq <= int(end_seq)).order_by(o.seq))


def iter_driver_batches(session: Session, stmt: Select[Any], batch: int = 20_000) -> Iterator[list[tuple[Any, ...]]]:
    """Run ``stmt`` straight on the database driver's cursor and yield its rows as plain tuples, ``batch``
    at a time.

    No ORM or Core result processing (for the exporter, SQLAlchemy's per-row row objects and datetime
    conversion cost more than everything else it does per row), and a named, server-side cursor on
    PostgreSQL, so memory stays bounded. The statement runs on the session's connection inside its
    transaction (the same snapshot as what the session read before); its bound values are rendered inline,
    so give it numbers and fixed strings only. Values come as the driver returns them.
    """
    connection = session.connection()
    sql = str(stmt.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    dbapi: Any = connection.connection.dbapi_connection
    if connection.dialect.name == "sqlite":
        cursor = dbapi.cursor()
    else:  # psycopg: a named cursor is a server-side cursor
        cursor = dbapi.cursor(name=f"p2pwatch_rows_{next(_CURSOR_IDS)}")
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(batch):
            yield rows
    finally:
        cursor.close()


def _anchor(session: Session, table: Any, start_seq: int | None) -> tuple[int, str]:
    if start_seq is None or start_seq <= 1:
        return 0, GENESIS_HASH
    value = session.execute(select(table.c.row_hash).where(table.c.seq == start_seq - 1)).scalar_one_or_none()
    if value is None:
        raise LocalProtocolError(f"no row at seq {start_seq - 1} to anchor the verification on")
    return start_seq - 1, str(value)


def verify_chain(session: Session, start_seq: int | None = None, end_seq: int | None = None, *,
                 chain: str = "observations", batch: int = 10_000) -> ChainReport:
    """Recompute the chain (``observations`` or ``audit``) over ``[start_seq, end_seq]``.

    Beyond the hashes it checks each unpurged observation's address digest, each transcript's SHA-256,
    and, when ``end_seq`` is None, that the chain head names the last row (no rows cut off at the end).
    """
    table = _OBS if chain == "observations" else _AUDIT
    anchor_seq, anchor_hash = _anchor(session, table, start_seq)
    checker = ChainChecker(chain, anchor_seq=anchor_seq, anchor_hash=anchor_hash)
    if chain == "observations":
        rows = _pages(session, _observation_select(True), _OBS.c.seq, start_seq, end_seq, batch)
        for row in rows:
            obs = _stored(row)
            checker.feed_canonical(obs.seq, _canonical(checker, obs), obs.prev_hash, obs.row_hash)
            _check_observation_extras(checker, obs, row[18])
    elif chain == "audit":
        for row in _pages(session, select(table), table.c.seq, start_seq, end_seq, batch):
            fields = audit_fields(seq=row.seq, at=row.at, actor=row.actor, action=row.action, detail=row.detail)
            checker.feed(row.seq, fields, row.prev_hash, row.row_hash)
    else:
        raise LocalProtocolError(f"unknown chain {chain!r}")
    report = checker.report
    head = session.execute(select(_HEADS.c.seq, _HEADS.c.hash).where(_HEADS.c.name == chain)).one()
    report.head_seq, report.head_hash = int(head.seq), str(head.hash)
    if end_seq is None and (head.seq != (report.last_seq or anchor_seq) or head.hash != report.last_hash):
        checker.problem(int(head.seq), f"chain head (seq {head.seq}) does not match the last row "
                                       f"(seq {report.last_seq}): rows are missing or were added outside the chain")
    return report


def _canonical(checker: ChainChecker, obs: StoredObservation) -> bytes | None:
    try:
        prefix, suffix = observation_template(
            observed_at=format_timestamp(obs.observed_at), torrent=obs.infohash, addr=obs.addr_digest,
            level=obs.level, source=obs.source, client=obs.client, peer_id=obs.peer_id,
            have_fraction=obs.have_fraction, transcript=obs.transcript_sha256)
    except (ValueError, TypeError) as exc:
        checker.problem(obs.seq, f"row cannot be hashed: {exc}")
        return None
    return prefix + str(obs.seq).encode("ascii") + suffix


def _check_observation_extras(checker: ChainChecker, obs: StoredObservation, body: str | None) -> None:
    blinded = (obs.ip, obs.port, obs.reporter, obs.addr_salt)
    if obs.ip is None:
        checker.report.purged += 1
        if any(v is not None for v in blinded):
            checker.problem(obs.seq, "partly purged address")
    elif obs.addr_salt is None or obs.port is None:
        checker.problem(obs.seq, "address without its salt")
    elif address_digest(obs.addr_salt, obs.ip, obs.port, obs.reporter) != obs.addr_digest:
        checker.problem(obs.seq, "address or reporter does not match the hashed address digest")
    if obs.transcript_id is not None and (
            body is None or hashlib.sha256(body.encode("utf-8")).hexdigest() != obs.transcript_sha256):
        checker.problem(obs.seq, "transcript does not match its SHA-256")
