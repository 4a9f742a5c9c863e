"""Data minimisation: erase the addresses of old level 0–2 observations; counts, levels and the chain stay.

Levels 0–2 (listed, connected, advertised) are leads, not evidence (DESIGN.md principle 4). After the
retention period the purge sets ``ip``, ``port``, ``reporter`` and ``addr_salt`` of those rows to NULL. The
rows themselves stay (so "how many peers, at which level, when" stays answerable), and the chain still
verifies because it covers only the salted ``addr_digest`` (p2pwatch.storage.chain), which is kept; without
the salt the digest cannot be turned back into an address. Level 3–4 rows keep their addresses: they are
the evidence.

``peers`` rows (address, client, network) are deleted once every observation of the address is older than
the cutoff and none reached level 3 (``max_level <= 2``); ``last_seen`` is coarse, so the rule allows for
its granularity. Each run appends an ``retention.purge`` entry to the audit chain in the same transaction.

The UPDATE runs with the ``p2pwatch_retention_purge`` execution option, the one exception the statement
guard (p2pwatch.storage.db) allows; the database triggers check that the update is exactly a purge.
Run it in a session from ``writer_sessionmaker``; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from p2pwatch.errors import ConfigError
from p2pwatch.storage.chain import format_timestamp
from p2pwatch.storage.db import PURGE_OPTION
from p2pwatch.storage.ledger import PEER_LAST_SEEN_GRANULARITY, append_audit
from p2pwatch.storage.models import Base, Observation, Peer

#: The highest level whose addresses are purged.
PURGE_MAX_LEVEL = 2


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one purge erased, and the audit entry that records it."""

    cutoff: datetime
    observations_purged: int
    peers_deleted: int
    audit_seq: int


def purge_addresses(session: Session, *, days: float, now: datetime, actor: str = "retention") -> PurgeReport:
    """Erase addresses of level 0–2 observations older than ``days`` days before ``now``; audit it."""
    if days < 0:
        raise ConfigError(f"retention period must be 0 days or more, not {days}")
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    cutoff = now - timedelta(days=days)
    obs = Base.metadata.tables[Observation.__tablename__]
    purged = session.execute(
        update(obs)
        .where(obs.c.level <= PURGE_MAX_LEVEL, obs.c.observed_at < cutoff, obs.c.ip.is_not(None))
        .values(ip=None, port=None, reporter=None, addr_salt=None)
        .execution_options(**{PURGE_OPTION: True}))
    peers = Base.metadata.tables[Peer.__tablename__]
    deleted = session.execute(
        delete(peers).where(peers.c.last_seen < cutoff - PEER_LAST_SEEN_GRANULARITY,
                            peers.c.max_level <= PURGE_MAX_LEVEL))
    n_obs = int(purged.rowcount or 0)  # type: ignore[attr-defined]
    n_peers = int(deleted.rowcount or 0)  # type: ignore[attr-defined]
    entry = append_audit(session, actor, "retention.purge",
                         {"cutoff": format_timestamp(cutoff), "days": days, "max_level": PURGE_MAX_LEVEL,
                          "observations_purged": n_obs, "peers_deleted": n_peers}, at=now)
    return PurgeReport(cutoff, n_obs, n_peers, entry.last_seq)
