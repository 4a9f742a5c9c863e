"""``p2pwatch export``: read a case out of the evidence store into a signed bundle (evidence/SPEC.md).

The bundle carries the case's torrents (.torrent files as stored), match proofs, the peers' observations
with the chain segment that holds them and its anchors, every level ≥ 1 transcript, piece hashes (bytes
only when the case allows content), swarm samples, and the signature. The chain segment runs from the
case's first observation to the chain head at export time; rows of other cases (and of the case's
torrents whose metainfo was never fetched) are included only as ``(seq, body_hash)``, so every link is
recomputed without disclosing them. Every export is written to the audit log (addresses leave the database
only this way).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from p2pwatch import __version__
from p2pwatch.bundle import keys as keyfile
from p2pwatch.bundle.rows import ExportedRow
from p2pwatch.bundle.writer import BundleSummary, PieceRecord, TorrentRecord, write_bundle
from p2pwatch.errors import ConfigError
from p2pwatch.investigate.registry import get_case
from p2pwatch.storage.chain import OBSERVATION_KIND, body_hash, format_timestamp, observation_template
from p2pwatch.storage.ledger import append_audit, chain_head
from p2pwatch.storage.models import CaseWatch, Content, Observation, Peer, SwarmSample, Torrent, Transcript
from p2pwatch.storage.models import Match as MatchRow
from p2pwatch.storage.reading import export_rows_select, iter_driver_batches, iter_observation_rows
from p2pwatch.torrent.metainfo import parse_torrent


@dataclass(frozen=True)
class ExportRequest:
    case: str
    out: Path
    home: Path
    torrent: str | None = None  # DHT id hex
    config_hash: str = ""
    actor: str = "cli"
    language: str = "en"
    time_zone: str = "Asia/Seoul"


def _case_torrent_rows(session: Session, case_id: int) -> list[Torrent]:
    ids = set(session.execute(select(MatchRow.torrent_id).where(MatchRow.case_id == case_id)).scalars())
    ids |= set(session.execute(select(CaseWatch.torrent_id).where(CaseWatch.case_id == case_id)).scalars())
    return list(session.execute(select(Torrent).where(Torrent.id.in_(ids)).order_by(Torrent.id)).scalars())


def _case_torrents(session: Session, case_id: int, only: str | None) -> list[Torrent]:
    torrents = [t for t in _case_torrent_rows(session, case_id) if t.metainfo]
    if only:
        torrents = [t for t in torrents if only in (t.dht_id, t.infohash_v1, t.infohash_v2)]
        if not torrents:
            raise ConfigError(f"torrent {only} is not part of this case (or its metainfo was never fetched)")
    return sorted(torrents, key=lambda t: t.id)


def _observations(session: Session, torrent_ids: set[int], first: int, head: int) -> Iterator[ExportedRow]:
    """The chain segment in seq order as the writer's row tuples (p2pwatch.bundle.rows), as the driver
    returns them. The writer re-hashes every row from these values, so a value the database gives in
    another form fails the export instead of producing a bundle that does not verify; so does a row
    altered in the database. Rows of other cases become ``(seq, body_hash)``."""
    sha256 = hashlib.sha256
    stmt = export_rows_select(session.connection().dialect.name, first, head)
    for batch in iter_driver_batches(session, stmt):
        for row in batch:
            if row[16] in torrent_ids:
                yield row[:16]
                continue
            (seq, at, dht_id, digest, level, source, client, peer_id, have, tsha) = row[:10]
            prefix, suffix = observation_template(observed_at=at, torrent=dht_id, addr=digest, level=level,
                                                  source=source, client=client, peer_id=peer_id,
                                                  have_fraction=have, transcript=tsha)
            yield seq, sha256(b"%b%d%b" % (prefix, seq, suffix)).hexdigest()


def _observation_mappings(session: Session, torrent_ids: set[int], first: int,
                          head: int) -> Iterator[dict[str, Any]]:
    """The same segment as mappings through the ORM's types and the canonical encoder: the writer's general
    path, kept as the reference the fast path is tested against (byte-identical bundles)."""
    kind = OBSERVATION_KIND
    for (seq, torrent_id, dht_id, ip, port, reporter, salt, digest, level, source, client, peer_id, have,
         _tid, tsha, observed_at, prev_hash, row_hash) in iter_observation_rows(session, first, head):
        fields = {"kind": kind, "seq": seq, "observed_at": format_timestamp(observed_at), "torrent": dht_id,
                  "addr": digest, "level": level, "source": source, "client": client, "peer_id": peer_id,
                  "have_fraction": None if have is None else float(have), "transcript": tsha}
        if torrent_id in torrent_ids:
            fields.update(prev_hash=prev_hash, row_hash=row_hash, ip=ip, port=port, reporter=reporter,
                          addr_salt=salt)
            yield fields
        else:
            yield {"seq": seq, "redacted": True, "body_hash": body_hash(fields).hex()}


def _transcripts(session: Session, torrent_ids: set[int]) -> Iterator[tuple[str, str]]:
    query = (select(Transcript.sha256, Transcript.body).where(Transcript.id.in_(
        select(Observation.transcript_id).where(Observation.torrent_id.in_(torrent_ids),
                                                Observation.transcript_id.is_not(None)))).order_by(Transcript.sha256))
    for sha, body in session.execute(query):
        yield str(sha), str(body)


def _pieces(session: Session, torrents: dict[int, Torrent], matches: list[dict[str, Any]]) -> list[PieceRecord]:
    """Hashes of the pieces that level-3 transcripts and exact-piece proofs rest on (no content bytes here)."""
    pieces: dict[tuple[str, int], PieceRecord] = {}
    query = select(Observation.torrent_id, Transcript.body).join(Transcript, Transcript.id == Observation.transcript_id)
    for torrent_id, body in session.execute(query.where(Observation.torrent_id.in_(torrents),
                                                        Observation.level >= 3)):
        doc = json.loads(body)
        index, digest = doc.get("piece_verified"), doc.get("piece_hash")
        if index is not None and digest:
            key = torrents[torrent_id].dht_id
            pieces[(key, int(index))] = PieceRecord(key, int(index), hash=str(digest))
    for m in matches:
        proof = m["proof"]
        if m["method"] == "exact-piece" and "piece_index" in proof:
            pieces[(m["infohash"], int(proof["piece_index"]))] = PieceRecord(m["infohash"], int(proof["piece_index"]),
                                                                             hash=str(proof["piece_hash"]))
    return [pieces[k] for k in sorted(pieces)]


def build_inputs(session: Session, request: ExportRequest, *, reference: bool = False) -> dict[str, Any]:
    """``write_bundle``'s arguments; ``reference`` streams the observations through the general mapping path
    (slower, same bytes) instead of the row tuples."""
    case = get_case(session, request.case, active=False)
    torrents = _case_torrents(session, case.id, request.torrent)
    if not torrents:
        raise ConfigError(f"case {request.case!r} has no torrent with metainfo to export yet")
    by_id = {t.id: t for t in torrents}
    contents = [{"id": str(c.id), "kind": c.kind, "size": c.size, "sha256": c.fingerprint_id,
                 "registered_at": format_timestamp(c.created_at)}
                for c in session.execute(select(Content).where(Content.case_id == case.id)).scalars()]
    matches = []
    for m in session.execute(select(MatchRow).where(MatchRow.case_id == case.id, MatchRow.torrent_id.in_(by_id))
                             .order_by(MatchRow.id)).scalars():
        meta = parse_torrent(by_id[m.torrent_id].metainfo or b"", require_layers=False)
        file_length = next((f.length for f in meta.files if f.index == m.file_index), None)
        matches.append({"id": f"m{m.id}", "content_id": str(m.content_id), "infohash": by_id[m.torrent_id].dht_id,
                        "file_index": m.file_index, "file_path": m.file_path, "file_length": file_length,
                        "method": m.method, "bytes_fetched": m.bytes_fetched,
                        "confirmed_at": format_timestamp(m.confirmed_at), "proof": m.proof})
    first = session.scalar(select(func.min(Observation.seq)).where(Observation.torrent_id.in_(by_id)))
    head_seq, head_hash = chain_head(session)
    peers = [{"ip": p.ip, "port": p.port, "client": p.client, "country": p.country,
              "asn": " ".join(x for x in (f"AS{p.asn}" if p.asn else "", p.org or "") if x) or None,
              "peer_id": p.peer_id} for p in session.execute(select(Peer).where(Peer.ip.in_(
                  select(Observation.ip).where(Observation.torrent_id.in_(by_id))))).scalars()]
    samples = [{"at": format_timestamp(s.at), "infohash": by_id[s.torrent_id].dht_id, "source": s.source,
                "dht_peers": s.dht_peers, "seeders": s.seeders, "leechers": s.leechers}
               for s in session.execute(select(SwarmSample).where(SwarmSample.torrent_id.in_(by_id))
                                        .order_by(SwarmSample.at, SwarmSample.id)).scalars()]
    key_path = keyfile.default_key_path(request.home)
    if not key_path.exists():
        raise ConfigError(f"no signing key at {key_path}; create it with `p2pwatch keys generate`")
    # watched torrents whose metadata no peer ever delivered: named, so the bundle says what it leaves out
    # (their rows are in the chain segment as hashes only, like other cases')
    without = sorted(t.dht_id for t in _case_torrent_rows(session, case.id) if not t.metainfo)
    return {
        "case": {"name": case.name, "allow_content": bool(case.allow_content_in_bundles),
                 "opened_at": format_timestamp(case.created_at),
                 **({"torrents_without_metadata": without} if without and not request.torrent else {})},
        "contents": contents,
        "torrents": [TorrentRecord(t.metainfo or b"", t.dht_id, t.name or "") for t in torrents],
        "matches": matches,
        "peers": peers,
        "observations": iter(()) if first is None else
        (_observation_mappings if reference else _observations)(session, set(by_id), first, head_seq),
        "chain_anchor": {"head_seq": head_seq, "head_hash": head_hash},
        "transcripts": _transcripts(session, set(by_id)),
        "pieces": _pieces(session, by_id, matches),
        "samples": samples,
        "signing_key": keyfile.load_key(key_path),
        "config_hash": request.config_hash,
        "tool_version": __version__,
        "language": request.language,
        "time_zone": request.time_zone,
    }


def export_case(session: Session, request: ExportRequest) -> BundleSummary:
    """Write the bundle and the audit entry that records it (the caller commits)."""
    summary = write_bundle(request.out, **build_inputs(session, request))
    append_audit(session, request.actor, "export", {"case": request.case, "bundle": str(request.out),
                                            "sha256": summary.sha256, "observations": summary.observations,
                                            "peers": summary.peers, "key_fingerprint": summary.key_fingerprint})
    return summary
