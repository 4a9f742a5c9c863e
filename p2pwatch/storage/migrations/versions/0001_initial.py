"""Initial schema: cases, registry, torrents, matches, watches, peers, chained observations and audit log.

Also creates the append-only guards in the database itself (layer 3, see p2pwatch.storage.models):

* ``observations``: DELETE and TRUNCATE are refused; UPDATE is refused except the retention purge, which may
  only set ``ip``, ``port``, ``reporter`` and ``addr_salt`` to NULL on a level 0–2 row and change nothing else.
* ``audit_log``: UPDATE, DELETE and TRUNCATE are refused.
* ``chain_heads``: DELETE is refused and ``seq`` may only grow.

The two chain heads start at seq 0 with the genesis hash (64 zeros).

Revision ID: 0001
Revises:
Create Date: 2024-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Columns a purge must leave untouched.
KEPT = ("seq", "torrent_id", "addr_digest", "level", "source", "client", "peer_id", "have_fraction",
        "transcript_id", "observed_at", "prev_hash", "row_hash")
PURGED = ("ip", "port", "reporter", "addr_salt")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=False), nullable=nullable)


def _fk(table: str, column: str, target: str, ondelete: str | None = None) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"),
                                   ondelete=ondelete)


def _create_tables() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("withdrawn_at", True),
        sa.Column("allow_content_in_bundles", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("name", name=op.f("uq_cases_name")),
    )
    op.create_table(
        "content",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        _ts("created_at"),
        _fk("content", "case_id", "cases", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content")),
        sa.UniqueConstraint("case_id", "fingerprint_id", name=op.f("uq_content_case_id_fingerprint_id")),
    )
    op.create_index("ix_content_case_id", "content", ["case_id"])
    op.create_index("ix_content_size", "content", ["size"])
    op.create_table(
        "keywords",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("normalized", sa.Text(), nullable=False),
        _fk("keywords", "case_id", "cases", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keywords")),
        sa.UniqueConstraint("case_id", "normalized", name=op.f("uq_keywords_case_id_normalized")),
    )
    op.create_index("ix_keywords_case_id", "keywords", ["case_id"])
    op.create_table(
        "torrents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dht_id", sa.String(40), nullable=False),
        sa.Column("infohash_v1", sa.String(40), nullable=True),
        sa.Column("infohash_v2", sa.String(64), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("metainfo", sa.LargeBinary(), nullable=True),
        sa.Column("magnet", sa.Text(), nullable=True),
        _ts("first_seen"),
        sa.Column("source", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_torrents")),
        sa.UniqueConstraint("dht_id", name=op.f("uq_torrents_dht_id")),
    )
    op.create_index("ix_torrents_infohash_v1", "torrents", ["infohash_v1"])
    op.create_index("ix_torrents_infohash_v2", "torrents", ["infohash_v2"])
    op.create_table(
        "torrent_files",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("torrent_id", sa.Integer(), nullable=False),
        sa.Column("file_index", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("pieces_root", sa.String(64), nullable=True),
        sa.Column("padding", sa.Boolean(), server_default=sa.false(), nullable=False),
        _fk("torrent_files", "torrent_id", "torrents", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_torrent_files")),
        sa.UniqueConstraint("torrent_id", "file_index", name=op.f("uq_torrent_files_torrent_id_file_index")),
    )
    op.create_index("ix_torrent_files_length", "torrent_files", ["length"])
    op.create_table(
        "matches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("content_id", sa.Integer(), nullable=True),
        sa.Column("torrent_id", sa.Integer(), nullable=False),
        sa.Column("file_index", sa.Integer(), nullable=True),
        sa.Column("file_path", sa.Text(), nullable=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("proof", sa.Text(), nullable=False),
        sa.Column("bytes_fetched", sa.BigInteger(), server_default="0", nullable=False),
        _ts("confirmed_at"),
        sa.CheckConstraint("method IN ('exact-metadata', 'exact-piece', 'perceptual')",
                           name=op.f("ck_matches_method")),
        _fk("matches", "case_id", "cases", "CASCADE"),
        _fk("matches", "content_id", "content", "SET NULL"),
        _fk("matches", "torrent_id", "torrents"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_matches")),
        sa.UniqueConstraint("content_id", "torrent_id", "file_index", "method",
                            name=op.f("uq_matches_content_id_torrent_id_file_index_method")),
    )
    op.create_index("ix_matches_case_id", "matches", ["case_id"])
    op.create_index("ix_matches_torrent_id", "matches", ["torrent_id"])
    op.create_table(
        "watches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("torrent_id", sa.Integer(), nullable=False),
        _ts("added_at"),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        _ts("next_check_at"),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        _ts("claimed_until", True),
        _ts("last_checked_at", True),
        _ts("last_peer_at", True),
        sa.Column("status", sa.String(16), nullable=True),
        _ts("status_changed_at", True),
        _fk("watches", "torrent_id", "torrents"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watches")),
        sa.UniqueConstraint("torrent_id", name=op.f("uq_watches_torrent_id")),
    )
    op.create_index("ix_watches_due", "watches", ["active", "next_check_at"])
    op.create_table(
        "case_watches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("torrent_id", sa.Integer(), nullable=False),
        _ts("added_at"),
        sa.Column("reason", sa.String(16), nullable=False),
        _fk("case_watches", "case_id", "cases", "CASCADE"),
        _fk("case_watches", "torrent_id", "torrents"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_watches")),
        sa.UniqueConstraint("case_id", "torrent_id", name=op.f("uq_case_watches_case_id_torrent_id")),
    )
    op.create_index("ix_case_watches_torrent_id", "case_watches", ["torrent_id"])
    op.create_table(
        "peers",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("client", sa.Text(), nullable=True),
        sa.Column("peer_id", sa.String(40), nullable=True),
        sa.Column("country", sa.String(8), nullable=True),
        sa.Column("asn", sa.Integer(), nullable=True),
        sa.Column("org", sa.Text(), nullable=True),
        sa.Column("max_level", sa.SmallInteger(), server_default="0", nullable=False),
        _ts("first_seen"),
        _ts("last_seen"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peers")),
        sa.UniqueConstraint("ip", "port", name=op.f("uq_peers_ip_port")),
    )
    op.create_index("ix_peers_last_seen", "peers", ["last_seen"])
    op.create_table(
        "transcripts",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcripts")),
        sa.UniqueConstraint("sha256", name=op.f("uq_transcripts_sha256")),
    )
    op.create_table(
        "observations",
        sa.Column("seq", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("torrent_id", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("reporter", sa.Text(), nullable=True),
        sa.Column("addr_salt", sa.String(32), nullable=True),
        sa.Column("addr_digest", sa.String(64), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("client", sa.Text(), nullable=True),
        sa.Column("peer_id", sa.String(40), nullable=True),
        sa.Column("have_fraction", sa.Float(), nullable=True),
        sa.Column("transcript_id", BIG_ID, nullable=True),
        _ts("observed_at"),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.CheckConstraint("level BETWEEN 0 AND 4", name=op.f("ck_observations_level")),
        sa.CheckConstraint("source IN ('dht', 'tracker', 'pex', 'probe', 'announce')",
                           name=op.f("ck_observations_source")),
        _fk("observations", "torrent_id", "torrents"),
        _fk("observations", "transcript_id", "transcripts"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_observations")),
    )
    op.create_index("ix_observations_torrent_seq", "observations", ["torrent_id", "seq"])
    op.create_table(
        "swarm_samples",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("torrent_id", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("seeders", sa.Integer(), nullable=True),
        sa.Column("leechers", sa.Integer(), nullable=True),
        sa.Column("dht_peers", sa.Integer(), nullable=True),
        sa.Column("probed", sa.Text(), nullable=False),
        _fk("swarm_samples", "torrent_id", "torrents"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_swarm_samples")),
    )
    op.create_index("ix_swarm_samples_torrent_at", "swarm_samples", ["torrent_id", "at"])
    op.create_table(
        "audit_log",
        sa.Column("seq", BIG_ID, autoincrement=False, nullable=False),
        _ts("at"),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )
    heads = op.create_table(
        "chain_heads",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_chain_heads")),
    )
    op.bulk_insert(heads, [{"name": "observations", "seq": 0, "hash": GENESIS},
                           {"name": "audit", "seq": 0, "hash": GENESIS}])
    op.create_table(
        "state",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_state")),
    )


def _purge_condition(distinct: str) -> str:
    """SQL that is true when an UPDATE of an observation is exactly a retention purge."""
    nulls = " AND ".join(f"NEW.{c} IS NULL" for c in PURGED)
    same = " AND ".join(f"NEW.{c} {distinct} OLD.{c}" for c in KEPT)
    return f"OLD.level <= 2 AND {nulls} AND {same}"


POSTGRESQL_GUARDS = f"""
CREATE FUNCTION p2pwatch_observations_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND {_purge_condition('IS NOT DISTINCT FROM')} THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'observations are append-only (only the retention purge may erase addresses of level 0-2 rows)';
END $$;
CREATE FUNCTION p2pwatch_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$;
CREATE FUNCTION p2pwatch_chain_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.name = OLD.name AND NEW.seq >= OLD.seq THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'chain heads only move forward';
END $$;
CREATE TRIGGER observations_append_only BEFORE UPDATE OR DELETE ON observations
    FOR EACH ROW EXECUTE FUNCTION p2pwatch_observations_guard();
CREATE TRIGGER observations_no_truncate BEFORE TRUNCATE ON observations
    FOR EACH STATEMENT EXECUTE FUNCTION p2pwatch_refuse_change();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION p2pwatch_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION p2pwatch_refuse_change();
CREATE TRIGGER chain_heads_forward BEFORE UPDATE OR DELETE ON chain_heads
    FOR EACH ROW EXECUTE FUNCTION p2pwatch_chain_head_guard();
"""

SQLITE_GUARDS = (
    "CREATE TRIGGER observations_no_delete BEFORE DELETE ON observations "
    "BEGIN SELECT RAISE(ABORT, 'observations are append-only: DELETE refused'); END",
    f"CREATE TRIGGER observations_no_update BEFORE UPDATE ON observations WHEN NOT ({_purge_condition('IS')}) "
    "BEGIN SELECT RAISE(ABORT, 'observations are append-only (only the retention purge may erase addresses "
    "of level 0-2 rows)'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END",
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END",
    "CREATE TRIGGER chain_heads_no_delete BEFORE DELETE ON chain_heads "
    "BEGIN SELECT RAISE(ABORT, 'chain heads only move forward'); END",
    "CREATE TRIGGER chain_heads_forward BEFORE UPDATE ON chain_heads "
    "WHEN NOT (NEW.name = OLD.name AND NEW.seq >= OLD.seq) "
    "BEGIN SELECT RAISE(ABORT, 'chain heads only move forward'); END",
)


def upgrade() -> None:
    _create_tables()
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(POSTGRESQL_GUARDS)
    elif dialect == "sqlite":
        for statement in SQLITE_GUARDS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS p2pwatch_observations_guard, p2pwatch_refuse_change, "
                   "p2pwatch_chain_head_guard CASCADE")
    for table in ("state", "chain_heads", "audit_log", "swarm_samples", "observations", "transcripts", "peers",
                  "case_watches", "watches", "matches", "torrent_files", "torrents", "keywords", "content",
                  "cases"):
        op.drop_table(table)
