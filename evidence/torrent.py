"""Reading .torrent files on the standard library alone: infohashes, files, v1 piece hashes (BEP 3) and the
v2 SHA-256 merkle trees (BEP 52), enough to re-check every hash an evidence bundle relies on.

Infohashes are SHA-1 (v1) and SHA-256 (v2) of the info dict exactly as it appears in the file. File offsets
are in the v1 piece stream (pad files included) or, for a v2-only torrent, in the virtual stream where every
file starts on a piece boundary. v2 merkle trees use 16 KiB leaves padded with zero hashes (32 zero bytes)
up to a power of two; a file of at most one piece is padded only to the next power of two of its own leaf
count, and its one piece hash is its pieces root; ``piece layers`` are checked against the pieces roots.

Departures: none in the hashing; the reader is stricter than clients (see :mod:`evidence.bdecode`) and
refuses unsafe path components. It is an independent re-implementation: it must not import p2pwatch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from evidence.bdecode import BencodeError, decode, decode_with_span

BLOCK_SIZE = 16384
ZERO_HASH = bytes(32)


class TorrentError(ValueError):
    """The .torrent is malformed or inconsistent."""


# --- BEP 52 merkle trees -------------------------------------------------------------------------------


def block_hashes(data: bytes) -> list[bytes]:
    """SHA-256 of each 16 KiB block of ``data`` (the last may be short)."""
    view = memoryview(data)
    return [hashlib.sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


def merkle_root(leaves: list[bytes], width: int | None = None, pad: bytes = ZERO_HASH) -> bytes:
    """Root over ``leaves`` padded with ``pad`` to ``width`` (default: the next power of two)."""
    if not leaves:
        raise TorrentError("a merkle tree needs at least one leaf")
    if width is None:
        width = 1 << (len(leaves) - 1).bit_length()
    if width & (width - 1) or width < len(leaves):
        raise TorrentError(f"cannot pad {len(leaves)} leaves to {width}")
    nodes = list(leaves)
    while width > 1:
        if len(nodes) % 2:
            nodes.append(pad)
        nodes = [hashlib.sha256(nodes[i] + nodes[i + 1]).digest() for i in range(0, len(nodes), 2)]
        pad = hashlib.sha256(pad + pad).digest()
        width //= 2
    return nodes[0]


def pad_piece_hash(piece_length: int) -> bytes:
    """Root of a piece-sized subtree of zero leaves (the padding of a piece layer)."""
    return merkle_root([ZERO_HASH], piece_length // BLOCK_SIZE)


def piece_hash_v2(data: bytes, piece_length: int, *, single_piece_file: bool) -> bytes:
    """v2 hash of one piece's file bytes; for a file of at most one piece, its pieces root."""
    leaves = block_hashes(data)
    if not leaves:
        raise TorrentError("a v2 piece holds at least one byte")
    return merkle_root(leaves) if single_piece_file else merkle_root(leaves, piece_length // BLOCK_SIZE)


def root_from_piece_layer(layer: list[bytes], piece_length: int) -> bytes:
    """The pieces root implied by a file's piece layer."""
    return merkle_root(layer, pad=pad_piece_hash(piece_length))


# --- the torrent -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorrentFile:
    index: int
    path: tuple[str, ...]
    length: int
    offset: int
    pad: bool
    pieces_root: bytes | None

    @property
    def display_path(self) -> str:
        return "/".join(self.path)


@dataclass
class Torrent:
    """A parsed .torrent (only what verification needs)."""

    info_bytes: bytes
    name: str
    piece_length: int
    infohash_v1: bytes | None
    infohash_v2: bytes | None
    files: list[TorrentFile]
    piece_hashes: list[bytes]
    piece_layers: dict[bytes, list[bytes]] = field(default_factory=dict)

    @property
    def version(self) -> str:
        if self.infohash_v1 and self.infohash_v2:
            return "hybrid"
        return "v1" if self.infohash_v1 else "v2"

    def ids(self) -> set[str]:
        """Every hex form an infohash of this torrent may take: v1, v2, and v2 truncated to 20 bytes."""
        out = set()
        if self.infohash_v1:
            out.add(self.infohash_v1.hex())
        if self.infohash_v2:
            out.update((self.infohash_v2.hex(), self.infohash_v2[:20].hex()))
        return out

    @property
    def num_pieces(self) -> int:
        if self.piece_hashes:
            return len(self.piece_hashes)
        return sum(-(-f.length // self.piece_length) for f in self.files)

    def _stream_end(self) -> int:
        return max(f.offset + f.length for f in self.files)

    def file_at_piece(self, index: int) -> TorrentFile:
        """The content file whose bytes start piece ``index`` (v2 pieces belong to exactly one file)."""
        self._check(index)
        start = index * self.piece_length
        for f in self.files:
            if not f.pad and f.length and f.offset <= start < f.offset + f.length:
                return f
        raise TorrentError(f"piece {index} starts in padding")

    def _check(self, index: int) -> None:
        if not 0 <= index < self.num_pieces:
            raise TorrentError(f"piece {index} out of range 0..{self.num_pieces - 1}")

    def piece_size(self, index: int) -> int:
        """Bytes of piece ``index`` (v1 stream; for v2-only, the file bytes it holds)."""
        self._check(index)
        start = index * self.piece_length
        if self.piece_hashes:
            return min(self.piece_length, self._stream_end() - start)
        f = self.file_at_piece(index)
        return min(self.piece_length, f.offset + f.length - start)

    def piece_hash(self, index: int, algorithm: str) -> bytes:
        """The metainfo's hash of piece ``index``: ``sha1`` (v1) or ``sha256-merkle`` (v2)."""
        self._check(index)
        if algorithm == "sha1":
            if not self.piece_hashes:
                raise TorrentError("a v2-only torrent has no SHA-1 piece hashes")
            return self.piece_hashes[index]
        if algorithm != "sha256-merkle":
            raise TorrentError(f"unknown piece hash algorithm {algorithm!r}")
        f = self.file_at_piece(index)
        if f.pieces_root is None:
            raise TorrentError("a v1-only torrent has no v2 piece hashes")
        if f.length <= self.piece_length:
            return f.pieces_root
        layer = self.piece_layers.get(f.pieces_root)
        if layer is None:
            raise TorrentError(f"the piece layer of {f.display_path!r} is missing")
        return layer[index - f.offset // self.piece_length]

    def hash_piece_data(self, index: int, data: bytes, algorithm: str) -> bytes:
        """Hash ``data`` as piece ``index`` the way ``algorithm`` hashes it (see :meth:`piece_hash`)."""
        if algorithm == "sha1":
            return hashlib.sha1(data).digest()
        f = self.file_at_piece(index)
        part = data[: f.offset + f.length - index * self.piece_length]  # drop a hybrid piece's pad bytes
        return piece_hash_v2(part, self.piece_length, single_piece_file=f.length <= self.piece_length)

    @property
    def layer_files(self) -> list[TorrentFile]:
        """The v2 files larger than one piece: their piece hashes are in ``piece layers``, outside the info
        dict (a file of at most one piece has its pieces root as its one piece hash)."""
        return [f for f in self.files if f.pieces_root is not None and f.length > self.piece_length]

    @property
    def missing_layers(self) -> list[TorrentFile]:
        """The :attr:`layer_files` whose layer this metainfo does not hold."""
        return [f for f in self.layer_files if f.pieces_root not in self.piece_layers]

    def default_algorithm(self) -> str:
        return "sha1" if self.piece_hashes else "sha256-merkle"


def _text(raw: Any, where: str) -> str:
    if not isinstance(raw, bytes):
        raise TorrentError(f"{where} must be a string")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if text in ("", ".", "..") or "/" in text or "\x00" in text:
        raise TorrentError(f"{where}: unsafe path component {text[:60]!r}")
    return text


def _length(raw: Any, where: str) -> int:
    if type(raw) is not int or raw < 0:
        raise TorrentError(f"{where}: length must be a non-negative integer")
    return raw


def _v1_entries(info: dict[bytes, Any], name: str) -> list[tuple[tuple[str, ...], int, bool]]:
    if b"files" not in info:
        return [((name,), _length(info.get(b"length"), "length"), False)]
    files = info[b"files"]
    if not isinstance(files, list) or not files or b"length" in info:
        raise TorrentError("'files' must be a non-empty list, without a top-level 'length'")
    out = []
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise TorrentError(f"files[{i}] must be a dict")
        attr = entry.get(b"attr", b"")
        path = entry.get(b"path.utf-8") if isinstance(entry.get(b"path.utf-8"), list) else entry.get(b"path")
        if not isinstance(path, list) or not path:
            raise TorrentError(f"files[{i}]: 'path' must be a non-empty list")
        rel = tuple(_text(part, f"files[{i}].path") for part in path)
        pad = (isinstance(attr, bytes) and b"p" in attr) or rel[0] == ".pad"
        out.append(((name, *rel), _length(entry.get(b"length"), f"files[{i}]"), pad))
    return out


def _v2_entries(tree: Any) -> list[tuple[tuple[str, ...], int, bytes | None]]:
    out: list[tuple[tuple[str, ...], int, bytes | None]] = []

    def walk(node: Any, prefix: tuple[str, ...], depth: int) -> None:
        if not isinstance(node, dict) or not node or depth > 64:
            raise TorrentError("'file tree' nodes must be non-empty dicts")
        for key, child in node.items():
            path = (*prefix, _text(key, "file tree"))
            if isinstance(child, dict) and b"" in child:
                props = child[b""]
                if len(child) != 1 or not isinstance(props, dict):
                    raise TorrentError(f"file tree {'/'.join(path)[:100]}: malformed file entry")
                size = _length(props.get(b"length"), "/".join(path)[:100])
                root = props.get(b"pieces root") if size else None
                if size and (not isinstance(root, bytes) or len(root) != 32):
                    raise TorrentError(f"{'/'.join(path)[:100]}: a non-empty file needs a 32-byte pieces root")
                out.append((path, size, root))
            else:
                walk(child, path, depth + 1)

    walk(tree, (), 0)
    return out


def parse_torrent(data: bytes) -> Torrent:
    """Parse a whole .torrent file (v1, v2 or hybrid) and check the v2 piece layers it holds; a layer it
    lacks is listed in :attr:`Torrent.missing_layers` (a piece hash that needs it cannot be checked)."""
    return torrent_from_decoded(data, *decode_strict(data))


def decode_strict(data: bytes) -> tuple[Any, tuple[int, int] | None]:
    """``data`` decoded once, with the span of its top-level ``info`` value (:func:`decode_with_span`); for
    the callers that look at the decoded value themselves and then hand it to the ``*_from_decoded`` parsers."""
    try:
        return decode_with_span(data, b"info")
    except BencodeError as exc:
        raise TorrentError(f"not strict bencoding: {exc}") from exc


def torrent_from_decoded(data: bytes, top: Any, span: tuple[int, int] | None) -> Torrent:
    """:func:`parse_torrent` of ``data`` already decoded by :func:`decode_strict` (``top``, ``span``)."""
    if not isinstance(top, dict) or span is None or not isinstance(top.get(b"info"), dict):
        raise TorrentError("a .torrent must be a dict with an 'info' dict")
    return _parse_info(data[span[0] : span[1]], top[b"info"], top.get(b"piece layers", {}))


def parse_info_dict(data: bytes) -> Torrent:
    """Parse a bare info dict (what BEP 9 metadata exchange hands over): the file's bytes are the info dict,
    so its SHA-1 is the v1 infohash and its SHA-256 the v2 one. It holds no piece layers (BEP 52 keeps them
    outside the info dict)."""
    try:
        info = decode(data)
    except BencodeError as exc:
        raise TorrentError(f"not strict bencoding: {exc}") from exc
    return info_dict_from_decoded(data, info)


def info_dict_from_decoded(data: bytes, info: Any) -> Torrent:
    """:func:`parse_info_dict` of ``data`` whose decoded value is ``info`` (decoded once by the caller, e.g.
    as the ``info`` value of a dict that wraps it)."""
    if not isinstance(info, dict) or b"info" in info or b"piece length" not in info:
        raise TorrentError("an info dict must be a dict with 'piece length' (and not a whole .torrent)")
    return _parse_info(bytes(data), info, {})


def _parse_info(info_bytes: bytes, info: dict[bytes, Any], layers: Any) -> Torrent:
    has_v2 = info.get(b"meta version") == 2
    has_v1 = b"pieces" in info
    if not (has_v1 or has_v2):
        raise TorrentError("info dict has neither v1 'pieces' nor 'meta version' 2")
    raw_name = info.get(b"name.utf-8") if isinstance(info.get(b"name.utf-8"), bytes) else info.get(b"name")
    name = _text(raw_name, "name")
    piece_length = info.get(b"piece length")
    if type(piece_length) is not int or piece_length <= 0:
        raise TorrentError("invalid 'piece length'")
    if has_v2 and (piece_length < BLOCK_SIZE or piece_length & (piece_length - 1)):
        raise TorrentError("a v2 'piece length' must be a power of two of at least 16 KiB")

    v2 = _v2_entries(info.get(b"file tree")) if has_v2 else []
    files: list[TorrentFile] = []
    pieces: list[bytes] = []
    if has_v1:
        blob = info[b"pieces"]
        if not isinstance(blob, bytes) or len(blob) % 20:
            raise TorrentError("'pieces' must be a string of 20-byte hashes")
        pieces = [blob[i : i + 20] for i in range(0, len(blob), 20)]
        v2_iter = iter(v2)
        multi = b"files" in info
        offset = 0
        for i, (path, length, pad) in enumerate(_v1_entries(info, name)):
            root = None
            if has_v2 and not pad:
                v2_path, v2_length, root = next(v2_iter, ((), -1, None))
                if v2_path != (path[1:] if multi else path) or v2_length != length:
                    raise TorrentError(f"hybrid torrent: v1 and v2 disagree on {'/'.join(path)[:100]!r}")
                if length and offset % piece_length:
                    raise TorrentError(f"hybrid torrent: {'/'.join(path)[:100]!r} is not piece-aligned")
            files.append(TorrentFile(i, path, length, offset, pad, root))
            offset += length
        if has_v2 and next(v2_iter, None) is not None:
            raise TorrentError("hybrid torrent: v2 lists more files than v1")
        if offset == 0 or len(pieces) != -(-offset // piece_length):
            raise TorrentError(f"'pieces' has {len(pieces)} hashes for {offset} bytes")
    else:
        single = len(v2) == 1 and len(v2[0][0]) == 1
        offset = 0
        for i, (path, length, root) in enumerate(v2):
            files.append(TorrentFile(i, path if single else (name, *path), length, offset, False, root))
            offset += -(-length // piece_length) * piece_length
        if offset == 0:
            raise TorrentError("the torrent holds no data")

    torrent = Torrent(
        info_bytes=info_bytes,
        name=name,
        piece_length=piece_length,
        infohash_v1=hashlib.sha1(info_bytes).digest() if has_v1 else None,
        infohash_v2=hashlib.sha256(info_bytes).digest() if has_v2 else None,
        files=files,
        piece_hashes=pieces,
    )
    if has_v2:
        torrent.piece_layers = _piece_layers(layers, files, piece_length)
    return torrent


def _piece_layers(raw: Any, files: list[TorrentFile], piece_length: int) -> dict[bytes, list[bytes]]:
    if not isinstance(raw, dict):
        raise TorrentError("'piece layers' must be a dict")
    out: dict[bytes, list[bytes]] = {}
    for f in files:
        if f.pieces_root is None or f.length <= piece_length:
            continue
        blob = raw.get(f.pieces_root)
        count = -(-f.length // piece_length)
        if blob is None:
            continue  # not known (an info dict from BEP 9, or a layer never fetched): see missing_layers
        if not isinstance(blob, bytes) or len(blob) != 32 * count:
            raise TorrentError(f"'piece layers' lacks a layer of {count} hashes for {f.display_path[:100]!r}")
        layer = [blob[i : i + 32] for i in range(0, len(blob), 32)]
        if root_from_piece_layer(layer, piece_length) != f.pieces_root:
            raise TorrentError(f"the piece layer of {f.display_path[:100]!r} does not match its pieces root")
        out[f.pieces_root] = layer
    return out
