"""File-list parsing for :mod:`p2pwatch.torrent.metainfo`: the v1 ``length``/``files`` list (BEP 3, BEP 47 pad
files), the v2 ``file tree`` (BEP 52), the hybrid cross-check between the two, ``piece layers`` validation,
and the text and path-component helpers they share. ``FileEntry`` (one file of a torrent) lives here and
:mod:`p2pwatch.torrent.metainfo` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2pwatch import limits
from p2pwatch.errors import MetainfoError
from p2pwatch.torrent import merkle

__all__ = [
    "V2_HASH",
    "FileEntry",
    "RawFile",
    "check_piece_layers",
    "decode_text",
    "file_attr",
    "file_length",
    "match_hybrid",
    "optional_text",
    "path_component",
    "v1_files",
    "v2_files",
    "v2_offsets",
]


@dataclass(frozen=True)
class FileEntry:
    """One file of a torrent. ``offset`` is in the v1 piece stream (pad files included), or for v2-only
    torrents in the virtual stream where every non-empty file starts on a piece boundary."""

    index: int
    path: tuple[str, ...]
    length: int
    offset: int
    pad: bool
    attr: str
    pieces_root: bytes | None

    @property
    def display_path(self) -> str:
        return "/".join(self.path)

V2_HASH = 32



def decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def optional_text(d: dict[bytes, Any], key: bytes) -> str | None:
    value = d.get(key + b".utf-8")
    if not isinstance(value, bytes):
        value = d.get(key)
    return decode_text(value) if isinstance(value, bytes) else None


def path_component(raw: Any, where: str) -> str:
    if not isinstance(raw, bytes):
        raise MetainfoError(f"{where}: a path component must be a string")
    text = decode_text(raw)
    if text in ("", ".", "..") or "/" in text or "\x00" in text:
        raise MetainfoError(f"{where}: unsafe path component {text[:60]!r} (empty, '.', '..', '/' or NUL)")
    return text


def file_length(raw: Any, where: str) -> int:
    if type(raw) is not int or raw < 0:
        raise MetainfoError(f"{where}: length must be a non-negative integer")
    return raw


def file_attr(raw: Any) -> str:
    return raw.decode("latin-1") if isinstance(raw, bytes) else ""


@dataclass(frozen=True)
class RawFile:
    rel: tuple[str, ...]  # path below the torrent's name
    length: int
    attr: str
    pad: bool
    root: bytes | None = None


def v1_files(info: dict[bytes, Any], name: str) -> list[RawFile]:
    files, length = info.get(b"files"), info.get(b"length")
    if files is not None and length is not None:
        raise MetainfoError("info dict has both 'length' (single file) and 'files' (multi-file)")
    if files is None:
        if length is None:
            raise MetainfoError("info dict has neither 'length' nor 'files'")
        attr = file_attr(info.get(b"attr"))
        return [RawFile((name,), file_length(length, "length"), attr, False)]
    if not isinstance(files, list) or not files:
        raise MetainfoError("'files' must be a non-empty list")
    if len(files) > limits.MAX_TORRENT_FILES:
        raise MetainfoError(f"{len(files)} files exceed the limit of {limits.MAX_TORRENT_FILES}")
    out = []
    for i, entry in enumerate(files):
        where = f"files[{i}]"
        if not isinstance(entry, dict):
            raise MetainfoError(f"{where} must be a dict")
        attr = file_attr(entry.get(b"attr"))
        raw_length = entry.get(b"length")
        size = 0 if raw_length is None and "l" in attr else file_length(raw_length, where)
        raw_path = entry.get(b"path.utf-8")
        if not isinstance(raw_path, list) or not raw_path:
            raw_path = entry.get(b"path")
        pad = "p" in attr
        if raw_path is None and pad:
            rel: tuple[str, ...] = (".pad", str(size))
        elif not isinstance(raw_path, list) or not raw_path:
            raise MetainfoError(f"{where}: 'path' must be a non-empty list")
        else:
            rel = tuple(path_component(part, where) for part in raw_path)
        out.append(RawFile(rel, size, attr, pad or rel[0] == ".pad"))
    return out


def v2_files(tree: Any) -> list[RawFile]:
    if not isinstance(tree, dict) or not tree:
        raise MetainfoError("'file tree' must be a non-empty dict")
    if b"" in tree:
        raise MetainfoError("the 'file tree' root must not be a file")
    out: list[RawFile] = []

    def walk(node: dict[bytes, Any], prefix: tuple[str, ...]) -> None:
        for key, child in node.items():
            path = (*prefix, path_component(key, "file tree"))
            where = "file tree " + "/".join(path)[:200]
            if not isinstance(child, dict) or not child:
                raise MetainfoError(f"{where}: must be a non-empty dict")
            if b"" not in child:
                walk(child, path)
                continue
            props = child[b""]
            if len(child) != 1 or not isinstance(props, dict):
                raise MetainfoError(f"{where}: a file entry must be alone in its dict and be a dict")
            size = file_length(props.get(b"length"), where)
            root = props.get(b"pieces root")
            if size == 0:
                root = None
            elif not isinstance(root, bytes) or len(root) != V2_HASH:
                raise MetainfoError(f"{where}: a non-empty file needs a 32-byte 'pieces root'")
            attr = file_attr(props.get(b"attr"))
            out.append(RawFile(path, size, attr, False, root))  # v2 has no pad files
            if len(out) > limits.MAX_TORRENT_FILES:
                raise MetainfoError(f"more than {limits.MAX_TORRENT_FILES} files")

    walk(tree, ())
    return out


def v2_offsets(files: Sequence[RawFile], piece_length: int) -> list[int]:
    offsets, pos = [], 0
    for f in files:
        offsets.append(pos)
        pos += -(-f.length // piece_length) * piece_length
    return offsets


def match_hybrid(v1: list[RawFile], v2: list[RawFile], piece_length: int) -> list[bytes | None]:
    """Check that a hybrid's v1 and v2 describe the same files at the same offsets; return v2 roots
    aligned with the v1 list (None for pad files)."""
    content = [i for i, f in enumerate(v1) if not f.pad]
    if len(content) != len(v2):
        raise MetainfoError(f"hybrid torrent: v1 lists {len(content)} files, v2 lists {len(v2)}")
    v1_offsets = [0]
    for f in v1:
        v1_offsets.append(v1_offsets[-1] + f.length)
    roots: list[bytes | None] = [None] * len(v1)
    for i, f2, offset2 in zip(content, v2, v2_offsets(v2, piece_length), strict=True):
        f1 = v1[i]
        if f1.rel != f2.rel or f1.length != f2.length:
            raise MetainfoError(
                f"hybrid torrent: v1 file {'/'.join(f1.rel)[:100]!r} ({f1.length} bytes) differs from v2 "
                f"file {'/'.join(f2.rel)[:100]!r} ({f2.length} bytes)"
            )
        if f1.length and v1_offsets[i] != offset2:
            raise MetainfoError(f"hybrid torrent: v1 file {'/'.join(f1.rel)[:100]!r} is not piece-aligned")
        roots[i] = f2.root
    return roots


def check_piece_layers(
    raw: Any, files: Sequence[FileEntry], piece_length: int, *, require: bool
) -> dict[bytes, bytes]:
    """Validate ``piece layers`` against the pieces roots of files larger than a piece (BEP 52)."""
    needed = [f for f in files if f.pieces_root is not None and f.length > piece_length]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise MetainfoError("'piece layers' must be a dict")
    out: dict[bytes, bytes] = {}
    for f in needed:
        assert f.pieces_root is not None
        blob = raw.get(f.pieces_root)
        if blob is None and not require:
            continue
        if not isinstance(blob, bytes):
            raise MetainfoError(f"'piece layers' lacks the layer of {f.display_path[:100]!r}")
        count = -(-f.length // piece_length)
        if len(blob) != count * V2_HASH:
            raise MetainfoError(
                f"piece layer of {f.display_path[:100]!r} has {len(blob)} bytes, {count} hashes need "
                f"{count * V2_HASH}"
            )
        if merkle.root_from_piece_layer(merkle.split_hashes(blob), piece_length) != f.pieces_root:
            raise MetainfoError(f"piece layer of {f.display_path[:100]!r} does not match its pieces root")
        out[f.pieces_root] = blob
    return out
