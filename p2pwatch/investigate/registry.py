"""Cases, registered content, keywords, torrents and matches: the operations the CLI and the monitor share.

Functions take a SQLAlchemy session and leave committing to the caller. Content is stored as its
fingerprint (hashes only, docs/fingerprint-format.md). Withdrawing a case deletes its fingerprints and
keywords, stops monitoring of its torrents (unless another case wants them) and writes an audit entry;
matches and observations stay, because they are evidence already handed out or chained.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from p2pwatch.errors import ConfigError, MetainfoError
from p2pwatch.locale import tr as _
from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.match.keywords import normalize
from p2pwatch.match.matcher import Match, RegisteredContent, RegistryIndex
from p2pwatch.storage.claims import ensure_watch, unwatch_case
from p2pwatch.storage.ledger import append_audit
from p2pwatch.storage.models import Case, CaseWatch, Content, Keyword, Torrent, TorrentFile, Watch
from p2pwatch.storage.models import Match as MatchRow
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent


class UnknownCase(ConfigError):
    """No case of that name (a user mistake: exit 2)."""


def _now() -> datetime:
    return datetime.now(UTC)


def create_case(session: Session, name: str, *, actor: str = "cli") -> Case:
    name = name.strip()
    if not name:
        raise ConfigError(_("a case needs a name"))
    if session.execute(select(Case).where(Case.name == name)).scalar_one_or_none() is not None:
        raise ConfigError(_("case %(case)s already exists (see `p2pwatch case show %(name)s`)", case=repr(name),
                           name=name))
    case = Case(name=name, created_at=_now())
    session.add(case)
    session.flush()
    append_audit(session, actor, "case.create", {"case": name})
    return case


def get_case(session: Session, name: str, *, active: bool = True) -> Case:
    case = session.execute(select(Case).where(Case.name == name)).scalar_one_or_none()
    if case is None:
        raise UnknownCase(_("no case named %(case)s (create it with `p2pwatch case create %(name)s`)",
                            case=repr(name), name=name))
    if active and case.withdrawn_at is not None:
        raise UnknownCase(_("case %(case)s was withdrawn on %(date)s", case=repr(name),
                            date=f"{case.withdrawn_at:%Y-%m-%d}"))
    return case


def list_cases(session: Session) -> list[dict[str, Any]]:
    rows = []
    for case in session.execute(select(Case).order_by(Case.name)).scalars():
        rows.append({
            "case": case.name, "created_at": case.created_at.isoformat(),
            "withdrawn_at": case.withdrawn_at.isoformat() if case.withdrawn_at else None,
            "contents": session.scalar(select(func.count()).select_from(Content).where(Content.case_id == case.id)),
            "keywords": session.scalar(select(func.count()).select_from(Keyword).where(Keyword.case_id == case.id)),
            "matches": session.scalar(select(func.count()).select_from(MatchRow).where(MatchRow.case_id == case.id)),
            "watched": session.scalar(select(func.count()).select_from(CaseWatch).where(CaseWatch.case_id == case.id)),
        })
    return rows


def withdraw_case(session: Session, name: str, *, actor: str = "cli") -> dict[str, object]:
    case = get_case(session, name)
    contents = session.execute(delete(Content).where(Content.case_id == case.id)).rowcount  # type: ignore[attr-defined]
    keywords = session.execute(delete(Keyword).where(Keyword.case_id == case.id)).rowcount  # type: ignore[attr-defined]
    stopped = unwatch_case(session, case.id)
    case.withdrawn_at = _now()
    detail = {"case": name, "fingerprints_deleted": int(contents or 0), "keywords_deleted": int(keywords or 0),
              "torrents_unwatched": stopped}
    append_audit(session, actor, "case.withdraw", detail)
    return detail


def add_content(session: Session, case: Case, fingerprint: Fingerprint, *, label: str | None = None,
                actor: str = "cli") -> tuple[Content, bool]:
    """Register a fingerprint in a case; returns (row, created) — the same content twice is kept once."""
    existing = session.execute(select(Content).where(Content.case_id == case.id,
                                                     Content.fingerprint_id == fingerprint.fingerprint_id)
                               ).scalar_one_or_none()
    if existing is not None:
        return existing, False
    row = Content(case_id=case.id, fingerprint_id=fingerprint.fingerprint_id, kind=fingerprint.kind.value,
                  size=fingerprint.size, label=label, fingerprint=fingerprint.to_json(), created_at=_now())
    session.add(row)
    session.flush()
    append_audit(session, actor, "content.register", {"case": case.name, "fingerprint_id": fingerprint.fingerprint_id,
                                                      "size": fingerprint.size, "kind": fingerprint.kind.value})
    return row, True


def add_keywords(session: Session, case: Case, words: Iterable[str]) -> int:
    known = {k.normalized for k in session.execute(select(Keyword).where(Keyword.case_id == case.id)).scalars()}
    added = 0
    for word in words:
        norm = normalize(word)
        if norm and norm not in known:
            session.add(Keyword(case_id=case.id, text=word, normalized=norm))
            known.add(norm)
            added += 1
    session.flush()
    return added


def load_index(session: Session) -> RegistryIndex:
    """Every active case's content and keywords, ready for the matcher."""
    contents = []
    keywords: dict[str, list[str]] = {}
    for case in session.execute(select(Case).where(Case.withdrawn_at.is_(None))).scalars():
        for row in session.execute(select(Content).where(Content.case_id == case.id)).scalars():
            contents.append(RegisteredContent(str(row.id), case.name, Fingerprint.from_json(row.fingerprint)))
        words = [k.text for k in session.execute(select(Keyword).where(Keyword.case_id == case.id)).scalars()]
        if words:
            keywords[case.name] = words
    return RegistryIndex(contents, keywords)


def upsert_torrent(session: Session, dht_id: bytes, *, metainfo: Metainfo | None = None, magnet: str | None = None,
                   source: str = "watch", name: str | None = None) -> Torrent:
    """The torrent row for a DHT id, created or completed with its metainfo and file list.

    A hybrid torrent goes by two DHT ids (v1, and v2 truncated; libtorrent announces both): with its
    metainfo, the row already stored under either id is the one returned, so one torrent is one row
    whichever id the network showed first."""
    key = dht_id.hex()
    torrent = session.execute(select(Torrent).where(Torrent.dht_id == key)).scalar_one_or_none()
    if torrent is None and metainfo is not None and key in dht_ids(metainfo):
        torrent = session.execute(select(Torrent).where(Torrent.dht_id.in_(sorted(dht_ids(metainfo))))
                                  .order_by(Torrent.id).limit(1)).scalar_one_or_none()
        key = torrent.dht_id if torrent is not None else key
    if torrent is None:
        torrent = Torrent(dht_id=key, first_seen=_now(), source=source, magnet=magnet, name=name)
        session.add(torrent)
        session.flush()
    if magnet and not torrent.magnet:
        torrent.magnet = magnet
    if metainfo is not None and torrent.metainfo is not None:
        upgrade_metainfo(torrent, metainfo)
    elif metainfo is not None:
        if key not in dht_ids(metainfo):
            raise MetainfoError(f"the metainfo of {metainfo.name[:80]!r} does not hash to {key}")
        torrent.metainfo = metainfo.stored_bytes()
        torrent.name = metainfo.name
        torrent.infohash_v1 = metainfo.infohash_v1.hex() if metainfo.infohash_v1 else None
        torrent.infohash_v2 = metainfo.infohash_v2.hex() if metainfo.infohash_v2 else None
        for f in metainfo.files:
            session.add(TorrentFile(torrent_id=torrent.id, file_index=f.index, path=f.display_path, length=f.length,
                                    offset=f.offset, pieces_root=f.pieces_root.hex() if f.pieces_root else None,
                                    padding=f.pad))
    elif name and not torrent.name:
        torrent.name = name
    session.flush()
    return torrent


def dht_ids(metainfo: Metainfo) -> set[str]:
    """Every 20-byte id (hex) a torrent goes by on the DHT and the wire: v1, and v2 truncated (BEP 52)."""
    return {h.hex() for h in metainfo.dht_ids}


def stored_metainfo(torrent: Torrent) -> Metainfo | None:
    """The row's metainfo, parsed as stored: a .torrent, or an info dict from BEP 9 with the piece layers
    fetched so far (possibly none); None when never fetched. Raises MetainfoError for unusable bytes."""
    if not torrent.metainfo:
        return None
    return parse_torrent(torrent.metainfo, require_layers=False)


def upgrade_metainfo(torrent: Torrent, metainfo: Metainfo) -> bool:
    """Keep what proves more: a stored info dict without (all) piece layers is replaced by the same info dict
    with more layers (a .torrent file given later, or layers fetched by BEP 52 hash requests). Other
    stored bytes are never touched: the infohash of the new metainfo must be the row's."""
    if torrent.dht_id not in dht_ids(metainfo):
        return False
    try:
        stored = stored_metainfo(torrent)
    except MetainfoError:
        stored = None
    if stored is not None and (stored.info_bytes != metainfo.info_bytes
                               or len(metainfo.piece_layers) <= len(stored.piece_layers)):
        return False
    merged = metainfo if stored is None else metainfo.with_piece_layers(stored.piece_layers)
    torrent.metainfo = merged.stored_bytes()
    return True


def record_match(session: Session, match: Match, torrent: Torrent, *, actor: str = "matcher") -> tuple[MatchRow, bool]:
    """Store a confirmed match once (case, content, torrent, file, method); returns (row, new)."""
    case = get_case(session, match.case)
    content_id = int(match.content_id) if match.content_id.isdigit() else None
    existing = session.execute(select(MatchRow).where(
        MatchRow.case_id == case.id, MatchRow.content_id == content_id, MatchRow.torrent_id == torrent.id,
        MatchRow.file_index == match.file_index)).scalar_one_or_none()
    if existing is not None:
        return existing, False
    row = MatchRow(case_id=case.id, content_id=content_id, torrent_id=torrent.id, file_index=match.file_index,
                   file_path=match.file_path, method=match.method, proof=match.proof,
                   bytes_fetched=match.bytes_fetched, confirmed_at=_now())
    session.add(row)
    session.flush()
    ensure_watch(session, torrent.id, _now(), case_id=case.id, reason="match")
    append_audit(session, actor, "match.confirm", {"case": case.name, "torrent": torrent.dht_id,
                                                   "file": match.file_path, "method": match.method})
    return row, True


def watch(session: Session, case: Case, torrent: Torrent) -> Watch:
    return ensure_watch(session, torrent.id, _now(), case_id=case.id, reason="watch")


def unwatch(session: Session, case: Case, torrent: Torrent, *, actor: str = "cli") -> bool:
    """Stop watching a torrent for a case (monitoring stops unless another case wants it); audited."""
    stopped = unwatch_case(session, case.id, torrent.id)
    append_audit(session, actor, "watch.remove", {"case": case.name, "torrent": torrent.dht_id,
                                                  "stopped": bool(stopped)})
    return bool(stopped)
