"""Appending to and reading the hash-chained tables: the one place that extends a chain.

``append_observations`` and ``append_audit`` are the only code that writes ``observations`` and
``audit_log``. Both lock their chain-head row (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite a no-op
``UPDATE`` of the head, which takes the database write lock, unless the session already began with
``BEGIN IMMEDIATE``), so several processes sharing a database extend one linear chain. Everything that
does not depend on the head (validation, transcripts, salted address digests, the canonical JSON around
``seq``) is computed before the lock; under it only ``seq`` is rendered and two SHA-256 are taken per row.

The trio writer (p2pwatch.storage.writer) calls these in batches; a CLI command that records a few rows
(``lookup --record``) may call them directly in a session from ``writer_sessionmaker``.

Reading back (``iter_observations``, ``verify_chain``, ``StoredObservation``) is p2pwatch.storage.reading,
re-exported here.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from p2pwatch.errors import LocalProtocolError
from p2pwatch.storage.chain import (
    SALT_BYTES,
    address_digest_bytes,
    audit_fields,
    canonical_json,
    observation_template,
    quantize_fraction,
    row_hash,
)
from p2pwatch.storage.models import (
    LEVELS,
    SOURCES,
    AuditEntry,
    Base,
    ChainHead,
    Observation,
    Peer,
    SwarmSample,
    Torrent,
)
from p2pwatch.storage.models import Transcript as TranscriptRow
from p2pwatch.storage.reading import StoredObservation, iter_observations, verify_chain  # re-exported

#: ``peers.last_seen`` is rewritten only when it moves by more than this (exact times are in observations);
#: a watched swarm's peers are seen again every few minutes, and rewriting each peer row each time would
#: cost as much as appending the observations themselves.
PEER_LAST_SEEN_GRANULARITY = timedelta(hours=1)
#: Most peers the writer remembers to skip redundant ``peers`` upserts.
PEER_CACHE_SIZE = 200_000

_TABLES = Base.metadata.tables
_OBS = _TABLES[Observation.__tablename__]
_TORRENTS = _TABLES[Torrent.__tablename__]
_TRANSCRIPTS = _TABLES[TranscriptRow.__tablename__]
_PEERS = _TABLES[Peer.__tablename__]
_HEADS = _TABLES[ChainHead.__tablename__]
_AUDIT = _TABLES[AuditEntry.__tablename__]
_SAMPLES = _TABLES[SwarmSample.__tablename__]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def canonical_ip(text: str) -> str:
    """The stored form of an IP address (``inet_ntop`` of ``inet_pton``); LocalProtocolError when invalid."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError, TypeError):
            continue
    raise LocalProtocolError(f"{text!r} is not an IP address")


def clean_text(text: str) -> str:
    """Text any database and UTF-8 accept: NUL and lone surrogates (from undecodable bytes) become U+FFFD."""
    text = str(text)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


@dataclass(frozen=True, slots=True)
class ObservationRecord:
    """One peer observation to append (validated and normalized on creation, before it reaches a writer).

    ``transcript`` is the JSON-able transcript of a level ≥ 1 probe; it is stored as canonical JSON and the
    chain covers its SHA-256 (``transcript_json`` is that text, computed here, so a transcript that is not
    JSON fails its producer, not the writer). ``country``/``asn``/``org`` only update the ``peers`` row.
    Text from peers is cleaned (``clean_text``); ``ip`` is stored in ``canonical_ip`` form.
    """

    torrent_id: int
    ip: str
    port: int
    level: int
    source: str
    observed_at: datetime
    reporter: str | None = None
    client: str | None = None
    peer_id: str | None = None
    have_fraction: float | None = None
    transcript: Any = None
    country: str | None = None
    asn: int | None = None
    org: str | None = None
    transcript_json: str | None = field(init=False, default=None, repr=False, compare=False)
    transcript_sha256: str | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise LocalProtocolError(f"observation level must be 0..4, not {self.level!r}")
        if self.source not in SOURCES:
            raise LocalProtocolError(f"observation source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if not 0 <= self.port <= 65535:
            raise LocalProtocolError(f"port {self.port} out of range")
        object.__setattr__(self, "ip", canonical_ip(self.ip))
        for name in ("reporter", "client"):
            text = getattr(self, name)
            if text is not None:
                object.__setattr__(self, name, clean_text(text))
        object.__setattr__(self, "observed_at", _utc(self.observed_at))
        peer_id: Any = self.peer_id
        if isinstance(peer_id, bytes | bytearray):
            peer_id = bytes(peer_id).hex()
        if peer_id is not None:
            peer_id = str(peer_id).lower()
            if len(peer_id) != 40 or any(c not in "0123456789abcdef" for c in peer_id):
                raise LocalProtocolError("peer_id must be 20 bytes or 40 hex characters")
        object.__setattr__(self, "peer_id", peer_id)
        try:
            object.__setattr__(self, "have_fraction", quantize_fraction(self.have_fraction))
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"have_fraction: {exc}") from None
        if self.transcript is not None:
            try:
                text = canonical_json(self.transcript)
                text.encode("utf-8")
            except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
                raise LocalProtocolError(f"transcript is not canonical JSON: {exc}") from None
            object.__setattr__(self, "transcript_json", text)
            object.__setattr__(self, "transcript_sha256", hashlib.sha256(text.encode("utf-8")).hexdigest())


@dataclass(frozen=True, slots=True)
class SwarmSampleRecord:
    """A swarm-size sample; ``probed`` maps level (0..4) to the number of peers probed to that level."""

    torrent_id: int
    at: datetime
    source: str
    seeders: int | None = None
    leechers: int | None = None
    dht_peers: int | None = None
    probed: Mapping[int, int] | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one append committed to a chain (``count`` 0: nothing, seqs are the head's)."""

    first_seq: int
    last_seq: int
    count: int
    last_hash: str


class PeerCache:
    """What the writer last wrote to ``peers`` per address, to skip upserts that would change nothing."""

    def __init__(self, size: int = PEER_CACHE_SIZE) -> None:
        self.size = size
        self._rows: dict[tuple[str, int], tuple[datetime, tuple[Any, ...]]] = {}

    def needs_write(self, key: tuple[str, int], seen: datetime, meta: tuple[Any, ...]) -> bool:
        """``meta`` is ``(client, peer_id, country, asn, org, level)``."""
        known = self._rows.get(key)
        if known is None:
            return True
        last, old = known
        if seen - last > PEER_LAST_SEEN_GRANULARITY or meta[5] > old[5]:
            return True
        client, peer_id, country, asn, org, _ = meta
        return ((client is not None and client != old[0]) or (peer_id is not None and peer_id != old[1])
                or (country is not None and country != old[2]) or (asn is not None and asn != old[3])
                or (org is not None and org != old[4]))

    def remember(self, key: tuple[str, int], seen: datetime, meta: tuple[Any, ...]) -> None:
        if len(self._rows) >= self.size:
            self._rows.clear()
        known = self._rows.get(key)
        if known is not None:
            merged = [new if new is not None else old for new, old in zip(meta[:-1], known[1][:-1], strict=True)]
            meta = (*merged, max(meta[-1], known[1][-1]))
        self._rows[key] = (seen, meta)


def lock_chain_head(session: Session, chain: str) -> tuple[int, str]:
    """Lock a chain's head row for the rest of the transaction; return its ``(seq, hash)``."""
    if session.get_bind().dialect.name == "sqlite":
        # Takes SQLite's write lock (a no-op when the transaction began IMMEDIATE).
        session.execute(update(_HEADS).where(_HEADS.c.name == chain).values(seq=_HEADS.c.seq))
    row = session.execute(
        select(_HEADS.c.seq, _HEADS.c.hash).where(_HEADS.c.name == chain).with_for_update()
    ).one_or_none()
    if row is None:
        raise LocalProtocolError(f"no chain head {chain!r}; is the schema migrated?")
    return int(row.seq), str(row.hash)


def store_transcripts(session: Session, bodies: Iterable[str] | Mapping[str, str]) -> dict[str, int]:
    """Insert transcript bodies (canonical JSON text) once each; return ``sha256 -> transcripts.id``.

    ``bodies`` may be given already keyed by their SHA-256 hex.
    """
    by_hash = dict(bodies) if isinstance(bodies, Mapping) else {
        hashlib.sha256(body.encode("utf-8")).hexdigest(): body for body in bodies}
    if not by_hash:
        return {}
    conn = session.connection()
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    conn.exec_driver_sql(f"INSERT INTO transcripts (sha256, body) VALUES ({mark}, {mark}) "
                         "ON CONFLICT (sha256) DO NOTHING", sorted(by_hash.items()))
    ids: dict[str, int] = {}
    hashes = list(by_hash)
    for i in range(0, len(hashes), 500):
        rows = session.execute(select(_TRANSCRIPTS.c.sha256, _TRANSCRIPTS.c.id)
                               .where(_TRANSCRIPTS.c.sha256.in_(hashes[i:i + 500])))
        ids.update((str(r.sha256), int(r.id)) for r in rows)
    return ids


def _torrent_dht_ids(session: Session, torrent_ids: set[int], cache: dict[int, str]) -> None:
    missing = [t for t in torrent_ids if t not in cache]
    if missing:
        for row in session.execute(select(_TORRENTS.c.id, _TORRENTS.c.dht_id).where(_TORRENTS.c.id.in_(missing))):
            cache[int(row.id)] = str(row.dht_id)
    unknown = [t for t in torrent_ids if t not in cache]
    if unknown:
        raise LocalProtocolError(f"observations name unknown torrent ids {sorted(unknown)[:5]}")


def upsert_peers(session: Session, records: Sequence[ObservationRecord], cache: PeerCache | None = None) -> int:
    """Create or refresh the ``peers`` rows of these observations; return how many rows were written."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in records:
        key = (rec.ip, rec.port)
        row = latest.get(key)
        if row is None:
            if cache is not None and not cache.needs_write(
                    key, rec.observed_at, (rec.client, rec.peer_id, rec.country, rec.asn, rec.org, rec.level)):
                continue
            latest[key] = {"ip": rec.ip, "port": rec.port, "client": rec.client, "peer_id": rec.peer_id,
                           "country": rec.country, "asn": rec.asn, "org": rec.org, "max_level": rec.level,
                           "first_seen": rec.observed_at, "last_seen": rec.observed_at}
            continue
        row["max_level"] = max(row["max_level"], rec.level)
        row["first_seen"] = min(row["first_seen"], rec.observed_at)
        row["last_seen"] = max(row["last_seen"], rec.observed_at)
        for name in ("client", "peer_id", "country", "asn", "org"):
            value = getattr(rec, name)
            if value is not None:
                row[name] = value
    meta_keys = ("client", "peer_id", "country", "asn", "org", "max_level")
    todo = [latest[key] for key in sorted(latest)]  # a fixed order, so concurrent upserts cannot deadlock
    if not todo:
        return 0
    dialect = session.get_bind().dialect.name
    stmt: Any = postgresql.insert(_PEERS) if dialect == "postgresql" else sqlite.insert(_PEERS)
    ex = stmt.excluded
    newer, older = (func.greatest, func.least) if dialect == "postgresql" else (func.max, func.min)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_PEERS.c.ip, _PEERS.c.port],
        set_={"last_seen": newer(_PEERS.c.last_seen, ex.last_seen),
              "first_seen": older(_PEERS.c.first_seen, ex.first_seen),
              "max_level": newer(_PEERS.c.max_level, ex.max_level),
              **{k: func.coalesce(ex[k], _PEERS.c[k]) for k in meta_keys if k != "max_level"}},
    )
    session.execute(stmt, todo)  # executemany (PostgreSQL: SQLAlchemy's batched "insertmanyvalues")
    if cache is not None:
        for row in todo:
            cache.remember((row["ip"], row["port"]), row["last_seen"], tuple(row[k] for k in meta_keys))
    return len(todo)


#: Column order of the raw observation INSERT (the writer's fast path skips SQLAlchemy's per-row binding).
_INSERT_COLUMNS = ("seq", "torrent_id", "ip", "port", "reporter", "addr_salt", "addr_digest", "level", "source",
                   "client", "peer_id", "have_fraction", "transcript_id", "observed_at", "prev_hash", "row_hash")


def _insert_rows(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """Insert observation rows (tuples in ``_INSERT_COLUMNS`` order): COPY on PostgreSQL, executemany else."""
    conn = session.connection()
    columns = ", ".join(_INSERT_COLUMNS)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(f"COPY observations ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(_INSERT_COLUMNS))
    conn.exec_driver_sql(f"INSERT INTO observations ({columns}) VALUES ({marks})", rows)


def _db_timestamp(session: Session) -> Callable[[datetime, str], Any]:
    """How an aware UTC datetime (and its naive ISO text) goes to the driver.

    SQLite: SQLAlchemy's text format ``YYYY-MM-DD HH:MM:SS.ffffff``; PostgreSQL: a naive datetime (the column
    is ``timestamp without time zone``; an aware value would be converted through the session time zone).
    """
    if session.get_bind().dialect.name == "sqlite":
        return lambda moment, iso: f"{iso[:10]} {iso[11:]}"
    return lambda moment, iso: moment.replace(tzinfo=None)


def append_observations(session: Session, records: Sequence[ObservationRecord], *,
                        dht_ids: dict[int, str] | None = None, peers: PeerCache | None = None) -> AppendResult:
    """Append observations to the chain in the session's transaction (the caller commits).

    ``dht_ids`` (torrent id -> DHT id hex) and ``peers`` are caches the writer keeps between batches.
    """
    if dht_ids is None:
        dht_ids = {}
    if not records:
        seq, head = lock_chain_head(session, "observations")
        return AppendResult(seq + 1, seq, 0, head)
    _torrent_dht_ids(session, {r.torrent_id for r in records}, dht_ids)
    transcript_ids = store_transcripts(session, {r.transcript_sha256: r.transcript_json for r in records
                                                 if r.transcript_sha256 is not None and r.transcript_json})
    salts = os.urandom(SALT_BYTES * len(records))
    salts_hex = salts.hex()
    sha256 = hashlib.sha256
    stamp = _db_timestamp(session)
    prepared: list[tuple[bytes, bytes, tuple[Any, ...]]] = []
    for i, rec in enumerate(records):
        salt = salts[i * SALT_BYTES:(i + 1) * SALT_BYTES]
        digest = address_digest_bytes(salt, rec.ip, rec.port, rec.reporter)
        tsha = rec.transcript_sha256
        # observed_at is aware UTC (ObservationRecord): its ISO text is 26 characters and "+00:00"
        iso = rec.observed_at.isoformat(timespec="microseconds")[:26]
        prefix, suffix = observation_template(
            observed_at=iso + "Z", torrent=dht_ids[rec.torrent_id],
            addr=digest, level=rec.level, source=rec.source, client=rec.client, peer_id=rec.peer_id,
            have_fraction=rec.have_fraction, transcript=tsha)
        values = (rec.torrent_id, rec.ip, rec.port, rec.reporter, salts_hex[i * 32:(i + 1) * 32], digest,
                  rec.level, rec.source, rec.client, rec.peer_id, rec.have_fraction,
                  None if tsha is None else transcript_ids[tsha], stamp(rec.observed_at, iso))
        prepared.append((prefix, suffix, values))
    upsert_peers(session, records, peers)

    head_seq, prev = lock_chain_head(session, "observations")
    seq = head_seq
    rows = []
    link = bytes.fromhex(prev)
    for prefix, suffix, values in prepared:
        seq += 1
        link = sha256(link + sha256(prefix + str(seq).encode() + suffix).digest()).digest()
        digest = link.hex()
        rows.append((seq, *values, prev, digest))
        prev = digest
    _insert_rows(session, rows)
    session.execute(update(_HEADS).where(_HEADS.c.name == "observations").values(seq=seq, hash=prev))
    return AppendResult(head_seq + 1, seq, len(prepared), prev)


def append_audit(session: Session, actor: str, action: str, detail: Mapping[str, Any] | None = None,
                 *, at: datetime | None = None) -> AppendResult:
    """Append one audit-log entry (in the session's transaction; the caller commits)."""
    moment = _utc(at or datetime.now(UTC))
    detail_obj = dict(detail or {})
    canonical_json(detail_obj)  # refuse non-JSON details before taking the lock
    seq, prev = lock_chain_head(session, "audit")
    seq += 1
    digest = row_hash(audit_fields(seq=seq, at=moment, actor=actor, action=action, detail=detail_obj), prev)
    session.execute(insert(_AUDIT).values(seq=seq, at=moment, actor=actor, action=action,
                                                        detail=detail_obj, prev_hash=prev, row_hash=digest))
    session.execute(update(_HEADS).where(_HEADS.c.name == "audit").values(seq=seq, hash=digest))
    return AppendResult(seq, seq, 1, digest)


def insert_swarm_samples(session: Session, samples: Sequence[SwarmSampleRecord]) -> None:
    """Insert swarm samples (not chained) in the session's transaction."""
    if samples:
        session.execute(insert(_SAMPLES), [
            {"torrent_id": s.torrent_id, "at": _utc(s.at), "source": s.source, "seeders": s.seeders,
             "leechers": s.leechers, "dht_peers": s.dht_peers,
             "probed": {str(k): int(v) for k, v in sorted((s.probed or {}).items())}}
            for s in samples])


def chain_head(session: Session, chain: str = "observations") -> tuple[int, str]:
    """A chain's head ``(seq, hash)`` without locking it."""
    row = session.execute(select(_HEADS.c.seq, _HEADS.c.hash).where(_HEADS.c.name == chain)).one()
    return int(row.seq), str(row.hash)


__all__ = [
    "AppendResult",
    "ObservationRecord",
    "PeerCache",
    "StoredObservation",
    "SwarmSampleRecord",
    "append_audit",
    "append_observations",
    "canonical_ip",
    "chain_head",
    "clean_text",
    "insert_swarm_samples",
    "iter_observations",
    "lock_chain_head",
    "store_transcripts",
    "upsert_peers",
    "verify_chain",
]
