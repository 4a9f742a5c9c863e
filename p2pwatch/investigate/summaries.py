"""What the CLI's ``matches``, ``peers`` and ``timeline`` print and the web pages show, read from the store.

One function per view, so the command line and the web app show the same rows (issue 14).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from p2pwatch.config import MonitorConfig
from p2pwatch.investigate.swarmstatus import swarm_status
from p2pwatch.storage.models import LEVELS, Case, Content, Observation, Peer, SwarmSample, Torrent, Watch
from p2pwatch.storage.models import Match as MatchRow

LEVEL_NAMES = LEVELS


def case_matches(session: Session, case_name: str | None) -> list[dict[str, Any]]:
    """Confirmed matches (of one case, or all), oldest first, with method, bytes fetched and proof."""
    query = (select(MatchRow, Case, Torrent, Content).join(Case, Case.id == MatchRow.case_id)
             .join(Torrent, Torrent.id == MatchRow.torrent_id).outerjoin(Content, Content.id == MatchRow.content_id)
             .order_by(MatchRow.confirmed_at))
    if case_name:
        query = query.where(Case.name == case_name)
    return [{"case": c.name, "content": content.fingerprint_id if content else None, "infohash": t.dht_id,
             "name": t.name, "file": m.file_path, "method": m.method, "bytes_fetched": m.bytes_fetched,
             "confirmed_at": m.confirmed_at.isoformat(), "proof": m.proof}
            for m, c, t, content in session.execute(query)]


def peer_rows(session: Session, torrent: Torrent, min_level: int) -> list[dict[str, Any]]:
    """Peers of a torrent with their best level, sources, who reported them, client, country, network."""
    o = Observation
    grouped = (select(o.ip, o.port, func.max(o.level), func.min(o.observed_at), func.max(o.observed_at))
               .where(o.torrent_id == torrent.id, o.ip.is_not(None)).group_by(o.ip, o.port))
    sources: dict[tuple[Any, Any], set[str]] = {}
    reporters: dict[tuple[Any, Any], set[str]] = {}
    pex_via: dict[tuple[Any, Any], set[str]] = {}  # BEP 11: the peers that listed this one over ut_pex
    for ip, port, source, reporter in session.execute(select(o.ip, o.port, o.source, o.reporter).distinct()
                                                      .where(o.torrent_id == torrent.id, o.ip.is_not(None))):
        sources.setdefault((ip, port), set()).add(source)
        if reporter:
            reporters.setdefault((ip, port), set()).add(reporter)
            if source == "pex":
                pex_via.setdefault((ip, port), set()).add(reporter)
    info: dict[tuple[Any, Any], Peer] = {(p.ip, p.port): p for p in session.execute(select(Peer).where(Peer.ip.in_(
        select(o.ip).where(o.torrent_id == torrent.id)))).scalars()}
    rows = []
    for ip, port, level, first, last in session.execute(grouped):
        if level < min_level:
            continue
        peer = info.get((ip, port))
        rows.append({"ip": ip, "port": port, "level": level, "level_name": LEVEL_NAMES[level],
                     "sources": sorted(sources.get((ip, port), ())),
                     "pex_via": sorted(pex_via.get((ip, port), ())),
                     "reported_by": sorted(reporters.get((ip, port), ())),
                     "client": peer.client if peer else None,
                     "country": peer.country if peer else None,
                     "asn": (peer.org or (f"AS{peer.asn}" if peer.asn else None)) if peer else None,
                     "first_seen": first.isoformat(), "last_seen": last.isoformat()})
    return sorted(rows, key=lambda r: (-r["level"], r["ip"], r["port"]))


def torrent_timeline(session: Session, torrent: Torrent, config: MonitorConfig,
                     now: datetime | None = None) -> dict[str, Any]:
    """Swarm samples over time and the status (alive / dormant / gone / unknown) from the last peer seen."""
    samples = list(session.execute(select(SwarmSample).where(SwarmSample.torrent_id == torrent.id)
                                   .order_by(SwarmSample.at)).scalars())
    watch = session.execute(select(Watch).where(Watch.torrent_id == torrent.id)).scalar_one_or_none()
    last_peer = session.scalar(select(func.max(Observation.observed_at)).where(Observation.torrent_id == torrent.id))
    points = [{"at": s.at.isoformat(), "source": s.source, "dht_peers": s.dht_peers, "seeders": s.seeders,
               "leechers": s.leechers, "probed": s.probed} for s in samples]
    status = swarm_status(last_peer, now or datetime.now(UTC), dormant_after=config.watcher.dormant_after,
                          gone_after=config.watcher.gone_after)
    return {"infohash": torrent.dht_id, "name": torrent.name, "status": status.value,
            "last_peer_seen": last_peer.isoformat() if last_peer else None,
            "watched": bool(watch and watch.active),
            "last_checked": watch.last_checked_at.isoformat() if watch and watch.last_checked_at else None,
            "samples": points}
