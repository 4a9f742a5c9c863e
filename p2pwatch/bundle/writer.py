"""Write an evidence bundle (evidence/SPEC.md) from plain data, streaming, in bounded memory.

:func:`write_bundle` takes what the store holds (case, content ids, torrents with their metainfo, match
proofs, observations as exported chain rows, transcripts, verified pieces, swarm samples) and writes one
ZIP in the canonical profile of :mod:`evidence.zipcanon`: same input, same bytes. Observations are streamed
straight into the ZIP (a million rows need a few MB of memory); every row's hash is re-computed on the way
(:mod:`p2pwatch.bundle.rows`, which also takes rows as tuples, the exporter's fast path), so a broken chain
refuses to export instead of producing a bundle that fails verification. Their deflate, CRC-32 and SHA-256
run in a second thread (:class:`~p2pwatch.bundle.rows.ChunkPipe`), overlapping the per-row hashing.

Entry order: ``torrents/``, ``observations.jsonl``, ``chain.json``, ``transcripts/``, ``pieces/``,
``bundle.json``, ``timeline.png``, ``report.html``, ``case.jsonld``, ``public_key.pem``, ``manifest.json``,
``manifest.sig``. The manifest lists the SHA-256 of every file before it and of the archive bytes before it;
the signature is Ed25519 over the manifest bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence import FORMAT_NAME, FORMAT_VERSION
from evidence.hashchain import (
    ALGORITHM,
    GENESIS_HASH,
    canonical_bytes,
)
from evidence.proofs import ProofError, TorrentIndex, check_match
from evidence.torrent import Torrent, TorrentError
from evidence.torrent_record import EXTENSIONS, bundle_form, layer_summary
from evidence.zipcanon import DEFLATED, STORED, ZipWriter
from p2pwatch.bundle import caseuco, keys, plot, report
from p2pwatch.bundle.rows import ChunkPipe, ExportedRow, Observations
from p2pwatch.errors import BundleError

#: Content-id fields copied into bundle.json; anything else a content dict holds stays out.
CONTENT_KEYS = ("id", "kind", "size", "sha256", "registered_at", "label")
#: Peer fields taken from the ``peers`` argument (the rest is derived from the observations).
PEER_INFO_KEYS = ("client", "country", "asn", "peer_id")
LEVEL_NAMES = {0: "listed", 1: "connected", 2: "advertised", 3: "served", 4: "served-whole"}
_PieceFile = tuple[str, bytes]


@dataclass(frozen=True)
class TorrentRecord:
    """A torrent of the case: its metainfo as stored (a .torrent, or the info dict of a BEP 9 fetch wrapped as
    ``d4:info...e`` with the piece layers fetched so far), its infohash (hex, 40 or 64)."""

    metainfo_bytes: bytes
    infohash: str
    name: str


@dataclass(frozen=True)
class PieceRecord:
    """A verified piece: its bytes (written only when the case allows content) and/or its hash (hex)."""

    infohash: str
    index: int
    data: bytes | None = None
    hash: str | None = None


@dataclass(frozen=True)
class BundleSummary:
    path: Path
    size: int
    sha256: str
    manifest_sha256: str
    key_fingerprint: str
    files: int
    observations: int
    redacted: int
    transcripts: int
    pieces: int
    peers: int
    distribution_peers: int
    first_seq: int | None
    last_seq: int | None


def timestamp(moment: datetime | None = None) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (the store's format)."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Archive:
    """The ZIP being written, with the SHA-256 and size of each file for the manifest."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.zip = ZipWriter(f)
        self.files: list[tuple[str, str, int]] = []
        self._prefix: tuple[int, Any] = (0, hashlib.sha256())

    def put(self, name: str, data: bytes, *, method: int = DEFLATED) -> None:
        self.zip.write(name, data, method=method)
        self.files.append((name, hashlib.sha256(data).hexdigest(), len(data)))

    def prefix_sha256(self) -> tuple[int, str]:
        """Length and SHA-256 of the archive so far (kept, so :meth:`whole_sha256` reads only the rest)."""
        length = self.zip.position
        self.f.flush()
        self.f.seek(0)
        digest, left = hashlib.sha256(), length
        while left:
            chunk = self.f.read(min(left, 1 << 20))
            if not chunk:
                raise BundleError("the bundle file shrank while it was written")
            digest.update(chunk)
            left -= len(chunk)
        self._prefix = (length, digest.copy())
        return length, digest.hexdigest()

    def whole_sha256(self) -> str:
        """SHA-256 of the finished archive: the prefix's hash continued over the bytes after it."""
        length, digest = self._prefix
        self.f.flush()
        self.f.seek(length)
        for block in iter(lambda: self.f.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()


def build_manifest(*, files: list[tuple[str, str, int]], prefix: tuple[int, str], tool_version: str,
                   created_at: str, config_hash: str, case_name: str, key_fingerprint: str) -> bytes:
    """The bytes of manifest.json (what the signature covers)."""
    doc = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool": "p2pwatch", "tool_version": tool_version,
        "created_at": created_at, "config_sha256": config_hash, "case": case_name,
        "key_fingerprint": key_fingerprint,
        "signature": {"algorithm": "Ed25519", "file": "manifest.sig", "public_key": "public_key.pem",
                      "signed_bytes": "manifest.json"},
        "archive": {"prefix_bytes": prefix[0], "prefix_sha256": prefix[1]},
        "files": [{"path": name, "sha256": digest, "size": size} for name, digest, size in files],
    }
    return readable_json(doc).encode("utf-8")


def _peer_summaries(obs: Observations, given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    info: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in given:
        info[(p.get("ip"), p.get("port"))] = p
        if p.get("infohash"):
            info[(obs.torrents.get(p["infohash"])[0], p.get("ip"), p.get("port"))] = p
    out = []
    for (key, ip, port), (level, first, last, count, sources, client) in obs.peers.items():
        extra = info.get((key, ip, port)) or info.get((ip, port)) or {}
        summary = {"infohash": key, "ip": ip, "port": port, "level": level, "level_name": LEVEL_NAMES[level],
                   "distribution": level >= 3, "first_seen": first, "last_seen": last, "observations": count,
                   "sources": sorted(s for s in sources if s), "client": extra.get("client") or client}
        summary.update({k: extra.get(k) for k in PEER_INFO_KEYS if k != "client"})
        out.append(summary)
    out.sort(key=lambda s: (-s["level"], s["infohash"], s["ip"], s["port"]))
    return out


def _torrent_entries(records: list[TorrentRecord], index: TorrentIndex
                     ) -> list[tuple[TorrentRecord, Torrent, str, bytes]]:
    """Each torrent parsed as it goes into the bundle (evidence.torrent_record): the info dict alone when
    that is all the centre holds (BEP 9), the .torrent otherwise; a missing piece layer is no error here."""
    parsed = []
    for record in sorted(records, key=lambda r: r.infohash.lower()):
        try:
            kind, data, torrent = bundle_form(record.metainfo_bytes)
        except TorrentError as exc:
            raise BundleError(f"torrent {record.infohash}: {exc}") from exc
        if record.infohash.lower() not in torrent.ids() or len(record.infohash) not in (40, 64):
            raise BundleError(f"torrent {record.infohash}: the metainfo hashes to {sorted(torrent.ids())}")
        index.add(record.infohash.lower(), torrent)
        parsed.append((record, torrent, kind, data))
    return parsed


def _piece_entry(piece: PieceRecord, index: TorrentIndex, allow_content: bool) -> tuple[str, bytes, str]:
    key, torrent = index.get(piece.infohash)
    algorithm = torrent.default_algorithm()
    try:
        expected = torrent.piece_hash(piece.index, algorithm)
        if piece.data is not None and torrent.hash_piece_data(piece.index, piece.data, algorithm) != expected:
            raise BundleError(f"piece {piece.index} of {key}: the bytes do not verify against the metainfo")
    except TorrentError as exc:
        raise BundleError(f"piece {piece.index} of {key}: {exc}") from exc
    if piece.hash is not None and piece.hash.lower() != expected.hex():
        raise BundleError(f"piece {piece.index} of {key}: the hash given is not the metainfo's")
    if allow_content and piece.data is not None:
        return f"pieces/{key}/{piece.index}.bin", piece.data, "bin"
    kind = "sha1" if algorithm == "sha1" else "sha256"
    return f"pieces/{key}/{piece.index}.{kind}", (expected.hex() + "\n").encode("ascii"), kind


def write_bundle(
    out_path: str | os.PathLike[str],
    *,
    case: Mapping[str, Any],
    contents: list[dict[str, Any]],
    torrents: list[TorrentRecord],
    matches: list[dict[str, Any]],
    peers: list[dict[str, Any]],
    observations: Iterable[ExportedRow],
    chain_anchor: Mapping[str, Any],
    transcripts: Iterable[tuple[Any, Any]],
    pieces: Iterable[PieceRecord],
    samples: list[dict[str, Any]],
    signing_key: Ed25519PrivateKey,
    config_hash: str,
    tool_version: str,
    created_at: str | None = None,
    language: str = "en",
    time_zone: str = "UTC",
) -> BundleSummary:
    """Write the bundle to ``out_path`` (atomically: a temporary file renamed at the end).

    ``observations`` are exported chain rows in seq order (hashed fields, ``prev_hash``, ``row_hash`` and the
    disclosed ``ip``/``port``/``reporter``/``addr_salt``), rows of other cases as ``{"seq", "redacted": True,
    "body_hash"}``. ``chain_anchor`` gives ``head_seq``/``head_hash`` at export (and ``first_prev_hash`` when
    the segment opens with a redacted row); it is read after the rows, so a generator may fill it in.
    ``transcripts`` are ``(id, body)`` with the body as stored (canonical JSON text) or as a dict; every
    transcript a row cites must be among them. ``pieces`` are verified pieces (bytes written only when
    ``case["allow_content"]``, their metainfo hash otherwise). ``matches`` are proofs as in SPEC.md section 8
    (re-checked here). ``peers`` add ``client``/``country``/``asn``/``peer_id`` to the summaries derived from
    the rows, by ``(ip, port)`` or ``(infohash, ip, port)``. ``samples`` are swarm sizes over time:
    ``{"at", "infohash", "source", "peers" | "dht_peers" | "seeders"/"leechers"}``. ``contents`` keep only
    :data:`CONTENT_KEYS`. Raises :class:`BundleError` (and leaves no file) when the data would not verify.
    """
    out = Path(out_path)
    created = created_at or timestamp()
    allow_content = bool(case.get("allow_content", False))
    fp = keys.fingerprint(signing_key)
    index = TorrentIndex()
    parsed = _torrent_entries(torrents, index)
    temporary = out.with_name(out.name + ".partial")
    try:
        with open(temporary, "w+b") as f:
            arc = _Archive(f)
            torrent_docs = []
            for record, torrent, kind, data in parsed:
                name = f"torrents/{record.infohash.lower()}{EXTENSIONS[kind]}"
                arc.put(name, data)
                torrent_docs.append({
                    "infohash": record.infohash.lower(), "name": record.name, "file": name,
                    "version": torrent.version, "metainfo": kind, "piece_layers": layer_summary(torrent),
                    "infohash_v1": torrent.infohash_v1.hex() if torrent.infohash_v1 else None,
                    "infohash_v2": torrent.infohash_v2.hex() if torrent.infohash_v2 else None,
                    "piece_length": torrent.piece_length,
                    "files": [{"index": t.index, "path": t.display_path, "length": t.length}
                              for t in torrent.files if not t.pad],
                })
            obs = Observations(index, chain_anchor.get("first_prev_hash"))
            digest, sizes = hashlib.sha256(), [0]
            with arc.zip.open("observations.jsonl", large=True) as stream:
                def write_chunk(chunk: bytes) -> None:  # in the pipe's thread
                    stream.write(chunk)
                    digest.update(chunk)
                    sizes[0] += len(chunk)

                pipe = ChunkPipe(write_chunk)
                try:
                    obs.stream(observations, pipe.put)
                finally:
                    pipe.abort()
                pipe.close()
            size = sizes[0]
            arc.files.append(("observations.jsonl", digest.hexdigest(), size))
            chain = _chain_doc(obs, chain_anchor, created)
            arc.put("chain.json", _json(chain))
            written_transcripts = _write_transcripts(arc, transcripts, obs.transcripts)
            piece_docs, proof_pieces = _write_pieces(arc, pieces, index, allow_content, matches)
            _check_matches(matches, index, proof_pieces)
            peer_docs = _peer_summaries(obs, peers)
            png, legend = plot.render_timeline(samples)
            doc = {
                "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created_at": created,
                "tool_version": tool_version, "config_sha256": config_hash, "signing_key_fingerprint": fp,
                "case": dict(case),
                "contents": [{k: c.get(k) for k in CONTENT_KEYS if k in c} for c in contents],
                "levels": {str(k): v for k, v in LEVEL_NAMES.items()},
                "torrents": torrent_docs, "matches": matches, "peers": peer_docs,
                "observations": {"file": "observations.jsonl", "rows": obs.rows, "redacted": obs.redacted,
                                 "levels": {str(lv): n for lv, n in enumerate(obs.levels)}},
                "chain": "chain.json", "transcripts": written_transcripts, "pieces": piece_docs,
                "timeline": {"file": "timeline.png", "series": legend},
            }
            arc.put("bundle.json", _json(doc))
            arc.put("timeline.png", png, method=STORED)
            page = report.render_report(doc, chain, language=language, time_zone=time_zone)
            arc.put("report.html", page.encode("utf-8"))
            arc.put("case.jsonld", caseuco.render_case(doc, chain).encode("utf-8"))
            arc.put("public_key.pem", keys.public_pem(signing_key))
            prefix = arc.prefix_sha256()
            manifest = build_manifest(files=arc.files, prefix=prefix, tool_version=tool_version, created_at=created,
                                      config_hash=config_hash, case_name=str(case.get("name", "")), key_fingerprint=fp)
            arc.zip.write("manifest.json", manifest, method=STORED)
            arc.zip.write("manifest.sig", signing_key.sign(manifest), method=STORED)
            arc.zip.finish()
            whole = arc.whole_sha256()
            os.fsync(f.fileno())
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return BundleSummary(
        path=out, size=out.stat().st_size, sha256=whole,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(), key_fingerprint=fp, files=len(arc.zip.entries),
        observations=obs.rows, redacted=obs.redacted, transcripts=written_transcripts, pieces=len(piece_docs),
        peers=len(peer_docs), distribution_peers=sum(1 for p in peer_docs if p["distribution"]),
        first_seq=obs.first_seq, last_seq=obs.last_seq,
    )


def readable_json(doc: Mapping[str, Any]) -> str:
    """JSON with one top-level key per line and one list element per line: readable, and written by the
    C encoder (``indent`` would fall back to the pure-Python one, far too slow for 100,000 peers)."""
    def value(v: Any) -> str:
        if isinstance(v, list) and v:
            return "[\n  " + ",\n  ".join(json.dumps(x, ensure_ascii=False) for x in v) + "\n ]"
        return json.dumps(v, ensure_ascii=False)

    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in doc.items()) + "\n}\n"


def _json(doc: Mapping[str, Any]) -> bytes:
    return readable_json(doc).encode("utf-8")


def _chain_doc(obs: Observations, anchor: Mapping[str, Any], created: str) -> dict[str, Any]:
    head_seq, head_hash = anchor.get("head_seq"), anchor.get("head_hash")
    if obs.last_seq is not None:
        if type(head_seq) is not int or head_seq < obs.last_seq:
            raise BundleError(f"chain_anchor head_seq {head_seq} lies before the last exported row {obs.last_seq}")
        if head_seq == obs.last_seq and head_hash != obs.prev:
            raise BundleError("chain_anchor head_hash is not the hash of the last exported row")
    if obs.first_seq == 1 and obs.first_prev != GENESIS_HASH:
        raise BundleError("the chain's first row must follow the genesis hash")
    return {
        "algorithm": ALGORITHM, "genesis_hash": GENESIS_HASH, "first_seq": obs.first_seq,
        "first_prev_hash": obs.first_prev if obs.last_seq is not None else None,
        "last_seq": obs.last_seq, "last_row_hash": obs.prev if obs.last_seq is not None else None,
        "rows": obs.rows, "redacted": obs.redacted, "head_seq": head_seq, "head_hash": head_hash,
        "exported_at": created,
    }


def _write_transcripts(arc: _Archive, transcripts: Iterable[tuple[Any, Any]], wanted: set[str]) -> int:
    written: set[str] = set()
    for _ident, body in transcripts:
        data = body.encode("utf-8") if isinstance(body, str) else body if isinstance(body, bytes) \
            else canonical_bytes(body)
        digest = hashlib.sha256(data).hexdigest()
        if digest in written:
            continue
        arc.put(f"transcripts/{digest}.json", data)
        written.add(digest)
    missing = wanted - written
    if missing:
        raise BundleError(f"{len(missing)} transcripts referenced by observations were not given "
                          f"(e.g. {sorted(missing)[0]})")
    return len(written)


def _write_pieces(arc: _Archive, pieces: Iterable[PieceRecord], index: TorrentIndex, allow_content: bool,
                  matches: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[tuple[str, int], _PieceFile]]:
    wanted = set()
    for m in matches:
        proof = m.get("proof") or {}
        if m.get("method") == "exact-piece" and isinstance(proof.get("piece_index"), int):
            wanted.add((index.get(m.get("infohash"))[0], proof["piece_index"]))
    docs, seen, kept = [], set(), {}
    for piece in pieces:
        key = index.get(piece.infohash)[0]
        if (key, piece.index) in seen:
            continue
        seen.add((key, piece.index))
        name, data, kind = _piece_entry(piece, index, allow_content)
        arc.put(name, data, method=STORED if kind == "bin" else DEFLATED)
        docs.append({"infohash": key, "index": piece.index, "file": name, "kind": kind})
        if (key, piece.index) in wanted:
            kept[(key, piece.index)] = (kind, data)
    return docs, kept


def _check_matches(matches: list[dict[str, Any]], index: TorrentIndex,
                   pieces: dict[tuple[str, int], tuple[str, bytes]]) -> None:
    for m in matches:
        try:
            check_match(m, index, lambda key, i: pieces.get((key, i)))
        except ProofError as exc:
            raise BundleError(f"match {m.get('id')}: the proof does not hold: {exc}") from exc
