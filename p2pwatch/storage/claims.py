"""Work claiming on the watch list: several monitor processes share one database, no torrent twice at once.

A watch (one row per torrent) is *due* when it is active, ``next_check_at <= now`` and no live claim holds it
(``claimed_until`` is NULL or past). ``claim_due_watches`` picks due rows oldest-first and stamps them with
the worker id and a lease, in the caller's transaction (commit promptly: the claim protects the torrent
from other workers from the commit on, and a worker that dies simply lets its lease run out).

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` — two workers claiming at the same moment take disjoint
  rows without waiting for each other.
* SQLite (one process): a plain SELECT. Either way the UPDATE repeats the "not claimed" condition and
  ``RETURNING`` tells which rows this worker really got, so a race can only lose rows, never share them.

``release_watch`` ends a claim with the next check time and the swarm facts the check found; only the
claim's holder can release it. ``ensure_watch`` and ``unwatch_case`` maintain the list and its case links.
``recent_listings`` gives the watcher the peers a source (PEX) listed for a torrent lately, to probe again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from p2pwatch.storage.models import CaseWatch, Observation, Watch


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Claim:
    """A watch this worker holds until ``claimed_until``."""

    watch_id: int
    torrent_id: int
    claimed_until: datetime


def _unclaimed(now: datetime) -> ColumnElement[bool]:
    return or_(Watch.claimed_until.is_(None), Watch.claimed_until < now)


def claim_due_watches(session: Session, worker_id: str, now: datetime, limit: int,
                      lease: timedelta) -> list[Claim]:
    """Claim up to ``limit`` due watches for ``worker_id`` until ``now + lease`` (the caller commits)."""
    if limit <= 0:
        return []
    now = _utc(now)
    until = now + lease
    due = (select(Watch.id)
           .where(Watch.active.is_(True), Watch.next_check_at <= now, _unclaimed(now))
           .order_by(Watch.next_check_at, Watch.id)
           .limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.execute(due).scalars())
    if not ids:
        return []
    got = session.execute(
        update(Watch)
        .where(Watch.id.in_(ids), _unclaimed(now))
        .values(claimed_by=worker_id, claimed_until=until)
        .returning(Watch.id, Watch.torrent_id, Watch.claimed_until)
        .execution_options(synchronize_session=False)
    ).all()
    order = {watch_id: i for i, watch_id in enumerate(ids)}
    return sorted((Claim(int(r.id), int(r.torrent_id), _utc(r.claimed_until)) for r in got),
                  key=lambda c: order[c.watch_id])


def renew_claims(session: Session, worker_id: str, torrent_ids: list[int], now: datetime,
                 lease: timedelta) -> int:
    """Extend this worker's live claims on these torrents; return how many were still held."""
    if not torrent_ids:
        return 0
    now = _utc(now)
    result = session.execute(
        update(Watch)
        .where(Watch.torrent_id.in_(torrent_ids), Watch.claimed_by == worker_id, Watch.claimed_until >= now)
        .values(claimed_until=now + lease)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release_watch(session: Session, torrent_id: int, worker_id: str, *, now: datetime,
                  next_check_at: datetime, peer_seen_at: datetime | None = None,
                  status: str | None = None) -> bool:
    """End this worker's claim after a check; False when the claim had already passed to someone else."""
    now = _utc(now)
    values: dict[str, object] = {"claimed_by": None, "claimed_until": None, "last_checked_at": now,
                                 "next_check_at": _utc(next_check_at)}
    if peer_seen_at is not None:
        values["last_peer_at"] = _utc(peer_seen_at)
    held = and_(Watch.torrent_id == torrent_id, Watch.claimed_by == worker_id)
    if status is not None:
        session.execute(update(Watch).where(held, or_(Watch.status.is_(None), Watch.status != status))
                        .values(status=status, status_changed_at=now)
                        .execution_options(synchronize_session=False))
    result = session.execute(update(Watch).where(held).values(**values)
                             .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def ensure_watch(session: Session, torrent_id: int, now: datetime, *, case_id: int | None = None,
                 reason: str = "watch") -> Watch:
    """Put a torrent on the watch list (due at once if new or inactive) and link it to a case."""
    now = _utc(now)
    watch = session.execute(select(Watch).where(Watch.torrent_id == torrent_id)).scalar_one_or_none()
    if watch is None:
        watch = Watch(torrent_id=torrent_id, added_at=now, active=True, next_check_at=now)
        session.add(watch)
    elif not watch.active:
        watch.active = True
        watch.next_check_at = now
    if case_id is not None:
        linked = session.execute(select(CaseWatch.id).where(CaseWatch.case_id == case_id,
                                                            CaseWatch.torrent_id == torrent_id)).first()
        if linked is None:
            session.add(CaseWatch(case_id=case_id, torrent_id=torrent_id, added_at=now, reason=reason))
    session.flush()
    return watch


def unwatch_case(session: Session, case_id: int, torrent_id: int | None = None) -> int:
    """Drop a case's watch links (all, or the one of ``torrent_id``) and deactivate torrents no other case
    wants; return how many stopped."""
    mine: ColumnElement[bool] = CaseWatch.case_id == case_id
    if torrent_id is not None:
        mine = and_(mine, CaseWatch.torrent_id == torrent_id)
    torrents = list(session.execute(select(CaseWatch.torrent_id).where(mine)).scalars())
    session.execute(delete(CaseWatch).where(mine))
    if not torrents:
        return 0
    wanted = exists().where(CaseWatch.torrent_id == Watch.torrent_id)
    result = session.execute(update(Watch).where(Watch.torrent_id.in_(torrents), Watch.active.is_(True), ~wanted)
                             .values(active=False).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def recent_listings(session: Session, torrent_id: int, source: str, since: datetime, limit: int
                    ) -> list[tuple[str, int, str | None]]:
    """``(ip, port, reporter)`` of the level-0 listings of a torrent by ``source`` observed since ``since``,
    newest first, each once, at most ``limit`` (purged addresses are left out)."""
    o = Observation
    newest = func.max(o.observed_at)
    rows = session.execute(
        select(o.ip, o.port, o.reporter, newest)
        .where(o.torrent_id == torrent_id, o.source == source, o.level == 0, o.observed_at >= _utc(since),
               o.ip.is_not(None), o.port.is_not(None))
        .group_by(o.ip, o.port, o.reporter).order_by(newest.desc(), o.ip, o.port).limit(limit))
    return [(str(ip), int(port or 0), reporter) for ip, port, reporter, _ in rows]
