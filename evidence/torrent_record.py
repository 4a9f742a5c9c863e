"""What a bundle's ``torrents/`` file holds, and whether bundle.json says so (SPEC.md sections 4, 5, 9).

A torrent found on the network arrives as its info dict alone (BEP 9 metadata exchange); the v2 ``piece
layers`` live outside the info dict (BEP 52), so such a torrent has none unless they were fetched from peers
later. A bundle keeps exactly what the centre holds:

* ``"metainfo": "info-dict"``: ``torrents/<infohash>.info`` is the bencoded info dict, byte for byte as
  received; its SHA-1 is the v1 infohash and its SHA-256 the v2 one (``sha1sum`` / ``sha256sum`` check it);
* ``"metainfo": "torrent"``: ``torrents/<infohash>.torrent`` is a .torrent (given to the centre, or the info
  dict with the piece layers fetched from peers, each checked against its file's pieces root).

``piece_layers`` lists, by file path, the v2 files larger than a piece whose layer the file holds
(``present``) and does not hold (``missing``). A missing layer only means the v2 hashes of those files'
pieces cannot be re-computed from the bundle; a proof that needs one fails, and none else does.
"""

from __future__ import annotations

from typing import Any

from evidence.torrent import (
    Torrent,
    TorrentError,
    decode_strict,
    info_dict_from_decoded,
    parse_info_dict,
    parse_torrent,
    torrent_from_decoded,
)

INFO_DICT = "info-dict"
TORRENT = "torrent"
EXTENSIONS = {INFO_DICT: ".info", TORRENT: ".torrent"}


def bundle_form(stored: bytes) -> tuple[str, bytes, Torrent]:
    """(kind, bytes to write, their torrent) for metainfo as a centre stores it: a dict holding nothing but
    ``info`` (the info dict of a BEP 9 fetch, wrapped) is written as the info dict alone; anything else as
    given. ``stored`` is decoded once; the torrent is parsed from that decoded value."""
    top, span = decode_strict(stored)
    if isinstance(top, dict) and span is not None and set(top) == {b"info"}:
        data = stored[span[0] : span[1]]
        return INFO_DICT, data, info_dict_from_decoded(data, top[b"info"])
    return TORRENT, stored, torrent_from_decoded(stored, top, span)


def parse_metainfo(kind: str, data: bytes) -> Torrent:
    if kind == INFO_DICT:
        return parse_info_dict(data)
    if kind == TORRENT:
        return parse_torrent(data)
    raise TorrentError(f"unknown metainfo kind {str(kind)[:40]!r} (expected {INFO_DICT!r} or {TORRENT!r})")


def layer_summary(torrent: Torrent) -> dict[str, list[str]]:
    """The ``piece_layers`` of bundle.json: file paths whose piece layer is present / missing."""
    missing = {f.index for f in torrent.missing_layers}
    return {"present": [f.display_path for f in torrent.layer_files if f.index not in missing],
            "missing": [f.display_path for f in torrent.layer_files if f.index in missing]}


def describe(kind: str, torrent: Torrent, *, only_layers: bool = False) -> str:
    """One line on what the metainfo holds and what it does not (``only_layers``: a .torrent holding nothing
    but the info dict and piece layers, as the centre writes it when it fetched the layers from peers)."""
    layers = layer_summary(torrent)
    if kind == INFO_DICT:
        what = "the info dict alone (as received from peers, BEP 9; no .torrent file)"
    elif only_layers:
        what = "the info dict and piece layers only (the layers as fetched from peers, BEP 52, or given)"
    else:
        what = "a .torrent file"
    if not torrent.infohash_v2:
        return f"{what}; v1 SHA-1 piece hashes of every piece"
    if not torrent.layer_files:
        return f"{what}; every v2 file fits in one piece, its pieces root is its piece hash"
    present, missing = len(layers["present"]), len(layers["missing"])
    text = f"{what}; v2 piece layers present for {present} of {present + missing} files larger than a piece"
    if missing:
        text += (f"; missing for {', '.join(repr(p[:60]) for p in layers['missing'][:3])}"
                 f"{' …' if missing > 3 else ''} (their v2 piece hashes are not in this bundle"
                 + ("; the v1 SHA-1 piece hashes are)" if torrent.piece_hashes else ")"))
    return text


def check_record(record: Any, data: bytes) -> tuple[str, Torrent, str]:
    """Check one bundle.json torrent record against its file: (key, torrent, description).

    The record's ``metainfo`` (absent in older bundles: ``torrent``) must be what the file is, its
    infohashes what the info dict hashes to, and its ``piece_layers`` (when given) what the file holds."""
    if not isinstance(record, dict):
        raise TorrentError("a torrent record is not an object")
    kind = record.get("metainfo", TORRENT)
    name = str(record.get("file"))
    if kind not in EXTENSIONS or not name.endswith(EXTENSIONS[kind]):
        raise TorrentError(f"{name}: metainfo {str(kind)[:40]!r} but the file is named for another kind")
    if kind == INFO_DICT:
        torrent, only_layers = parse_info_dict(data), False
    else:  # decoded once: the parse and the question of what else the .torrent holds share the value
        top, span = decode_strict(data)
        torrent = torrent_from_decoded(data, top, span)
        only_layers = set(top) <= {b"info", b"piece layers"}
    key = str(record.get("infohash", "")).lower()
    if key not in torrent.ids() or len(key) not in (40, 64):
        raise TorrentError(f"{name}: its info dict hashes to {sorted(torrent.ids())}, not {key}")
    for field, value in (("infohash_v1", torrent.infohash_v1), ("infohash_v2", torrent.infohash_v2)):
        if record.get(field) != (value.hex() if value else None):
            raise TorrentError(f"{name}: {field} differs from the metainfo's")
    if "piece_layers" in record and record["piece_layers"] != layer_summary(torrent):
        raise TorrentError(f"{name}: bundle.json's piece_layers differ from the layers the file holds")
    return key, torrent, describe(kind, torrent, only_layers=only_layers)
