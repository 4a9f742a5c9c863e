"""Metainfo (BEP 3 / 52 / 47 / 12 / 19): cross-checked against libtorrent's torrents, byte literals for the
refusals, and hypothesis (arbitrary bytes, structure-aware values, mutated real torrents)."""

from __future__ import annotations

import functools
import hashlib
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pwatch import limits
from p2pwatch.errors import DecodeError, LocalProtocolError, MetainfoError
from p2pwatch.torrent import bencoding, merkle
from p2pwatch.torrent.magnet import parse_magnet
from p2pwatch.torrent.metainfo import FileEntry, Metainfo, TorrentVersion, parse_info, parse_torrent

C = lt.create_torrent
KINDS = {
    "v1": C.v1_only,
    "v1-pad": C.v1_only | C.canonical_files,
    "v2": C.v2_only,
    "hybrid": 0,
}
LAYOUTS: dict[str, list[tuple[str, int]]] = {
    "single": [("single.bin", 5 * 65536 + 123)],
    "multi": [
        ("a.bin", 40000),
        ("empty", 0),
        ("sub/b.bin", 200_000),
        ("sub/c/tiny", 10),
        ("z.bin", 3 * 16384),
    ],
}


@dataclass
class Built:
    data: bytes
    ti: Any
    contents: dict[str, bytes]  # display path -> bytes


def build(root: Path, layout: str, kind: str, piece_length: int, seed: int = 1) -> Built:
    rng = random.Random(seed)
    contents: dict[str, bytes] = {}
    if layout == "single":
        (name, size) = LAYOUTS[layout][0]
        blob = rng.randbytes(size)
        (root / name).write_bytes(blob)
        target, contents[name] = root / name, blob
    else:
        target = root / "pack"
        for rel, size in LAYOUTS[layout]:
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = rng.randbytes(size)
            path.write_bytes(blob)
            contents[f"pack/{rel}"] = blob
    ct = lt.create_torrent(lt.list_files(str(target)), piece_length, KINDS[kind])
    ct.add_tracker("http://tracker.example/announce", 0)
    lt.set_piece_hashes(ct, str(root))
    data = lt.bencode(ct.generate())
    return Built(data, lt.torrent_info(data), contents)


def lt_files(ti: Any) -> list[tuple[str, int, int, bool]]:
    fs = ti.layout()
    return [
        (fs.file_path(i), fs.file_size(i), fs.file_offset(i), bool(fs.file_flags(i) & fs.flag_pad_file))
        for i in range(fs.num_files())
    ]


def v1_stream(m: Metainfo, contents: dict[str, bytes]) -> bytes:
    return b"".join(bytes(f.length) if f.pad else contents[f.display_path] for f in m.files)


# --- libtorrent cross-checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("piece_length", [16384, 65536])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_agrees_with_libtorrent(tmp_path: Path, kind: str, layout: str, piece_length: int) -> None:
    built = build(tmp_path, layout, kind, piece_length)
    m = parse_torrent(built.data)
    ti, ih = built.ti, built.ti.info_hashes()

    assert m.version is {"v1": TorrentVersion.V1, "v1-pad": TorrentVersion.V1}.get(
        kind, TorrentVersion.V2 if kind == "v2" else TorrentVersion.HYBRID
    )
    assert m.infohash_v1 == (ih.v1.to_bytes() if ih.has_v1() else None)
    assert m.infohash_v2 == (ih.v2.to_bytes() if ih.has_v2() else None)
    assert m.infohash == (ih.v1.to_bytes() if ih.has_v1() else ih.v2.to_bytes()[:20])
    assert m.name == ti.name() or m.version is TorrentVersion.V2
    assert m.piece_length == piece_length
    assert m.torrent_bytes == built.data
    assert m.info_bytes == ti.info_section()
    assert m.trackers == (("http://tracker.example/announce",),)

    # files: libtorrent inserts pad files into v2-only torrents on its own; p2pwatch lists the real ones
    theirs = lt_files(ti)
    ours = [(f.display_path, f.length, f.offset, f.pad) for f in m.files]
    if kind == "v2":
        theirs = [t for t in theirs if not t[3]]
    assert ours == theirs
    assert [f.index for f in m.files] == list(range(len(m.files)))
    assert m.total_length == sum(len(b) for b in built.contents.values())
    assert (kind in ("v1-pad", "hybrid") and layout == "multi") == any(f.pad for f in m.files)

    # pieces
    assert m.num_pieces == ti.num_pieces()
    fs = ti.layout()
    for f in m.files:
        if f.length and not f.pad:
            lt_index = [t[0] for t in lt_files(ti)].index(f.display_path)
            first = ti.map_file(lt_index, 0, 1).piece
            last = ti.map_file(lt_index, f.length - 1, 1).piece
            assert m.file_pieces(f) == range(first, last + 1)

    # v2 hashes: pieces roots and layers equal libtorrent's and p2pwatch.torrent.merkle's from the data
    for f in m.files:
        blob = b"" if f.pad else built.contents[f.display_path]
        if kind.startswith("v1") or f.pad or not f.length:
            assert f.pieces_root is None
            continue
        leaves = merkle.block_hashes(blob)
        assert f.pieces_root == merkle.pieces_root(leaves)
        lt_index = [t[0] for t in lt_files(ti)].index(f.display_path)
        assert f.pieces_root == fs.root(lt_index).to_bytes()
        layer = merkle.piece_layer(leaves, piece_length)
        assert m.v2_piece_hashes(f) == tuple(layer)
        if f.length > piece_length:
            assert m.piece_layers[f.pieces_root] == b"".join(layer)
        else:
            assert f.pieces_root not in m.piece_layers

    # every piece verifies against the real data, and a corrupted copy does not
    if m.piece_hashes:
        stream = v1_stream(m, built.contents)
        assert len(stream) == sum(f.length for f in m.files)
        for i in range(m.num_pieces):
            piece = stream[i * piece_length : i * piece_length + m.piece_size(i)]
            assert m.piece_size(i) == ti.piece_size(i)
            assert m.verify_piece(i, piece)
            assert not m.verify_piece(i, bytes([piece[0] ^ 1]) + piece[1:])
            assert not m.verify_piece(i, piece + b"\0")
    for f in m.files:
        if f.pieces_root is None:
            continue
        blob = built.contents[f.display_path]
        for k in range(-(-f.length // piece_length)):
            part = blob[k * piece_length : (k + 1) * piece_length]
            assert m.verify_piece_v2(f, k, part)
            assert not m.verify_piece_v2(f, k, part[:-1] + bytes([part[-1] ^ 1]))
            if kind == "v2":
                assert m.piece_size(f.offset // piece_length + k) == len(part)
                assert m.verify_piece(f.offset // piece_length + k, part)

    # the magnet carries both hashes, and libtorrent reads them back
    params = lt.parse_magnet_uri(m.to_magnet())
    assert params.info_hashes == ih
    assert parse_magnet(m.to_magnet()).infohash == m.infohashes


@pytest.mark.parametrize("kind", ["v2", "hybrid"])
def test_bare_info_dict_has_no_piece_layers(tmp_path: Path, kind: str) -> None:
    built = build(tmp_path, "multi", kind, 16384)
    full = parse_torrent(built.data)
    bare = parse_info(built.ti.info_section(), trackers=[["http://t/a", "http://t/a", ""], [], ["udp://u:1"]])
    assert (bare.infohash_v1, bare.infohash_v2, bare.files) == (
        full.infohash_v1,
        full.infohash_v2,
        full.files,
    )
    assert bare.piece_layers == {} and bare.torrent_bytes is None
    assert bare.trackers == (("http://t/a",), ("udp://u:1",))
    big = next(f for f in bare.files if f.length > 16384)
    small = next(f for f in bare.files if 0 < f.length <= 16384 and not f.pad)
    assert bare.v2_piece_hashes(big) is None
    assert bare.v2_piece_hashes(small) == (small.pieces_root,)
    assert bare.verify_piece_v2(small, 0, built.contents[small.display_path])
    with pytest.raises(LocalProtocolError, match="piece layer is not known"):
        bare.verify_piece_v2(big, 0, built.contents[big.display_path][:16384])
    if kind == "hybrid":  # v1 hashes still check every piece
        stream = v1_stream(bare, built.contents)
        assert all(bare.verify_piece(i, stream[i * 16384 : (i + 1) * 16384]) for i in range(bare.num_pieces))
    restored = bare.with_piece_layers(dict(full.piece_layers))
    assert restored.piece_layers == full.piece_layers
    assert restored.verify_piece_v2(big, 1, built.contents[big.display_path][16384:32768])
    assert restored.files == full.files and restored.info_bytes == full.info_bytes
    assert hash(restored) == hash(full)
    assert big.pieces_root is not None
    bad = {big.pieces_root: bytes(32 * -(-big.length // 16384))}
    with pytest.raises(MetainfoError, match="does not match"):
        bare.with_piece_layers(bad)


def test_optional_fields_agree_with_libtorrent(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(random.Random(3).randbytes(50000))
    ct = lt.create_torrent(lt.list_files(str(tmp_path / "f.bin")), 16384, 0)
    for url, tier in [("http://a/ann", 0), ("udp://b:1/ann", 0), ("http://c/ann", 1), ("http://a/ann", 2)]:
        ct.add_tracker(url, tier)
    ct.add_url_seed("http://seed.example/")
    ct.set_comment("a comment ü")
    ct.set_creator("creator 1.0")
    ct.set_priv(True)
    lt.set_piece_hashes(ct, str(tmp_path))
    data = lt.bencode(ct.generate())
    m = parse_torrent(data)
    ti = lt.torrent_info(data)
    assert m.trackers == (("http://a/ann", "udp://b:1/ann"), ("http://c/ann",))
    params = lt.load_torrent_buffer(data)
    assert list(zip(params.trackers, params.tracker_tiers, strict=True))[:3] == [
        ("http://a/ann", 0),
        ("udp://b:1/ann", 0),
        ("http://c/ann", 1),
    ]
    assert m.url_list == ("http://seed.example/",)
    assert (m.comment, m.created_by, m.private) == ("a comment ü", "creator 1.0", True)
    assert m.creation_date == ti.creation_date()
    assert ti.priv()
    magnet = parse_magnet(m.to_magnet())
    assert magnet.trackers == ("http://a/ann", "udp://b:1/ann", "http://c/ann")
    assert magnet.web_seeds == ("http://seed.example/",) and magnet.display_name == "f.bin"


# --- byte literals -------------------------------------------------------------------------------------

HELLO = b"hello"
HELLO_SHA1 = hashlib.sha1(HELLO).digest()
HELLO_ROOT = hashlib.sha256(HELLO).digest()  # one leaf: the root is the leaf


def test_v1_literal() -> None:
    info = b"d6:lengthi5e4:name5:x.txt12:piece lengthi16384e6:pieces20:" + HELLO_SHA1 + b"e"
    data = b"d8:announce14:http://t/annou4:info" + info + b"e"
    m = parse_torrent(data)
    assert m.infohash_v1 == hashlib.sha1(info).digest() and m.infohash_v2 is None
    assert m.files == (FileEntry(0, ("x.txt",), 5, 0, False, "", None),)
    assert m.trackers == (("http://t/annou",),)
    assert (m.num_pieces, m.piece_size(0), m.piece_range(0, 5), m.piece_range(3, 0)) == (
        1,
        5,
        range(1),
        range(0),
    )
    assert m.verify_piece(0, HELLO) and not m.verify_piece(0, b"hellO")
    with pytest.raises(LocalProtocolError):
        m.piece_size(1)
    with pytest.raises(LocalProtocolError):
        m.piece_range(4, 2)
    with pytest.raises(LocalProtocolError):
        m.verify_piece_v2(m.files[0], 0, HELLO)
    assert m.v2_piece_hashes(m.files[0]) is None
    assert parse_info(info).infohash == m.infohash


def test_v2_literal() -> None:
    info = (
        b"d9:file treed5:x.txtd0:d6:lengthi5e11:pieces root32:" + HELLO_ROOT + b"eee"
        b"12:meta versioni2e4:name5:x.txt12:piece lengthi16384ee"
    )
    m = parse_torrent(b"d4:info" + info + b"12:piece layersdee")
    assert m.version is TorrentVersion.V2
    assert m.infohash_v2 == hashlib.sha256(info).digest() and m.infohash == m.infohash_v2[:20]
    assert m.files == (FileEntry(0, ("x.txt",), 5, 0, False, "", HELLO_ROOT),)
    assert m.verify_piece(0, HELLO) and m.verify_piece_v2(m.files[0], 0, HELLO)
    assert not m.verify_piece(0, b"hellO")


def test_hybrid_pieces_are_checked_both_ways() -> None:
    """An internally inconsistent hybrid (v1 hashes one content, v2 another) verifies nothing."""
    other_root = hashlib.sha256(b"HELLO").digest()
    m = parse_torrent(enc(hybrid_info(tree={b"x": leaf_file(5, other_root)})))
    assert m.version is TorrentVersion.HYBRID and not m.private
    assert not m.verify_piece(0, HELLO) and not m.verify_piece(0, b"HELLO")
    assert parse_torrent(enc(hybrid_info())).verify_piece(0, HELLO)


def test_v1_piece_length_need_not_be_a_power_of_two() -> None:
    m = parse_torrent(
        enc(
            v1_info(
                piece_length=3, length=5, pieces=hashlib.sha1(b"hel").digest() + hashlib.sha1(b"lo").digest()
            )
        )
    )
    assert (m.num_pieces, m.piece_size(1), m.piece_range(2, 2)) == (2, 2, range(0, 2))
    assert m.verify_piece(0, b"hel") and m.verify_piece(1, b"lo")


def test_infohash_is_over_the_bytes_as_received() -> None:
    # keys out of order: a decode/encode round trip would change the bytes and the hash
    info = b"d4:name1:x6:lengthi5e12:piece lengthi16384e6:pieces20:" + HELLO_SHA1 + b"e"
    m = parse_torrent(b"d4:info" + info + b"e")
    assert m.infohash_v1 == hashlib.sha1(info).digest()
    assert m.infohash_v1 != hashlib.sha1(bencoding.encode(bencoding.decode(info))).digest()


def v1_info(**changes: Any) -> dict[bytes, Any]:
    info: dict[bytes, Any] = {b"name": b"x", b"piece length": 16384, b"length": 5, b"pieces": HELLO_SHA1}
    for key, value in changes.items():
        k = key.replace("_", " ").encode()
        if value is None:
            info.pop(k, None)
        else:
            info[k] = value
    return info


def multi(*files: dict[bytes, Any], pieces: int = 1) -> dict[bytes, Any]:
    return v1_info(length=None, files=list(files), pieces=HELLO_SHA1 * pieces)


def v2_info(tree: Any = None, **changes: Any) -> dict[bytes, Any]:
    if tree is None:
        tree = {b"x": {b"": {b"length": 5, b"pieces root": HELLO_ROOT}}}
    info = v1_info(length=None, pieces=None, **changes)
    info.setdefault(b"meta version", 2)
    info[b"file tree"] = tree
    return {k: v for k, v in info.items() if v is not None}


def hybrid_info(tree: Any = None, **changes: Any) -> dict[bytes, Any]:
    return {**v2_info(tree), b"pieces": HELLO_SHA1, b"length": 5, **v1_info(**changes)}


def enc(info: dict[bytes, Any], **top: Any) -> bytes:
    info = {k: v for k, v in info.items() if v is not None}
    return bencoding.encode({b"info": info, **{k.replace("_", " ").encode(): v for k, v in top.items()}})


def file(length: Any, *path: bytes, **extra: bytes) -> dict[bytes, Any]:
    return {b"length": length, b"path": list(path), **{k.encode(): v for k, v in extra.items()}}


def leaf_file(length: int = 5, root: bytes = HELLO_ROOT) -> dict[bytes, Any]:
    return {b"": {b"length": length, b"pieces root": root}}


REFUSED: list[tuple[str, bytes, str]] = [
    ("not a dict", b"li1ee", "must be a bencoded dict"),
    ("no info", bencoding.encode({b"announce": b"x"}), "no 'info' dict"),
    ("info not a dict", bencoding.encode({b"info": b"x"}), "no 'info' dict"),
    ("no piece length", enc(v1_info(piece_length=None)), "piece length"),
    ("piece length 0", enc(v1_info(piece_length=0)), "piece length"),
    ("piece length negative", enc(v1_info(piece_length=-16384)), "piece length"),
    ("piece length text", enc(v1_info(piece_length=b"16384")), "piece length"),
    ("piece length huge", enc(v1_info(piece_length=1 << 40)), "piece length"),
    ("v2 piece length odd", enc(v2_info(piece_length=3 * 16384)), "power of two"),
    ("v2 piece length small", enc(v2_info(piece_length=8192)), "power of two"),
    ("pieces not /20", enc(v1_info(pieces=HELLO_SHA1 + b"x")), "multiple of 20"),
    ("pieces too many", enc(v1_info(pieces=HELLO_SHA1 * 2)), "2 hashes, 5 bytes need 1"),
    ("pieces too few", enc(v1_info(length=20000)), "1 hashes, 20000 bytes need 2"),
    ("pieces not a string", enc(v1_info(pieces=[HELLO_SHA1])), "multiple of 20"),
    ("negative length", enc(v1_info(length=-5)), "non-negative"),
    ("length text", enc(v1_info(length=b"5")), "non-negative"),
    ("no data", enc(v1_info(length=0, pieces=b"")), "no data"),
    ("length and files", enc(v1_info(files=[file(5, b"a")])), "both 'length'"),
    ("neither length nor files", enc(v1_info(length=None)), "neither 'length' nor 'files'"),
    ("files empty", enc(multi()), "non-empty list"),
    ("files not dicts", enc(multi(b"x")), "must be a dict"),  # type: ignore[arg-type]
    ("file negative", enc(multi(file(-1, b"a"), file(6, b"b"))), "non-negative"),
    ("path empty list", enc(multi(file(5))), "non-empty list"),
    ("path component empty", enc(multi(file(5, b""))), "unsafe path component"),
    ("path component dot", enc(multi(file(5, b"."))), "unsafe path component"),
    ("path traversal", enc(multi(file(5, b"..", b"etc"))), "unsafe path component '..'"),
    ("path with slash", enc(multi(file(5, b"a/../../b"))), "unsafe path component"),
    ("path with NUL", enc(multi(file(5, b"a\0b"))), "unsafe path component"),
    ("path not strings", enc(multi(file(5, 3))), "must be a string"),  # type: ignore[arg-type]
    ("name traversal", enc(v1_info(name=b"..")), "unsafe path component"),
    ("no name", enc(v1_info(name=None)), "no 'name'"),
    ("no hashes at all", enc(v1_info(pieces=None)), "neither v1 'pieces' nor v2"),
    ("meta version 3", enc(v2_info(meta_version=3)), "unsupported 'meta version' 3"),
    ("meta version text", enc(v2_info(meta_version=b"2")), "unsupported 'meta version'"),
    ("tree missing", enc(v2_info(tree=b"")), "'file tree' must be a non-empty dict"),
    ("tree empty", enc(v2_info(tree={})), "'file tree' must be a non-empty dict"),
    ("tree root is a file", enc(v2_info(tree=leaf_file())), "root must not be a file"),
    ("tree file with sibling", enc(v2_info(tree={b"x": {**leaf_file(), b"y": leaf_file()}})), "alone"),
    ("tree props not dict", enc(v2_info(tree={b"x": {b"": b"5"}})), "alone in its dict and be a dict"),
    ("tree empty dir", enc(v2_info(tree={b"x": leaf_file(), b"d": {}})), "non-empty dict"),
    ("tree node not dict", enc(v2_info(tree={b"x": 5})), "non-empty dict"),
    ("tree no length", enc(v2_info(tree={b"x": {b"": {b"pieces root": HELLO_ROOT}}})), "non-negative"),
    ("tree no root", enc(v2_info(tree={b"x": {b"": {b"length": 5}}})), "32-byte 'pieces root'"),
    ("tree short root", enc(v2_info(tree={b"x": leaf_file(5, HELLO_ROOT[:31])})), "32-byte"),
    ("tree traversal", enc(v2_info(tree={b"..": {b"x": leaf_file()}})), "unsafe path component '..'"),
    ("tree only empty", enc(v2_info(tree={b"x": {b"": {b"length": 0}}})), "no data"),
    ("hybrid other name", enc(hybrid_info(name=b"y")), "differs"),
    ("hybrid other length", enc(hybrid_info(tree={b"x": leaf_file(6)}, length=5)), "differs"),
    (
        "hybrid unaligned",
        enc(
            {
                **v2_info(tree={b"a": leaf_file(), b"b": leaf_file()}),
                b"file tree": {b"a": leaf_file(), b"b": leaf_file(16384)},
                b"files": [file(5, b"a"), file(16384, b"b")],
                b"pieces": HELLO_SHA1 * 2,
            }
        ),
        "not piece-aligned",
    ),
    (
        "hybrid file count",
        enc(
            {
                **v2_info(tree={b"a": leaf_file(16389)}),
                b"files": [file(5, b"a"), file(16379, b".pad", b"16379", attr=b"p"), file(5, b"b")],
                b"pieces": HELLO_SHA1 * 2,
            }
        ),
        "v1 lists 2 files, v2 lists 1",
    ),
    (
        "hybrid piece count",
        enc(
            {
                **v2_info(tree={b"a": leaf_file(), b"b": leaf_file()}),
                b"files": [file(5, b"a"), file(32763, b".pad", b"32763", attr=b"p"), file(5, b"b")],
                b"pieces": HELLO_SHA1 * 3,
            }
        ),
        "v1 has 3 pieces, v2 has 2",
    ),
]


@pytest.mark.parametrize(("data", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused(data: bytes, message: str) -> None:
    with pytest.raises(MetainfoError, match=message.replace("(", r"\(").replace("'", "'")):
        parse_torrent(data)


def test_refused_garbage_is_a_decode_error() -> None:
    for data in (b"", b"d4:info", b"d4:infod4:name1:xee trailing", b"i-0e"):
        with pytest.raises(DecodeError):
            parse_torrent(data)
    with pytest.raises(MetainfoError):
        parse_torrent("d4:infodee")  # type: ignore[arg-type]


def _big_blob_torrent(length: int) -> tuple[bytes, bytes]:
    blob = random.Random(length).randbytes(length)
    leaves = merkle.block_hashes(blob)
    root = merkle.pieces_root(leaves)
    info = v2_info(tree={b"x": leaf_file(length, root)})
    return enc(info, piece_layers={root: b"".join(merkle.piece_layer(leaves, 16384))}), root


def test_piece_layers_are_checked() -> None:
    good, root = _big_blob_torrent(50000)
    m = parse_torrent(good)
    assert m.piece_layers[root] == bencoding.decode(good)[b"piece layers"][root]
    info = bencoding.decode(good)[b"info"]
    layer = m.piece_layers[root]
    cases = {
        "lacks the layer": {},
        "has 96 bytes, 4 hashes need 128": {root: layer[:96]},
        "does not match": {root: layer[:32] + bytes(32) + layer[64:]},
        "must be a dict": [layer],
    }
    for message, value in cases.items():
        with pytest.raises(MetainfoError, match=message):
            parse_torrent(enc(info, piece_layers=value))
    with pytest.raises(MetainfoError, match="lacks the layer"):
        parse_torrent(enc(info))


def test_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    three = enc(multi(file(1, b"a"), file(2, b"b"), file(2, b"c")))
    assert len(parse_torrent(three).files) == 3
    tree = v2_info(tree={b"a": leaf_file(), b"b": leaf_file(), b"c": leaf_file()})
    monkeypatch.setattr(limits, "MAX_TORRENT_FILES", 2)
    with pytest.raises(MetainfoError, match="exceed the limit of 2"):
        parse_torrent(three)
    with pytest.raises(MetainfoError, match="more than 2 files"):
        parse_torrent(enc(tree))
    monkeypatch.setattr(limits, "MAX_METADATA_SIZE", 50)
    with pytest.raises(MetainfoError, match="exceeds 50"):
        parse_torrent(three)
    with pytest.raises(MetainfoError, match="exceeds 50"):
        parse_info(bencoding.encode(bencoding.decode(three)[b"info"]))
    monkeypatch.setattr(limits, "MAX_METADATA_SIZE", 1000)
    monkeypatch.setattr(limits, "MAX_TORRENT_PIECES", 1)
    with pytest.raises(MetainfoError, match="2 pieces exceed the limit of 1"):
        parse_info(bencoding.encode(v2_info(tree={b"a": leaf_file(), b"b": leaf_file()})))


def test_text_fields_utf8_first_then_latin1() -> None:
    info = multi(
        {b"length": 3, b"path": [b"caf\xe9"]},
        {b"length": 2, b"path": [b"wrong"], b"path.utf-8": [b"caf\xc3\xa9 2"]},
        {b"length": 0, b"path": [b"\xff\xfe"]},
    )
    info[b"name"], info[b"name.utf-8"] = b"n\xe4me", b"n\xc3\xa4me"
    m = parse_torrent(enc(info, comment=b"\xff", announce=b" http://t/ "))
    assert m.name == "näme"
    assert [f.display_path for f in m.files] == ["näme/café", "näme/café 2", "näme/ÿþ"]
    assert m.comment == "ÿ" and m.trackers == (("http://t/",),)
    assert parse_torrent(enc(v1_info(name=b"\xc3\xa9"))).name == "é"


def test_pad_files_and_junk_outside_info() -> None:
    info = multi(
        file(5, b"a"),
        {b"length": 16379, b"attr": b"p"},  # BEP 47: a pad file need not have a path
        file(3, b".pad", b"3"),
        file(0, b"link", attr=b"l"),
        {b"path": [b"link2"], b"attr": b"lx"},  # symlinks may omit their length
        pieces=2,
    )
    info[b"length"] = None
    info = {k: v for k, v in info.items() if v is not None}
    m = parse_torrent(
        enc(
            info,
            **{
                "announce-list": [[b"http://a/", 5], b"http://b/", [], [b"http://a/"]],
                "url-list": b"http://w/",
            },
        )
    )
    assert [(f.path, f.pad, f.attr) for f in m.files] == [
        (("x", "a"), False, ""),
        (("x", ".pad", "16379"), True, "p"),
        (("x", ".pad", "3"), True, ""),
        (("x", "link"), False, "l"),
        (("x", "link2"), False, "lx"),
    ]
    assert m.total_length == 5 and m.num_pieces == 2 and m.piece_size(1) == 3
    assert m.trackers == (("http://a/",), ("http://b/",)) and m.url_list == ("http://w/",)
    assert m.file_pieces(m.files[0]) == range(1) and m.file_pieces(m.files[3]) == range(2, 2)


def test_v2_virtual_stream() -> None:
    tree = {b"a": leaf_file(), b"d": {b"e": {b"": {b"length": 0}}, b"f": leaf_file()}}
    m = parse_torrent(enc(v2_info(tree=tree, piece_length=32768)))
    assert [(f.display_path, f.offset) for f in m.files] == [("x/a", 0), ("x/d/e", 32768), ("x/d/f", 32768)]
    assert m.num_pieces == 2 and [m.piece_size(i) for i in range(2)] == [5, 5]
    assert m.file_pieces(m.files[2]) == range(1, 2)
    assert m.verify_piece(1, HELLO) and not m.verify_piece(1, HELLO + bytes(32763))
    stranger = FileEntry(9, ("y",), 5, 0, False, "", HELLO_ROOT)
    with pytest.raises(LocalProtocolError, match="not a file of this torrent"):
        m.verify_piece_v2(stranger, 0, HELLO)
    with pytest.raises(LocalProtocolError, match="out of range"):
        m.verify_piece_v2(m.files[0], 1, HELLO)


# --- hypothesis ----------------------------------------------------------------------------------------

_KEYS = [
    b"info", b"name", b"piece length", b"length", b"files", b"path", b"pieces", b"file tree", b"",
    b"meta version", b"pieces root", b"attr", b"piece layers", b"announce-list", b"name.utf-8",
    b"path.utf-8", b"url-list", b"a", b"..",
]  # fmt: skip
_ints = st.sampled_from([0, 1, 2, 5, -1, 16384, 32768, 1 << 40]) | st.integers()
_strings = st.sampled_from([b"", b"x", b"..", b"a/b", HELLO_SHA1, HELLO_ROOT, b"p", b"\xff"]) | st.binary(
    max_size=40
)
_values = st.recursive(
    _ints | _strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5),
    max_leaves=25,
)


def exercise(m: Metainfo) -> None:
    """A parsed torrent must be usable without surprises."""
    assert m.num_pieces >= 1 and m.total_length >= 0
    assert 0 < m.piece_size(0) <= m.piece_length and m.piece_size(m.num_pieces - 1) > 0
    for f in m.files[:50]:
        assert isinstance(m.file_pieces(f), range)
        hashes = m.v2_piece_hashes(f)
        assert hashes is None or all(len(h) == 32 for h in hashes)
    assert m.verify_piece(0, b"") is False
    assert parse_magnet(m.to_magnet()).infohash == m.infohashes


def check(call: Callable[[], Metainfo]) -> None:
    try:
        m = call()
    except (MetainfoError, DecodeError):
        return
    exercise(m)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    check(lambda: parse_torrent(data))
    check(lambda: parse_info(data))
    check(lambda: parse_torrent(b"d4:info" + data + b"e"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values, st.sampled_from([v1_info(), multi(file(5, b"a")), v2_info(), hybrid_info()]), st.data())
def test_structured_values(value: Any, base: dict[bytes, Any], data: st.DataObject) -> None:
    info = dict(base)
    info[data.draw(st.sampled_from(_KEYS))] = value
    check(lambda: parse_torrent(enc(info)))
    check(lambda: parse_info(bencoding.encode(value)))


@functools.lru_cache(maxsize=1)
def seeds() -> tuple[bytes, ...]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, layout) in enumerate(
            [
                ("v1", "single"),
                ("v1-pad", "multi"),
                ("v2", "multi"),
                ("hybrid", "multi"),
                ("hybrid", "single"),
            ]
        ):
            root = Path(tmp) / str(i)
            root.mkdir()
            out.append(build(root, layout, kind, 65536, seed=i).data)
    return tuple(out)


def _mutate_tree(value: Any, data: st.DataObject, depth: int = 0) -> Any:
    """Replace one node somewhere along a random path in a decoded torrent."""
    if depth > 8 or not isinstance(value, dict | list) or not value or data.draw(st.integers(0, 4)) == 0:
        return data.draw(_values)
    if isinstance(value, list):
        i = data.draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate_tree(value[i], data, depth + 1), *value[i + 1 :]]
    key = data.draw(st.sampled_from(sorted(value)))
    return {**value, key: _mutate_tree(value[key], data, depth + 1)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 4), st.data())
def test_mutated_real_torrents(which: int, data: st.DataObject) -> None:
    original = seeds()[which]
    decoded = bencoding.decode(original)
    check(lambda: parse_torrent(bencoding.encode(_mutate_tree(decoded, data))))
    blob = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        op = data.draw(st.integers(0, 2))
        if op == 0:
            blob[pos] = data.draw(st.integers(0, 255))
        elif op == 1:
            del blob[pos : pos + data.draw(st.integers(1, 40))]
        else:
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    check(lambda: parse_torrent(bytes(blob)))


def test_seeds_parse() -> None:
    for seed in seeds():
        exercise(parse_torrent(seed))
