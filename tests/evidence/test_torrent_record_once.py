"""evidence.torrent_record decodes a torrent's bytes once (branch cleanup-a), with the same results as before.

bundle_form used to decode the stored metainfo to choose its form, and the writer then parsed the chosen
bytes, decoding them again; check_record parsed a .torrent and decoded it a second time to see what else it
holds; decode_with_span walked the top-level dict (decoding each value) and then decoded the whole again.
The earlier implementations are kept here, in terms of the public functions, as the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evidence.torrent
from evidence import bdecode
from evidence.torrent import TorrentError, parse_info_dict, parse_torrent
from evidence.torrent_record import INFO_DICT, TORRENT, bundle_form, check_record, describe, layer_summary
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.metainfo import parse_info
from p2pwatch.torrent.metainfo import parse_torrent as p2p_parse
from tests.torrent.test_metainfo import build


def reference_bundle_form(stored: bytes) -> tuple[str, bytes, Any]:
    """bundle_form and the writer's parse before branch cleanup-a."""
    top, span = bdecode.decode_with_span(stored, b"info")
    if isinstance(top, dict) and span is not None and set(top) == {b"info"}:
        data = stored[span[0] : span[1]]
        return INFO_DICT, data, parse_info_dict(data)
    return TORRENT, stored, parse_torrent(stored)


def reference_check(record: dict[str, Any], data: bytes) -> tuple[str, Any, str]:
    """check_record before branch cleanup-a (the parts that depend on the decode)."""
    kind = record["metainfo"]
    torrent = parse_info_dict(data) if kind == INFO_DICT else parse_torrent(data)
    only_layers = kind == TORRENT and set(bdecode.decode(data)) <= {b"info", b"piece layers"}
    return record["infohash"], torrent, describe(kind, torrent, only_layers=only_layers)


def stored_forms(tmp_path: Path) -> list[bytes]:
    """What a centre stores, for generated v1, v2 and hybrid torrents: the .torrent, the bare info dict
    (wrapped), the info dict with its piece layers only, and a .torrent with one layer missing."""
    forms = []
    for kind in ("v1", "v2", "hybrid"):
        built = build(tmp_path / kind, "multi", kind, 16384) if (tmp_path / kind).mkdir() is None else None
        assert built is not None
        full = p2p_parse(built.data)
        bare = parse_info(full.info_bytes)
        forms += [built.data, bare.stored_bytes()]
        if full.piece_layers:
            forms.append(bare.with_piece_layers(full.piece_layers).stored_bytes())
            root, layer = next(iter(full.piece_layers.items()))
            forms.append(bare.with_piece_layers({root: layer}).stored_bytes())
    return forms


def record_for(kind: str, torrent: Any) -> dict[str, Any]:
    return {"infohash": (torrent.infohash_v1 or torrent.infohash_v2).hex(), "metainfo": kind,
            "file": "torrents/x" + (".info" if kind == INFO_DICT else ".torrent"),
            "infohash_v1": torrent.infohash_v1.hex() if torrent.infohash_v1 else None,
            "infohash_v2": torrent.infohash_v2.hex() if torrent.infohash_v2 else None,
            "piece_layers": layer_summary(torrent)}


class Counting:
    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.real(*args)


def test_bundle_form_and_check_record_give_what_they_gave(tmp_path: Path) -> None:
    forms = stored_forms(tmp_path)
    kinds = set()
    for stored in forms:
        kind, data, torrent = bundle_form(stored)
        assert (kind, data, torrent) == reference_bundle_form(stored)
        kinds.add(kind)
        record = record_for(kind, torrent)
        assert check_record(record, data) == reference_check(record, data)
    assert kinds == {INFO_DICT, TORRENT}


def test_each_is_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forms = stored_forms(tmp_path)
    results = [bundle_form(stored) for stored in forms]
    with_span = Counting(bdecode.decode_with_span)
    whole = Counting(bdecode.decode)
    monkeypatch.setattr(evidence.torrent, "decode_with_span", with_span)
    monkeypatch.setattr(evidence.torrent, "decode", whole)
    for stored, (kind, data, torrent) in zip(forms, results, strict=True):
        before = with_span.calls + whole.calls
        assert bundle_form(stored)[2] == torrent
        assert with_span.calls + whole.calls == before + 1
        check_record(record_for(kind, torrent), data)
        assert with_span.calls + whole.calls == before + 2


def test_errors_are_unchanged(tmp_path: Path) -> None:
    built = build(tmp_path, "multi", "hybrid", 16384)
    info = p2p_parse(built.data).info_bytes
    for stored, message in [
        (built.data[:-1], "not strict bencoding: unterminated dictionary"),
        (built.data + b"x", "not strict bencoding: 1 bytes follow"),
        (b"d4:infoi1ee", "an info dict must be a dict with 'piece length'"),
        (b"d1:ai1e4:infoi1ee", "a .torrent must be a dict with an 'info' dict"),
        (b"d1:zi1e4:info" + info + b"e", "not strict bencoding: top-level dictionary keys unsorted"),
        (b"d4:info" + info[:-1] + b"1:xe", "not strict bencoding"),
    ]:
        with pytest.raises(TorrentError, match=message):
            bundle_form(stored)
        with pytest.raises(TorrentError, match=message):
            reference_bundle_form_checked(stored)


def reference_bundle_form_checked(stored: bytes) -> Any:
    try:
        return reference_bundle_form(stored)
    except bdecode.BencodeError as exc:
        raise TorrentError(f"not strict bencoding: {exc}") from exc


values = st.recursive(
    st.integers(-(10**6), 10**6) | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.sampled_from([b"info", b"a", b"piece layers", b"zz"]), values, max_size=4),
       cut=st.integers(0, 400), junk=st.binary(max_size=3))
def test_decode_with_span_agrees_with_a_whole_decode(value: dict[bytes, Any], cut: int, junk: bytes) -> None:
    data = bencoding.encode(value)
    for blob in (data, data[:cut] + junk):
        try:
            expected = bdecode.decode(blob)
        except bdecode.BencodeError:
            with pytest.raises(bdecode.BencodeError):
                bdecode.decode_with_span(blob, b"info")
            continue
        got, span = bdecode.decode_with_span(blob, b"info")
        assert got == expected
        if isinstance(got, dict) and b"info" in got:
            assert span is not None and bdecode.decode(blob[span[0] : span[1]]) == got[b"info"]
            assert blob[span[0] : span[1]] == bencoding.encode(got[b"info"])
        else:
            assert span is None
