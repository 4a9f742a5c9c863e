"""Hash-only fingerprints of local files (DESIGN.md principle 5; format: docs/fingerprint-format.md).

One read of a file computes its size, MD5, SHA-1 and SHA-256; the BitTorrent v2 leaf layer (BEP 52: SHA-256
of every 16 KiB block) from which the pieces root and the piece layer for any piece length follow; and the
BitTorrent v1 (BEP 3) SHA-1 piece tables of the file placed at offset 0, for every power-of-two piece length
from 16 KiB to 16 MiB. The media kind is sniffed from magic bytes; images and videos then get perceptual
hashes (:mod:`p2pwatch.match.media`, a second read by the decoder).

The hashing itself (one read, every core, the v1 tables from shared SHA-1 chains) is
:mod:`p2pwatch.match.fingerprint_hash`.

Departures: the last v1 piece of each table covers the file's tail only (what a single-file torrent, or a
file that ends the torrent, has); tables are kept up to the first piece length that holds the whole file,
since every longer one is the file's SHA-1. Empty files are refused: they carry no identity.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from p2pwatch import __version__, limits
from p2pwatch.errors import FingerprintError, LocalProtocolError, MediaError
from p2pwatch.match.fingerprint_hash import (
    CHUNK_SIZE,
    MAX_V1_PIECE,
    MIN_V1_PIECE,
    V1_PIECE_LENGTHS,
    FileHashes,
    ProgressCallback,
    hash_file_object,
    hash_stream,
)
from p2pwatch.match.hashlist import HashListItem, import_hash_list, parse_hex
from p2pwatch.match.local_files import open_regular_file
from p2pwatch.match.media import ContentKind, MediaFingerprint, media_fingerprint, sniff_kind
from p2pwatch.torrent import merkle

# hash-list import lives in p2pwatch.match.hashlist; re-exported here for existing callers
# hashing lives in p2pwatch.match.fingerprint_hash; re-exported here too
__all__ = [
    "CHUNK_SIZE", "MAX_V1_PIECE", "MIN_V1_PIECE", "V1_PIECE_LENGTHS", "FileHashes", "HashListItem",
    "ProgressCallback", "hash_stream", "import_hash_list",
]

FORMAT_NAME = "p2pwatch-fingerprint"
FORMAT_VERSION = 1
_SHA1_SIZE = 20


def check_document_header(doc: Any) -> None:
    """The ``format`` and ``version`` of a fingerprint document (docs/fingerprint-format.md), checked before
    anything else is read; raises :class:`FingerprintError`."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise FingerprintError("not a p2pwatch fingerprint (no \"format\": \"p2pwatch-fingerprint\")")
    if doc.get("version") != FORMAT_VERSION:
        raise FingerprintError(f"fingerprint format version {doc.get('version')!r} is not supported "
                               f"(this p2pwatch reads version {FORMAT_VERSION}; upgrade p2pwatch)")


@dataclass(frozen=True)
class Fingerprint:
    """Hashes of one file; no byte of its content. ``leaf_hashes`` concatenates the 32-byte v2 block hashes;
    ``v1_piece_tables`` maps a piece length to its concatenated 20-byte SHA-1 piece hashes."""

    size: int
    md5: str
    sha1: str
    sha256: str
    leaf_hashes: bytes
    v1_piece_tables: Mapping[int, bytes]
    kind: ContentKind
    media: MediaFingerprint | None = None
    source_name: str | None = None
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))
    tool_version: str = f"p2pwatch {__version__}"
    format_version: int = FORMAT_VERSION
    media_error: str | None = None

    def __hash__(self) -> int:
        return hash((self.sha256, self.size))

    @property
    def fingerprint_id(self) -> str:
        """The content id: the file's SHA-256, hex."""
        return self.sha256

    def leaves(self) -> list[bytes]:
        return merkle.split_hashes(self.leaf_hashes)

    def pieces_root(self) -> bytes:
        """BEP 52 pieces root (the same for every piece length)."""
        return merkle.pieces_root(self.leaves())

    def piece_layer(self, piece_length: int) -> list[bytes]:
        """BEP 52 piece-layer hashes for ``piece_length`` (``[pieces_root]`` for a file of one piece)."""
        return merkle.piece_layer(self.leaves(), piece_length)

    def has_v1_table(self, piece_length: int) -> bool:
        return piece_length in self.v1_piece_tables or (piece_length >= self.size and piece_length > 0)

    def v1_pieces(self, piece_length: int) -> list[bytes]:
        """SHA-1 piece hashes of this file at offset 0 of a v1 torrent with ``piece_length``."""
        table = self.v1_piece_tables.get(piece_length)
        if table is not None:
            return [table[i : i + _SHA1_SIZE] for i in range(0, len(table), _SHA1_SIZE)]
        if piece_length >= self.size and piece_length > 0:
            return [bytes.fromhex(self.sha1)]
        raise LocalProtocolError(f"no v1 piece table for piece length {piece_length} (have "
                                 f"{', '.join(str(k) for k in sorted(self.v1_piece_tables))})")

    def to_json(self) -> dict[str, Any]:
        """The version-1 JSON document (docs/fingerprint-format.md)."""
        return {
            "format": FORMAT_NAME, "version": self.format_version, "id": self.fingerprint_id,
            "size": self.size, "md5": self.md5, "sha1": self.sha1, "sha256": self.sha256,
            "kind": self.kind.value, "source_name": self.source_name,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"), "tool": self.tool_version,
            "v2": {"block_size": merkle.BLOCK_SIZE, "pieces_root": self.pieces_root().hex(),
                   "leaf_count": len(self.leaf_hashes) // merkle.HASH_SIZE,
                   "leaf_hashes": _pack(self.leaf_hashes)},
            "v1": {"offset": 0, "piece_tables": {str(k): _pack(v) for k, v in sorted(self.v1_piece_tables.items())}},
            "media": None if self.media is None else self.media.to_json(),
            "media_error": self.media_error,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Fingerprint:
        """Parse and check a fingerprint document; raises :class:`FingerprintError` on anything wrong."""
        check_document_header(doc)
        try:
            size = int(doc["size"])
            leaves = _unpack(doc["v2"]["leaf_hashes"])
            tables = {int(k): _unpack(v) for k, v in doc["v1"]["piece_tables"].items()}
            created = dt.datetime.fromisoformat(str(doc["created_at"]).replace("Z", "+00:00"))
            media = None if doc.get("media") is None else MediaFingerprint.from_json(doc["media"])
            fp = cls(size=size, md5=parse_hex(doc["md5"], 32), sha1=parse_hex(doc["sha1"], 40),
                     sha256=parse_hex(doc["sha256"], 64), leaf_hashes=leaves,
                     v1_piece_tables=MappingProxyType(tables), kind=ContentKind(doc["kind"]), media=media,
                     source_name=doc.get("source_name"), created_at=created, tool_version=str(doc["tool"]),
                     media_error=doc.get("media_error"))
            stated_root = bytes.fromhex(doc["v2"]["pieces_root"])
        except (KeyError, TypeError, ValueError, AttributeError, zlib.error) as exc:
            raise FingerprintError(f"malformed fingerprint: {type(exc).__name__}: {exc}") from None
        _check_consistent(fp, stated_root)
        return fp

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=1)
            handle.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fingerprint:
        return cls.from_json(_load_json(path))


def _pack(blob: bytes) -> str:
    return base64.b64encode(zlib.compress(blob, 6)).decode("ascii")


def _unpack(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("packed hashes must be a base64 string")
    raw = base64.b64decode(text, validate=True)
    inflater = zlib.decompressobj()
    out = inflater.decompress(raw, limits.MAX_FINGERPRINT_FILE)
    if inflater.unconsumed_tail:
        raise ValueError("packed hashes inflate beyond the fingerprint size limit")
    return out


def _check_consistent(fp: Fingerprint, stated_root: bytes) -> None:
    blocks = -(-fp.size // merkle.BLOCK_SIZE)
    if fp.size <= 0 or len(fp.leaf_hashes) != blocks * merkle.HASH_SIZE:
        raise FingerprintError(f"malformed fingerprint: {len(fp.leaf_hashes)} bytes of leaf hashes for a "
                               f"file of {fp.size} bytes")
    if fp.pieces_root() != stated_root:
        raise FingerprintError("malformed fingerprint: the leaf hashes do not give the stated pieces root")
    for length, table in fp.v1_piece_tables.items():
        if length not in V1_PIECE_LENGTHS or len(table) != -(-fp.size // length) * _SHA1_SIZE:
            raise FingerprintError(f"malformed fingerprint: bad v1 piece table for piece length {length}")


def _load_json(path: str | os.PathLike[str]) -> Any:
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            raw = handle.read(limits.MAX_FINGERPRINT_FILE + 1)
    except IsADirectoryError:
        raise FingerprintError(f"{name} is a directory, not a fingerprint file") from None
    except OSError as exc:
        raise FingerprintError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(raw) > limits.MAX_FINGERPRINT_FILE:
        raise FingerprintError(f"{name} is larger than {limits.MAX_FINGERPRINT_FILE} bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FingerprintError(f"{name} is not a fingerprint file (not JSON: {exc})") from None


def load_fingerprints(path: str | os.PathLike[str]) -> list[Fingerprint]:
    """A fingerprint file: one document, or a JSON list of them (what ``p2pwatch fingerprint -o x.json``
    writes)."""
    doc = _load_json(path)
    docs = doc if isinstance(doc, list) else [doc]
    try:
        return [Fingerprint.from_json(d) for d in docs]
    except FingerprintError as exc:
        raise FingerprintError(f"{os.fspath(path)}: {exc}") from None


# --- reading a file -----------------------------------------------------------------------------------

def fingerprint_file(
    path: str | os.PathLike[str],
    *,
    media: bool = True,
    progress: ProgressCallback | None = None,
    source_name: str | None = None,
    keep_name: bool = True,
) -> Fingerprint:
    """Fingerprint a local file. ``source_name`` defaults to the file's base name (``keep_name=False``
    leaves it out). With ``media``, images and videos get perceptual hashes; a file whose media cannot be
    decoded keeps its kind and gets ``media_error`` instead."""
    handle, total = open_regular_file(path)
    with handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        try:
            hashes = hash_file_object(handle, total, progress)
        except OSError as exc:
            raise FingerprintError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    if hashes.size == 0:
        raise FingerprintError(f"{os.fspath(path)} is empty: an empty file has nothing to fingerprint")
    kind = sniff_kind(hashes.head)
    media_fp, media_error = None, None
    if media and kind is not ContentKind.OTHER:
        try:
            media_fp = media_fingerprint(path, kind)
        except MediaError as exc:
            media_error = str(exc)
    name = source_name if source_name is not None else (os.path.basename(os.fspath(path)) if keep_name else None)
    return Fingerprint(size=hashes.size, md5=hashes.md5, sha1=hashes.sha1, sha256=hashes.sha256,
                       leaf_hashes=hashes.leaf_hashes, v1_piece_tables=hashes.v1_piece_tables, kind=kind,
                       media=media_fp, source_name=name, media_error=media_error)
