"""Metainfo: .torrent files and info dicts, v1 (BEP 3), v2 (BEP 52) and hybrid, with BEP 12 tracker tiers,
BEP 19 web seeds and BEP 47 pad files.

The infohashes are digests of the info dict's bytes exactly as received (never of a re-encoding). A
.torrent's v2 ``piece layers`` are checked against the files' pieces roots; an info dict on its own (BEP 9)
has none, and then only files of at most one piece can be checked against v2 hashes.

File paths: a single-file torrent's one file is ``(name,)``; a multi-file torrent's files are
``(name, *path)``. A v2 tree holding exactly one file at its root is a single-file torrent whose file is
named by its tree key (as libtorrent does). In a hybrid torrent the v1 file list, pad files included, gives
the files and their order; the v2 tree must list the same non-pad files with the same lengths, and every
non-empty file must start on a piece boundary in the v1 stream.

Departures from the spec, all on the strict side except the first two:

* text that is not valid UTF-8 is decoded as latin-1 (``name.utf-8`` / ``path.utf-8`` win when present);
* malformed *optional* fields outside the info dict (``announce-list``, ``url-list``, ``comment``…) are
  dropped rather than refusing the torrent: they are not covered by the infohash anyway;
* path components that are empty, ``.``, ``..``, or contain ``/`` or NUL are refused (BEP 52 says
  "sanitize"; a monitor has no reason to accept them), and so are torrents with no data at all;
* a v1 file whose path starts with ``.pad`` counts as a pad file even without ``attr`` ``p``.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from types import MappingProxyType
from typing import Any

from p2pwatch import limits
from p2pwatch.errors import LocalProtocolError, MetainfoError
from p2pwatch.torrent import bencoding, merkle
from p2pwatch.torrent.magnet import InfoHash, Magnet
from p2pwatch.torrent.metainfo_files import (
    FileEntry,
    check_piece_layers,
    decode_text,
    match_hybrid,
    optional_text,
    path_component,
    v1_files,
    v2_files,
    v2_offsets,
)

_V1_HASH = 20


class TorrentVersion(Enum):
    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"


_VERSIONS = {
    (True, False): TorrentVersion.V1,
    (False, True): TorrentVersion.V2,
    (True, True): TorrentVersion.HYBRID,
}


@dataclass(frozen=True)
class Metainfo:
    """A parsed torrent. ``piece_layers`` maps pieces roots to concatenated 32-byte hashes (empty for a
    bare info dict); ``trackers`` are BEP 12 tiers; hashing a Metainfo hashes its info bytes."""

    info_bytes: bytes
    info: dict[bytes, Any]
    name: str
    piece_length: int
    version: TorrentVersion
    infohash_v1: bytes | None
    infohash_v2: bytes | None
    files: tuple[FileEntry, ...]
    piece_hashes: tuple[bytes, ...]
    piece_layers: Mapping[bytes, bytes]
    trackers: tuple[tuple[str, ...], ...] = ()
    url_list: tuple[str, ...] = ()
    private: bool = False
    comment: str | None = None
    created_by: str | None = None
    creation_date: int | None = None
    torrent_bytes: bytes | None = None
    #: ``torrent_bytes`` decoded (its top-level dict), kept so :meth:`with_piece_layers` need not decode again.
    torrent_top: Mapping[bytes, Any] | None = field(default=None, repr=False, compare=False)

    def __hash__(self) -> int:
        return hash(self.info_bytes)

    @property
    def total_length(self) -> int:
        """Bytes of content (pad files excluded)."""
        return sum(f.length for f in self.files if not f.pad)

    @cached_property
    def num_pieces(self) -> int:
        """Pieces in the v1 stream, or in the v2 virtual stream of a v2-only torrent."""
        if self.piece_hashes:
            return len(self.piece_hashes)
        return sum(-(-f.length // self.piece_length) for f in self.files if not f.pad)

    @property
    def infohash(self) -> bytes:
        """The 20-byte id used on the DHT and the wire: v1, else the truncated v2 (BEP 52)."""
        return self.infohashes.dht_id

    @property
    def dht_ids(self) -> frozenset[bytes]:
        """Every 20-byte id the torrent goes by on the DHT and the wire: v1 and truncated v2 (a hybrid has
        both, BEP 52; libtorrent announces under both)."""
        return frozenset(h[:20] for h in (self.infohash_v1, self.infohash_v2) if h is not None)

    @property
    def infohashes(self) -> InfoHash:
        return InfoHash(v1=self.infohash_v1, v2=self.infohash_v2)

    @cached_property
    def _stream_end(self) -> int:
        if self.piece_hashes:
            return sum(f.length for f in self.files)
        return max(f.offset + f.length for f in self.files)

    @cached_property
    def _content_files(self) -> tuple[list[int], list[FileEntry]]:
        """Non-empty, non-pad files by first piece; each piece belongs to one (hybrid, v2) or more (v1)."""
        chosen = [f for f in self.files if f.length > 0 and not f.pad]
        return [f.offset // self.piece_length for f in chosen], chosen

    def _file_at_piece(self, index: int) -> FileEntry:
        starts, chosen = self._content_files
        return chosen[bisect.bisect_right(starts, index) - 1]

    def _check_piece(self, index: int) -> None:
        if not 0 <= index < self.num_pieces:
            raise LocalProtocolError(f"piece {index} out of range 0..{self.num_pieces - 1}")

    def piece_size(self, index: int) -> int:
        """Bytes in piece ``index``: in the v1 stream (pad bytes count), or for a v2-only torrent the
        file bytes of the piece (the last piece of each file may be short)."""
        self._check_piece(index)
        start = index * self.piece_length
        if self.piece_hashes:
            return min(self.piece_length, self._stream_end - start)
        file = self._file_at_piece(index)
        return min(self.piece_length, file.offset + file.length - start)

    def piece_range(self, offset: int, length: int) -> range:
        """Pieces covering bytes ``[offset, offset + length)`` of the stream (empty for ``length == 0``)."""
        if offset < 0 or length < 0 or offset + length > self._stream_end:
            raise LocalProtocolError(f"byte range {offset}+{length} outside the torrent's {self._stream_end}")
        first = offset // self.piece_length
        if length == 0:
            return range(first, first)
        return range(first, (offset + length - 1) // self.piece_length + 1)

    def file_pieces(self, file: FileEntry) -> range:
        """Pieces overlapping ``file``."""
        return self.piece_range(file.offset, file.length)

    def verify_piece(self, index: int, data: bytes) -> bool:
        """Check a whole piece: its v1 SHA-1 hash when the torrent has one, and its v2 hash when known
        (hybrid torrents are checked both ways, BEP 52 "Upgrade Path"). For a v2-only torrent ``data`` is
        the piece's file bytes, and the piece layer must be known (see :meth:`verify_piece_v2`)."""
        self._check_piece(index)
        if len(data) != self.piece_size(index):
            return False
        if self.piece_hashes:
            if hashlib.sha1(data).digest() != self.piece_hashes[index]:
                return False
            if self.version is TorrentVersion.V1:
                return True
        file = self._file_at_piece(index)
        if self.piece_hashes and self.v2_piece_hashes(file) is None:
            return True  # hybrid from a bare info dict: the v2 layer is unknown, v1 has been checked
        part = data[: file.offset + file.length - index * self.piece_length]  # drop a hybrid's pad bytes
        return self.verify_piece_v2(file, index - file.offset // self.piece_length, part)

    def _own_file(self, file: FileEntry) -> None:
        if not 0 <= file.index < len(self.files) or self.files[file.index] != file:
            raise LocalProtocolError(f"{file.display_path!r} is not a file of this torrent")

    def v2_piece_hashes(self, file: FileEntry) -> tuple[bytes, ...] | None:
        """The v2 hashes of ``file``'s pieces: its piece layer, or ``(pieces_root,)`` for a file of at most
        one piece; None for v1 files, empty files, and layers not known (bare info dict)."""
        self._own_file(file)
        if file.pieces_root is None:
            return None
        if file.length <= self.piece_length:
            return (file.pieces_root,)
        layer = self.piece_layers.get(file.pieces_root)
        return None if layer is None else tuple(merkle.split_hashes(layer))

    def piece_verifiable(self, index: int) -> bool:
        """Whether :meth:`verify_piece` can check piece ``index``: always with v1 hashes; for a v2-only
        torrent when its file fits in one piece or its piece layer is known."""
        self._check_piece(index)
        return bool(self.piece_hashes) or self.v2_piece_hashes(self._file_at_piece(index)) is not None

    def verify_piece_v2(self, file: FileEntry, piece_in_file: int, data: bytes) -> bool:
        """Check ``data``, the bytes of piece ``piece_in_file`` of ``file`` (no padding), against the v2
        hashes. Raises :class:`LocalProtocolError` when those hashes are not known."""
        hashes = self.v2_piece_hashes(file)
        if hashes is None:
            raise LocalProtocolError(
                f"no v2 piece hashes for {file.display_path!r}: "
                + ("not a v2 file" if file.pieces_root is None else "its piece layer is not known")
            )
        if not 0 <= piece_in_file < len(hashes):
            raise LocalProtocolError(f"piece {piece_in_file} out of range for {file.display_path!r}")
        expected = min(self.piece_length, file.length - piece_in_file * self.piece_length)
        if len(data) != expected:
            return False
        if file.length <= self.piece_length:
            return merkle.pieces_root(merkle.block_hashes(data)) == hashes[0]
        return merkle.piece_hash_v2(data, self.piece_length) == hashes[piece_in_file]

    def with_piece_layers(self, layers: Mapping[bytes, bytes]) -> Metainfo:
        """A copy with v2 piece layers obtained elsewhere (e.g. BEP 52 hash requests), checked against
        the pieces roots; raises :class:`MetainfoError` when one does not match. When a layer was added and
        the metainfo came from a .torrent, ``torrent_bytes`` is that .torrent with the merged ``piece layers``
        (every other key kept, the info dict spliced in byte for byte); otherwise None."""
        merged = dict(self.piece_layers)
        merged.update(check_piece_layers(dict(layers), self.files, self.piece_length, require=False))
        if merged.keys() == self.piece_layers.keys():
            return self
        if self.torrent_bytes is None:
            return dataclasses.replace(self, piece_layers=MappingProxyType(merged))
        if self.torrent_top is None:
            raise LocalProtocolError("torrent_bytes without torrent_top: make a Metainfo with parse_torrent")
        top = MappingProxyType({**self.torrent_top, b"piece layers": merged})
        return dataclasses.replace(self, piece_layers=MappingProxyType(merged),
                                   torrent_bytes=_with_layers(top, self.info_bytes), torrent_top=top)

    @property
    def layer_files(self) -> tuple[FileEntry, ...]:
        """The v2 files larger than one piece: the ones whose piece hashes live in ``piece layers``."""
        return tuple(f for f in self.files if f.pieces_root is not None and f.length > self.piece_length)

    @property
    def missing_layers(self) -> tuple[FileEntry, ...]:
        """The :attr:`layer_files` whose piece layer is not known (all of them for a bare BEP 9 info dict)."""
        return tuple(f for f in self.layer_files if f.pieces_root not in self.piece_layers)

    def stored_bytes(self) -> bytes:
        """What the evidence store keeps: the .torrent (as given, or with the layers added by
        :meth:`with_piece_layers`), else a bencoded dict of the info dict exactly as received (BEP 9) and the
        piece layers known so far (BEP 52 keys sort ``info`` first)."""
        if self.torrent_bytes is not None:
            return self.torrent_bytes
        out = b"d4:info" + self.info_bytes
        if self.piece_layers:
            out += b"12:piece layers" + bencoding.encode(dict(self.piece_layers))
        return out + b"e"

    def to_magnet(self) -> str:
        trackers = tuple(dict.fromkeys(url for tier in self.trackers for url in tier))
        return Magnet(
            infohash=self.infohashes, display_name=self.name, trackers=trackers, web_seeds=self.url_list
        ).to_uri()


def parse_torrent(data: bytes, *, require_layers: bool = True) -> Metainfo:
    """Parse a whole .torrent file; its v2 piece layers are checked against the pieces roots.

    A .torrent must hold the layer of every v2 file larger than a piece (BEP 52). What the evidence store
    keeps (:meth:`Metainfo.stored_bytes`) may hold fewer: an info dict received by BEP 9 has none, and
    layers fetched by hash requests come one file at a time; read it with ``require_layers=False`` (a layer
    that is present is still checked)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MetainfoError("a .torrent must be bytes")
    data = bytes(data)
    top = bencoding.decode(data, max_size=limits.MAX_TORRENT_FILE)
    if not isinstance(top, dict):
        raise MetainfoError("a .torrent must be a bencoded dict")
    if not isinstance(top.get(b"info"), dict):
        raise MetainfoError("the .torrent has no 'info' dict")
    try:
        info_bytes = bencoding.raw_dict_value(data, b"info")
    except (ValueError, IndexError) as exc:  # data decoded fine, so this is not expected
        raise MetainfoError(f"cannot locate the info dict: {exc}") from exc
    if info_bytes is None:
        raise MetainfoError("the .torrent has no 'info' dict")
    meta = _build(info_bytes, _tiers_from_torrent(top), info=top[b"info"])
    layers = check_piece_layers(top.get(b"piece layers"), meta.files, meta.piece_length, require=require_layers)
    return dataclasses.replace(
        meta,
        piece_layers=MappingProxyType(layers),
        url_list=_url_list(top.get(b"url-list")),
        comment=optional_text(top, b"comment"),
        created_by=optional_text(top, b"created by"),
        creation_date=top.get(b"creation date") if type(top.get(b"creation date")) is int else None,
        torrent_bytes=data,
        torrent_top=MappingProxyType(top),
    )


def parse_info(info_bytes: bytes, *, trackers: Sequence[Sequence[str]] = ()) -> Metainfo:
    """Parse a bare info dict, e.g. received by BEP 9 metadata exchange (no piece layers)."""
    if not isinstance(info_bytes, bytes | bytearray | memoryview):
        raise MetainfoError("an info dict must be bytes")
    lists = [[tier] if isinstance(tier, str) else list(tier) for tier in trackers]
    tiers = tuple(t for t in (tuple(dict.fromkeys(u for u in tier if u)) for tier in lists) if t)
    return _build(bytes(info_bytes), tiers)


# --- parsing -------------------------------------------------------------------------------------------


def _piece_length(info: dict[bytes, Any], v2: bool) -> int:
    value = info.get(b"piece length")
    if type(value) is not int or not 0 < value <= limits.MAX_TORRENT_PIECE_LENGTH:
        raise MetainfoError(
            f"missing or invalid 'piece length' (must be 1..{limits.MAX_TORRENT_PIECE_LENGTH})"
        )
    if v2 and (value < merkle.BLOCK_SIZE or value & (value - 1)):
        raise MetainfoError(f"v2 'piece length' {value} must be a power of two of at least 16 KiB")
    return value


def _build(info_bytes: bytes, trackers: tuple[tuple[str, ...], ...], *, info: Any = None) -> Metainfo:
    """The Metainfo of ``info_bytes``; ``info`` is their decoded value when the caller has it already (a
    .torrent decoded whole holds its info dict decoded), so the bytes are decoded once."""
    if len(info_bytes) > limits.MAX_METADATA_SIZE:
        raise MetainfoError(f"info dict of {len(info_bytes)} bytes exceeds {limits.MAX_METADATA_SIZE}")
    if info is None:
        info = bencoding.decode(info_bytes, max_size=limits.MAX_METADATA_SIZE)
    if not isinstance(info, dict):
        raise MetainfoError("the info dict is not a dict")
    version = info.get(b"meta version")
    if version is not None and version != 2:
        raise MetainfoError(f"unsupported 'meta version' {str(version)[:20]} (this reader knows 2)")
    has_v2, has_v1 = version == 2, b"pieces" in info
    if not (has_v1 or has_v2):
        raise MetainfoError("info dict has neither v1 'pieces' nor v2 'meta version' 2")
    raw_name = info.get(b"name.utf-8") if isinstance(info.get(b"name.utf-8"), bytes) else info.get(b"name")
    name = path_component(raw_name, "name") if raw_name is not None else ""
    if not name:
        raise MetainfoError("info dict has no 'name'")
    piece_length = _piece_length(info, has_v2)

    v1 = v1_files(info, name) if has_v1 else None
    v2 = v2_files(info.get(b"file tree")) if has_v2 else None
    if v2 is not None and v1 is None and len(v2) == 1 and len(v2[0].rel) == 1:
        name_prefix: tuple[str, ...] = ()  # v2 single-file torrent: the file is named by its key
    else:
        name_prefix = (name,)
    single_v1 = has_v1 and b"length" in info
    pieces: tuple[bytes, ...] = ()
    if v1 is not None:
        blob = info[b"pieces"]
        if not isinstance(blob, bytes) or len(blob) % _V1_HASH:
            raise MetainfoError("'pieces' must be a string whose length is a multiple of 20")
        total = sum(f.length for f in v1)
        if total == 0:
            raise MetainfoError("the torrent holds no data (total length 0)")
        expected = -(-total // piece_length)
        if len(blob) // _V1_HASH != expected:
            raise MetainfoError(f"'pieces' has {len(blob) // _V1_HASH} hashes, {total} bytes need {expected}")
        pieces = tuple(blob[i : i + _V1_HASH] for i in range(0, len(blob), _V1_HASH))
    if v2 is not None:
        count = sum(-(-f.length // piece_length) for f in v2)
        if count == 0:
            raise MetainfoError("the torrent holds no data (total length 0)")
        if count > limits.MAX_TORRENT_PIECES:
            raise MetainfoError(f"{count} pieces exceed the limit of {limits.MAX_TORRENT_PIECES}")
        if pieces and len(pieces) != count:
            raise MetainfoError(f"hybrid torrent: v1 has {len(pieces)} pieces, v2 has {count}")

    entries: list[FileEntry] = []
    if v1 is not None:
        roots = match_hybrid(v1, v2, piece_length) if v2 is not None else [None] * len(v1)
        pos = 0
        for i, (f, root) in enumerate(zip(v1, roots, strict=True)):
            path = f.rel if single_v1 else (*name_prefix, *f.rel)
            entries.append(FileEntry(i, path, f.length, pos, f.pad, f.attr, root))
            pos += f.length
    else:
        assert v2 is not None
        for i, (f, offset) in enumerate(zip(v2, v2_offsets(v2, piece_length), strict=True)):
            entries.append(FileEntry(i, (*name_prefix, *f.rel), f.length, offset, f.pad, f.attr, f.root))

    return Metainfo(
        info_bytes=info_bytes,
        info=info,
        name=name,
        piece_length=piece_length,
        version=_VERSIONS[has_v1, has_v2],
        infohash_v1=hashlib.sha1(info_bytes).digest() if has_v1 else None,
        infohash_v2=hashlib.sha256(info_bytes).digest() if has_v2 else None,
        files=tuple(entries),
        piece_hashes=pieces,
        piece_layers=MappingProxyType({}),
        trackers=trackers,
        private=info.get(b"private") == 1,
    )


def _with_layers(top: Mapping[bytes, Any], info_bytes: bytes) -> bytes:
    """The decoded .torrent ``top`` (its ``piece layers`` already replaced) encoded again: keys in sorted order
    (BEP 3), the info dict's raw bytes as they were (its hashes must not change)."""
    out = [b"d"]
    for key in sorted(top):
        out.append(bencoding.encode(key))
        out.append(info_bytes if key == b"info" else bencoding.encode(top[key]))
    return b"".join(out) + b"e"


def _tiers_from_torrent(top: dict[bytes, Any]) -> tuple[tuple[str, ...], ...]:
    seen: set[str] = set()
    tiers: list[tuple[str, ...]] = []
    announce_list = top.get(b"announce-list")
    for tier in announce_list if isinstance(announce_list, list) else ():
        urls = tier if isinstance(tier, list) else [tier]
        kept = []
        for url in urls:
            if isinstance(url, bytes) and (text := decode_text(url).strip()) and text not in seen:
                seen.add(text)
                kept.append(text)
        if kept:
            tiers.append(tuple(kept))
    announce = top.get(b"announce")
    if not tiers and isinstance(announce, bytes) and (text := decode_text(announce).strip()):
        tiers.append((text,))
    return tuple(tiers)


def _url_list(raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, bytes) else raw if isinstance(raw, list) else []
    return tuple(dict.fromkeys(t for item in items if isinstance(item, bytes) and (t := decode_text(item).strip())))
