"""SQLAlchemy 2.0 typed models of the evidence store (DESIGN.md principles 3 and 4; docs/storage.md).

The schema is created and changed only by the Alembic migrations in ``p2pwatch/storage/migrations``; these
models describe it for queries and must match it (``tests/storage/test_storage_schema.py`` compares them).

Conventions:

* Times are stored as UTC without a zone (``UTCDateTime``) and read back as aware UTC datetimes, the same
  on SQLite and PostgreSQL, with microseconds.
* JSON is stored as canonical text (``JSONText``: sorted keys, no whitespace) and read back as Python values.
* Hashes and ids are lowercase hex strings; the torrent's ``dht_id`` (v1 infohash, or the v2 infohash
  truncated to 20 bytes) is its unique key.
* ``observations`` and ``audit_log`` are append-only and hash-chained (p2pwatch.storage.chain). Their
  primary key is ``seq``. ``chain_heads`` holds each chain's last ``seq`` and ``row_hash``; writers lock
  that row around every batch so the chain stays linear with several writer processes.
* Departure from the issue's list: the watch schedule is one row per torrent (``watches``) so that one
  claim covers the torrent whichever cases want it; cases attach through ``case_watches``.

Append-only guard (layer 1 of 3): the ORM refuses to flush an UPDATE or DELETE of an ``Observation`` or
``AuditEntry``. Layer 2 is p2pwatch.storage.db's statement guard on every engine it creates; layer 3 is the
database triggers created by the migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

from p2pwatch.errors import AppendOnlyViolation
from p2pwatch.storage.chain import canonical_json

#: Peer observation levels (DESIGN.md principle 4).
LEVELS = {0: "listed", 1: "connected", 2: "advertised", 3: "served", 4: "served-whole"}
#: Where an observation came from.
SOURCES = ("dht", "tracker", "pex", "probe", "announce")
#: How a match was confirmed.
METHODS = ("exact-metadata", "exact-piece", "perceptual")
#: Names of the hash chains (rows of ``chain_heads``).
CHAINS = ("observations", "audit")

#: A 64-bit integer key that is SQLite's rowid there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC timestamp stored without a zone; aware datetimes are converted, naive ones taken as UTC."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONText(TypeDecorator[Any]):
    """A JSON value stored as canonical text (deterministic, so stored bytes are reproducible)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else canonical_json(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        import json

        return None if value is None else json.loads(value)


#: Deterministic constraint names; the migrations spell the same names out.
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "ix": "ix_%(column_0_label)s",
}


class Base(DeclarativeBase):
    """Declarative base of every p2pwatch table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    allow_content_in_bundles: Mapped[bool] = mapped_column(Boolean, server_default=false())
    notes: Mapped[str | None] = mapped_column(Text)


class Content(Base):
    """A registered content item: its fingerprint (hashes only, never content)."""

    __tablename__ = "content"
    __table_args__ = (UniqueConstraint("case_id", "fingerprint_id"), Index("ix_content_size", "size"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    fingerprint_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[Any] = mapped_column(JSONText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Keyword(Base):
    __tablename__ = "keywords"
    __table_args__ = (UniqueConstraint("case_id", "normalized"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    normalized: Mapped[str] = mapped_column(Text)


class Torrent(Base):
    """A torrent known by infohash; its metainfo (info dict or .torrent) is kept verbatim when fetched."""

    __tablename__ = "torrents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dht_id: Mapped[str] = mapped_column(String(40), unique=True)
    infohash_v1: Mapped[str | None] = mapped_column(String(40), index=True)
    infohash_v2: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    metainfo: Mapped[bytes | None] = mapped_column(LargeBinary)
    magnet: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(32))


class TorrentFile(Base):
    __tablename__ = "torrent_files"
    __table_args__ = (UniqueConstraint("torrent_id", "file_index"), Index("ix_torrent_files_length", "length"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    torrent_id: Mapped[int] = mapped_column(ForeignKey("torrents.id", ondelete="CASCADE"))
    file_index: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger)
    pieces_root: Mapped[str | None] = mapped_column(String(64))
    padding: Mapped[bool] = mapped_column(Boolean, server_default=false())


class Match(Base):
    __tablename__ = "matches"
    __table_args__ = (
        UniqueConstraint("content_id", "torrent_id", "file_index", "method"),
        CheckConstraint("method IN ('exact-metadata', 'exact-piece', 'perceptual')", name="method"),
        Index("ix_matches_torrent_id", "torrent_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    content_id: Mapped[int | None] = mapped_column(ForeignKey("content.id", ondelete="SET NULL"))
    torrent_id: Mapped[int] = mapped_column(ForeignKey("torrents.id"))
    file_index: Mapped[int | None] = mapped_column(Integer)
    file_path: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(16))
    proof: Mapped[Any] = mapped_column(JSONText)
    bytes_fetched: Mapped[int] = mapped_column(BigInteger, server_default="0")
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Watch(Base):
    """The monitoring schedule of one torrent, claimed by one worker at a time (p2pwatch.storage.claims)."""

    __tablename__ = "watches"
    __table_args__ = (Index("ix_watches_due", "active", "next_check_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    torrent_id: Mapped[int] = mapped_column(ForeignKey("torrents.id"), unique=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(Boolean, server_default=true())
    next_check_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_peer_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str | None] = mapped_column(String(16))
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseWatch(Base):
    """Which case wants a torrent watched (a match found it, or an investigator ran ``watch``)."""

    __tablename__ = "case_watches"
    __table_args__ = (UniqueConstraint("case_id", "torrent_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    torrent_id: Mapped[int] = mapped_column(ForeignKey("torrents.id"), index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(16))


class Peer(Base):
    """What is known about one peer address; ``last_seen`` is coarse (exact times are in observations).

    ``last_seen`` lags the newest observation by at most ``PEER_LAST_SEEN_GRANULARITY`` (ledger.py);
    ``max_level`` is the highest level ever observed. Retention deletes a peer once ``last_seen`` is older
    than the cutoff by that granularity and ``max_level`` is at most 2 (its addresses were all purged).
    """

    __tablename__ = "peers"
    __table_args__ = (UniqueConstraint("ip", "port"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ip: Mapped[str] = mapped_column(String(45))
    port: Mapped[int] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(Text)
    peer_id: Mapped[str | None] = mapped_column(String(40))
    country: Mapped[str | None] = mapped_column(String(8))
    asn: Mapped[int | None] = mapped_column(Integer)
    org: Mapped[str | None] = mapped_column(Text)
    max_level: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Transcript(Base):
    """A probe transcript (handshake, bitfield, piece index and hash, times), content-addressed."""

    __tablename__ = "transcripts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[str] = mapped_column(Text)


class Observation(Base):
    """One append-only, hash-chained peer observation (fields hashed: p2pwatch.storage.chain)."""

    __tablename__ = "observations"
    __table_args__ = (
        CheckConstraint("level BETWEEN 0 AND 4", name="level"),
        CheckConstraint("source IN ('dht', 'tracker', 'pex', 'probe', 'announce')", name="source"),
        Index("ix_observations_torrent_seq", "torrent_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    torrent_id: Mapped[int] = mapped_column(ForeignKey("torrents.id"))
    ip: Mapped[str | None] = mapped_column(String(45))
    port: Mapped[int | None] = mapped_column(Integer)
    reporter: Mapped[str | None] = mapped_column(Text)
    addr_salt: Mapped[str | None] = mapped_column(String(32))
    addr_digest: Mapped[str] = mapped_column(String(64))
    level: Mapped[int] = mapped_column(SmallInteger)
    source: Mapped[str] = mapped_column(String(16))
    client: Mapped[str | None] = mapped_column(Text)
    peer_id: Mapped[str | None] = mapped_column(String(40))
    have_fraction: Mapped[float | None] = mapped_column(Float)
    transcript_id: Mapped[int | None] = mapped_column(ForeignKey("transcripts.id"))
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class SwarmSample(Base):
    """Swarm size at one time from one source (a tracker URL, ``dht`` or ``probe``)."""

    __tablename__ = "swarm_samples"
    __table_args__ = (Index("ix_swarm_samples_torrent_at", "torrent_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    torrent_id: Mapped[int] = mapped_column(ForeignKey("torrents.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(Text)
    seeders: Mapped[int | None] = mapped_column(Integer)
    leechers: Mapped[int | None] = mapped_column(Integer)
    dht_peers: Mapped[int | None] = mapped_column(Integer)
    probed: Mapped[Any] = mapped_column(JSONText)


class AuditEntry(Base):
    """One append-only, hash-chained audit-log entry (who did what: exports, withdrawals, purges)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    detail: Mapped[Any] = mapped_column(JSONText)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class ChainHead(Base):
    """The last ``seq`` and ``row_hash`` of a chain; locked (FOR UPDATE) around every append."""

    __tablename__ = "chain_heads"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class State(Base):
    """Key/value state of the DHT node and the monitor (node id, routing table, schedules)."""

    __tablename__ = "state"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONText)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


#: Web roles, least to most (issue 14): staff register content and see their own cases; investigators also
#: see peer addresses and export bundles; admins also manage accounts.
ROLES = ("staff", "investigator", "admin")


class User(Base):
    """A web account (revision 0002). ``password_hash`` is an argon2id PHC string (p2pwatch.web.accounts)."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('staff', 'investigator', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_signin_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseMember(Base):
    """A staff account's access to a case (the creator is added; investigators and admins see every case)."""

    __tablename__ = "case_members"
    __table_args__ = (UniqueConstraint("case_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


def _refuse_change(mapper: Mapper[Any], connection: Any, target: Any) -> None:
    raise AppendOnlyViolation(f"{mapper.class_.__tablename__} rows are append-only; they are never changed")


for _model in (Observation, AuditEntry):
    event.listen(_model, "before_update", _refuse_change)
    event.listen(_model, "before_delete", _refuse_change)
