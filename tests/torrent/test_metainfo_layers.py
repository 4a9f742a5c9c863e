"""Metainfo.with_piece_layers (BEP 52 piece layers added to a .torrent) decodes nothing again (branch cleanup-a).

The .torrent is decoded once by parse_torrent; its info dict is not decoded a second time, and adding
layers re-encodes the decoded dict kept from that parse. The bytes produced are those of the earlier
implementation, which decoded ``torrent_bytes`` again (kept here as the reference), and, for a torrent whose
layers were stripped, exactly the libtorrent-made original once every layer is back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from p2pwatch import limits
from p2pwatch.errors import LocalProtocolError
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.metainfo import parse_torrent
from tests.torrent.test_metainfo import build


def reference_with_layers(torrent: bytes, info_bytes: bytes, layers: dict[bytes, bytes]) -> bytes:
    """The implementation before branch cleanup-a: decode ``torrent`` again, replace its layers, encode."""
    top = bencoding.decode(torrent, max_size=limits.MAX_TORRENT_FILE)
    top[b"piece layers"] = layers
    out = [b"d"]
    for key in sorted(top):
        out.append(bencoding.encode(key))
        out.append(info_bytes if key == b"info" else bencoding.encode(top[key]))
    return b"".join(out) + b"e"


def without_layers(data: bytes, extra: dict[bytes, Any]) -> bytes:
    """``data`` with no ``piece layers`` and the keys of ``extra`` added, the info dict's bytes untouched."""
    top = bencoding.decode(data)
    info = bencoding.raw_dict_value(data, b"info")
    assert info is not None
    top.pop(b"piece layers")
    top.update(extra)
    out = [b"d"]
    for key in sorted(top):
        out += [bencoding.encode(key), info if key == b"info" else bencoding.encode(top[key])]
    return b"".join(out) + b"e"


class CountingDecode:
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.real = bencoding.decode

    def __call__(self, data: bytes, **kwargs: Any) -> Any:
        self.calls.append(len(data))
        return self.real(data, **kwargs)


@pytest.mark.parametrize("extra", [{}, {b"comment": b"kept", b"x-unknown": [1, {b"a": b"b"}], b"zz": 7}])
@pytest.mark.parametrize("kind", ["v2", "hybrid"])
def test_layers_added_one_by_one_give_the_old_bytes(tmp_path: Path, kind: str, extra: dict[bytes, Any]) -> None:
    built = build(tmp_path, "multi", kind, 16384)
    full = parse_torrent(built.data)
    layers = dict(full.piece_layers)
    assert len(layers) >= 2  # a.bin and sub/b.bin are larger than a piece
    stripped = without_layers(built.data, extra)
    meta = parse_torrent(stripped, require_layers=False)
    assert meta.piece_layers == {} and meta.torrent_bytes == stripped
    expected, merged = stripped, {}
    for root, layer in sorted(layers.items()):
        meta = meta.with_piece_layers({root: layer})
        merged[root] = layer
        expected = reference_with_layers(expected, full.info_bytes, dict(merged))
        assert meta.torrent_bytes == expected
        again = parse_torrent(meta.torrent_bytes, require_layers=False)
        assert again.piece_layers == merged and again.info_bytes == full.info_bytes
        assert dict(again.torrent_top or {}) == dict(meta.torrent_top or {})
    assert meta.with_piece_layers(layers) is meta  # nothing new: the same object
    if not extra:
        assert meta.torrent_bytes == built.data  # libtorrent's own .torrent, byte for byte


def test_bytes_are_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = build(tmp_path, "multi", "hybrid", 16384)
    full = parse_torrent(built.data)
    stripped = without_layers(built.data, {})
    counting = CountingDecode()
    monkeypatch.setattr(bencoding, "decode", counting)
    meta = parse_torrent(stripped, require_layers=False)
    assert counting.calls == [len(stripped)]  # the .torrent once; its info dict not again
    restored = meta.with_piece_layers(dict(full.piece_layers))
    assert counting.calls == [len(stripped)]  # adding layers decodes nothing
    assert restored.torrent_bytes == built.data
    assert restored.info == full.info and restored.files == full.files


def test_torrent_bytes_without_their_decoded_dict_is_refused(tmp_path: Path) -> None:
    built = build(tmp_path, "multi", "v2", 16384)
    full = parse_torrent(built.data)
    meta = dataclasses.replace(parse_torrent(without_layers(built.data, {}), require_layers=False), torrent_top=None)
    with pytest.raises(LocalProtocolError, match="parse_torrent"):
        meta.with_piece_layers(dict(full.piece_layers))
