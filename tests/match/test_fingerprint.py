"""Fingerprints: hashes equal hashlib, merkle and libtorrent's own torrents; the file format round-trips,
holds no content and refuses what is not a fingerprint; hash lists import; the CLI writes both layouts."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import random
import zlib
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pwatch.cli import main
from p2pwatch.errors import FingerprintError, LocalProtocolError
from p2pwatch.match.fingerprint import (
    FORMAT_VERSION,
    V1_PIECE_LENGTHS,
    Fingerprint,
    fingerprint_file,
    hash_stream,
    import_hash_list,
    load_fingerprints,
)
from p2pwatch.match.media import ContentKind
from p2pwatch.testswarm.media import have_ffmpeg, make_video
from p2pwatch.torrent import bencoding, merkle
from tests.conftest import require_component

K = 16384


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 31 + seed).randbytes(size)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("size", [1, 100, K - 1, K, K + 1, 3 * K + 5, 64 * K, 1024 * K + 3, 33 * 1024 * 1024 + 12345])
def test_hashes_equal_hashlib_and_merkle(tmp_path: Path, size: int) -> None:
    data = blob(size)
    fp = fingerprint_file(write(tmp_path, "f.bin", data), media=False)
    assert fp.size == size
    assert fp.md5 == hashlib.md5(data).hexdigest()
    assert fp.sha1 == hashlib.sha1(data).hexdigest()
    assert fp.sha256 == fp.fingerprint_id == hashlib.sha256(data).hexdigest()
    leaves = merkle.block_hashes(data)
    assert fp.leaf_hashes == b"".join(leaves)
    assert fp.pieces_root() == merkle.pieces_root(leaves)
    assert fp.piece_layer(65536) == merkle.piece_layer(leaves, 65536)
    for length in (*V1_PIECE_LENGTHS, 1 << 25):
        if length in fp.v1_piece_tables or length >= size:
            expected = [hashlib.sha1(data[i : i + length]).digest() for i in range(0, size, length)]
            assert fp.v1_pieces(length) == expected, length
    # tables up to the first piece length holding the whole file; longer ones are the file's SHA-1
    assert max(fp.v1_piece_tables) == min(n for n in V1_PIECE_LENGTHS if n >= size) if size <= 1 << 24 \
        else max(fp.v1_piece_tables) == 1 << 24
    assert fp.kind is ContentKind.OTHER and fp.media is None


def test_short_reads_give_the_same_hashes() -> None:
    data = blob(5 * 1024 * 1024 + 777)
    pos = 0
    rng = random.Random(5)

    def read(n: int) -> bytes:
        nonlocal pos
        take = min(n, rng.randint(1, 3 * K))
        chunk = data[pos : pos + take]
        pos += len(chunk)
        return chunk

    hashes = hash_stream(read, len(data))
    assert hashes.sha256 == hashlib.sha256(data).hexdigest()
    assert hashes.v1_piece_tables[32768] == b"".join(
        hashlib.sha1(data[i : i + 32768]).digest() for i in range(0, len(data), 32768))


def naive_tables(data: bytes) -> dict[int, bytes]:
    """Every v1 table the slow way: one SHA-1 per piece per piece length, no shared chains."""
    lengths = [n for n in V1_PIECE_LENGTHS if n < len(data)] + [n for n in V1_PIECE_LENGTHS if n >= len(data)][:1]
    return {n: b"".join(hashlib.sha1(data[i : i + n]).digest() for i in range(0, len(data), n)) for n in lengths}


@pytest.mark.parametrize("chunk", [K, 64 * K, 1 << 20, 1 << 24])
@pytest.mark.parametrize("workers", [1, 3])
def test_shared_chains_equal_naive_tables_at_any_chunk_size(chunk: int, workers: int) -> None:
    # odd sizes across chunk and piece boundaries; 16 KiB chunks run every chain longer than a chunk
    for size in (K + 1, 3 * 1024 * 1024 + 12345, 17 * 1024 * 1024 + 999):
        data = blob(size, 3)
        reads = io.BytesIO(data)
        rng = random.Random(size)
        hashes = hash_stream(lambda n, r=reads, g=rng: r.read(min(n, g.randint(1, 40 * K))), size, chunk=chunk,
                             workers=workers)
        assert hashes.sha1 == hashlib.sha1(data).hexdigest() and hashes.md5 == hashlib.md5(data).hexdigest()
        assert hashes.sha256 == hashlib.sha256(data).hexdigest()
        assert hashes.leaf_hashes == b"".join(merkle.block_hashes(data))
        assert dict(hashes.v1_piece_tables) == naive_tables(data), (size, chunk, workers)


def test_a_failing_read_is_raised_and_stops_the_workers() -> None:
    calls = 0

    def read(n: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("disk gone")
        return bytes(min(n, 3 * K))

    with pytest.raises(OSError, match="disk gone"):
        hash_stream(read, 1 << 30, chunk=K, workers=2)


def test_a_failing_task_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pwatch.match import fingerprint_hash

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("hash broke")

    monkeypatch.setattr(fingerprint_hash, "_short_chains", lambda *_a: broken)
    data = blob(2 * 1024 * 1024)
    stream = iter([data[: 1 << 20], data[1 << 20 :]])
    with pytest.raises(RuntimeError, match="hash broke"):
        hash_stream(lambda _n: next(stream, b""), len(data), chunk=64 * K, workers=2)


def test_unsupported_piece_length_is_an_api_error(tmp_path: Path) -> None:
    fp = fingerprint_file(write(tmp_path, "f.bin", blob(100 * K)), media=False)
    assert fp.has_v1_table(K) and fp.has_v1_table(1 << 30) and not fp.has_v1_table(3 * K)
    assert fp.v1_pieces(1 << 30) == [bytes.fromhex(fp.sha1)]
    with pytest.raises(LocalProtocolError):
        fp.v1_pieces(3 * K)


def lt_torrent(path: Path, piece_length: int, flags: int) -> dict[bytes, Any]:
    ct = lt.create_torrent(lt.list_files(str(path)), piece_length, flags)
    lt.set_piece_hashes(ct, str(path.parent))
    decoded: dict[bytes, Any] = bencoding.decode(lt.bencode(ct.generate()))
    return decoded


@pytest.mark.interop
@pytest.mark.parametrize("size", [100_000, 1024 * 1024 + 7, 5 * 1024 * 1024])
def test_equal_to_libtorrent_v1_pieces_and_v2_root(tmp_path: Path, size: int) -> None:
    path = write(tmp_path, "content.bin", blob(size, 1))
    fp = fingerprint_file(path, media=False)
    for piece_length in (K, 65536, 1 << 20):
        v1 = lt_torrent(path, piece_length, lt.create_torrent.v1_only)
        assert v1[b"info"][b"piece length"] == piece_length
        assert b"".join(fp.v1_pieces(piece_length)) == v1[b"info"][b"pieces"], piece_length
        v2 = lt_torrent(path, piece_length, lt.create_torrent.v2_only)
        entry = v2[b"info"][b"file tree"][b"content.bin"][b""]
        assert entry[b"pieces root"] == fp.pieces_root()
        if size > piece_length:
            assert merkle.split_hashes(v2[b"piece layers"][fp.pieces_root()]) == fp.piece_layer(piece_length)


def test_json_round_trip_and_no_content(tmp_path: Path) -> None:
    data = blob(300_000, 7)
    path = write(tmp_path, "victim-name.bin", data)
    fp = fingerprint_file(path, media=False)
    out = tmp_path / "fp.json"
    fp.save(out)
    loaded = Fingerprint.load(out)
    assert loaded == fp and loaded.fingerprint_id == fp.sha256
    assert loaded.v1_pieces(K) == fp.v1_pieces(K) and loaded.pieces_root() == fp.pieces_root()
    doc = json.loads(out.read_text())
    assert doc["format"] == "p2pwatch-fingerprint" and doc["version"] == FORMAT_VERSION
    assert doc["source_name"] == "victim-name.bin" and doc["v2"]["pieces_root"] == fp.pieces_root().hex()
    raw = out.read_bytes()
    windows = {raw[i : i + 12] for i in range(len(raw) - 11)}
    assert not any(data[i : i + 12] in windows for i in range(len(data) - 11))
    packed = [doc["v2"]["leaf_hashes"], *doc["v1"]["piece_tables"].values()]
    inner = b"".join(zlib.decompress(base64.b64decode(p)) for p in packed)
    assert not any(data[i : i + 16] in inner for i in range(0, len(data) - 15, 997))
    anonymous = fingerprint_file(path, media=False, keep_name=False)
    assert anonymous.source_name is None and "victim" not in json.dumps(anonymous.to_json())


def test_text_content_does_not_appear(tmp_path: Path) -> None:
    secret = "".join(f"line {i}: private words that must not leave\n" for i in range(2000)).encode()
    fp = fingerprint_file(write(tmp_path, "notes.mp4", secret), media=True)
    text = json.dumps(fp.to_json())
    assert "private words" not in text and fp.kind is ContentKind.OTHER and fp.media is None


@pytest.mark.parametrize("problem", ["empty", "directory", "missing", "fifo"])
def test_refuses_what_is_not_a_file(tmp_path: Path, problem: str) -> None:
    target = tmp_path / "x.mp4"
    if problem == "empty":
        target.write_bytes(b"")
    elif problem == "directory":
        target.mkdir()
    elif problem == "fifo":
        os.mkfifo(target)
    with pytest.raises(FingerprintError) as info:
        fingerprint_file(target)
    assert str(target) in str(info.value)


def _doc(tmp_path: Path) -> dict[str, Any]:
    return fingerprint_file(write(tmp_path, "f.bin", blob(50_000)), media=False).to_json()


@pytest.mark.parametrize("damage", ["not-json", "not-ours", "version", "leaves", "root", "table", "hex",
                                    "list-item", "directory", "media"])
def test_wrong_fingerprint_files_are_refused(tmp_path: Path, damage: str) -> None:
    doc = _doc(tmp_path)
    target = tmp_path / "bad.json"
    text: str | None = None
    if damage == "not-json":
        text = "\x00\x01 nope"
    elif damage == "not-ours":
        doc = {"format": "something-else"}
    elif damage == "version":
        doc["version"] = FORMAT_VERSION + 1
    elif damage == "leaves":
        doc["v2"]["leaf_hashes"] = base64.b64encode(zlib.compress(bytes(32))).decode()
    elif damage == "root":
        doc["v2"]["pieces_root"] = "00" * 32
    elif damage == "table":
        doc["v1"]["piece_tables"]["16384"] = base64.b64encode(zlib.compress(bytes(20))).decode()
    elif damage == "hex":
        doc["sha256"] = "zz" * 32
    elif damage == "media":
        doc["media"] = {"kind": "video", "width": "wide"}
    if damage == "directory":
        target.mkdir()
    else:
        target.write_text(text if text is not None else json.dumps([doc] if damage == "list-item" else doc))
        if damage == "list-item":
            target.write_text(json.dumps([_doc(tmp_path), {"format": "p2pwatch-fingerprint", "version": 1}]))
    with pytest.raises(FingerprintError):
        load_fingerprints(target)
    with pytest.raises(FingerprintError):
        Fingerprint.load(target)


def test_progress_reports_every_chunk(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    size = 9 * 1024 * 1024 + 5
    fingerprint_file(write(tmp_path, "f.bin", blob(size)), media=False, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (size, size) and [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 3


# --- hash lists ---

MD5, SHA1, SHA256, PDQ = "a" * 32, "B" * 40, "c" * 64, "d" * 64


@pytest.mark.parametrize("form", ["csv", "tsv", "semicolon", "jsonl", "json", "bare"])
def test_hash_lists_import(tmp_path: Path, form: str) -> None:
    rows = [{"MD5": MD5, "sha-1": SHA1, "SHA256": SHA256, "pdq_hash": PDQ, "size": "123", "File Name": "a/b.jpg"},
            {"MD5": "", "sha-1": "", "SHA256": "", "pdq_hash": PDQ, "size": "", "File Name": ""}]
    header = list(rows[0])
    if form in ("csv", "tsv", "semicolon"):
        sep = {"csv": ",", "tsv": "\t", "semicolon": ";"}[form]
        text = "# exported list\n" + sep.join(header) + "\n" + "\n".join(sep.join(r.values()) for r in rows) + "\n"
    elif form == "jsonl":
        text = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    elif form == "json":
        text = json.dumps(rows)
    else:
        text = f"{MD5}\n{SHA1}\n\n{SHA256}\n"
    items = import_hash_list(write(tmp_path, "list.txt", text.encode()))
    if form == "bare":
        assert [(i.md5, i.sha1, i.sha256) for i in items] == [(MD5, None, None), (None, SHA1.lower(), None),
                                                              (None, None, SHA256)]
        assert items[2].source.endswith(":4") and items[0].fingerprint_id == f"md5:{MD5}"
        return
    first, second = items
    assert (first.md5, first.sha1, first.sha256, first.pdq, first.size, first.name) == \
        (MD5, SHA1.lower(), SHA256, PDQ, 123, "b.jpg")
    assert first.fingerprint_id == SHA256
    assert (second.md5, second.pdq, second.size) == (None, PDQ, None) and second.fingerprint_id == f"pdq:{PDQ}"


@pytest.mark.parametrize("text, fragment", [
    ("md5,name\nnothex!,x\n", "list.txt:2: md5 must be 32 hex"),
    ("name,size\nx,1\n", "names no md5"),
    ("sha256,name\n" + "ab" * 32 + ",a\n\n,b\n", "list.txt:4: no md5"),
    ("sha256\n" + "ab" * 32 + "\n,\n", "list.txt:3: 2 fields, the header has 1"),
    ("{\"md5\": 1}\n", "list.txt:1: md5 must be"),
    ("[1, 2]", "array of objects"),
    ("abc123\n", "header names no md5"),
    ("md5,size\n" + "a" * 32 + ",-5\n", "size must be"),
    ("", "no items"),
])
def test_bad_hash_lists_name_the_line(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(FingerprintError) as info:
        import_hash_list(write(tmp_path, "list.txt", text.encode()))
    assert fragment in str(info.value)


def test_hash_list_not_utf8_or_directory(tmp_path: Path) -> None:
    with pytest.raises(FingerprintError):
        import_hash_list(write(tmp_path, "list.txt", b"\xff\xfe\x00garbage"))
    with pytest.raises(FingerprintError):
        import_hash_list(tmp_path)


# --- CLI ---

def test_cli_list_and_directory_outputs(tmp_path: Path) -> None:
    a, b = write(tmp_path, "a.bin", blob(70_000, 1)), write(tmp_path, "b.bin", blob(20_000, 2))
    runner = CliRunner()
    result = runner.invoke(main, ["fingerprint", str(a), str(b), "-o", str(tmp_path / "out.json"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["sha256"] for s in summary] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert summary[0]["kind"] == "other" and summary[0]["output"].endswith("out.json")
    loaded = load_fingerprints(tmp_path / "out.json")
    assert [f.sha256 for f in loaded] == [s["sha256"] for s in summary]
    result = runner.invoke(main, ["fingerprint", str(a), "-o", str(tmp_path / "fps"), "--no-name", "--no-media"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "fps" / f"{summary[0]['sha256']}.json"
    assert Fingerprint.load(written).source_name is None and "wrote 1 fingerprint" in result.stdout


@pytest.mark.parametrize("case, code", [("directory", 1), ("missing", 1), ("empty", 1), ("out-file", 2)])
def test_cli_errors_are_one_line(tmp_path: Path, case: str, code: int) -> None:
    good = write(tmp_path, "a.bin", blob(1000))
    target = {"directory": tmp_path, "missing": tmp_path / "nope.bin", "empty": write(tmp_path, "e.bin", b""),
              "out-file": good}[case]
    out = write(tmp_path, "taken", b"x") if case == "out-file" else tmp_path / "o.json"
    result = CliRunner().invoke(main, ["fingerprint", str(target), "-o", str(out)])
    assert result.exit_code == code
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("p2pwatch: error:")
    assert "Traceback" not in result.output


def test_truncated_video_keeps_kind_and_reports(tmp_path: Path) -> None:
    require_component("ffmpeg", have_ffmpeg(), "pip install imageio-ffmpeg")
    video = make_video(tmp_path / "v.mp4", 3, seconds=4.0, segments=2)
    truncated = write(tmp_path, "t.mp4", video.read_bytes()[:3000])
    fp = fingerprint_file(truncated)
    assert fp.kind is ContentKind.VIDEO and fp.media is None and fp.media_error
    whole = fingerprint_file(video)
    assert whole.media is not None and whole.media.frame_hashes and whole.media.codec == "h264"
    assert Fingerprint.from_json(json.loads(json.dumps(whole.to_json()))) == whole


# --- hypothesis: the decoders raise FingerprintError and nothing else ---

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
_KEYS = ["format", "version", "size", "md5", "sha1", "sha256", "kind", "created_at", "tool", "v2", "v1", "media",
         "source_name"]


@pytest.fixture(scope="module")
def valid_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("fp") / "f.bin"
    path.write_bytes(blob(40_000, 3))
    return fingerprint_file(path, media=False).to_json()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_KEYS), _json, st.booleans())
def test_damaged_documents_raise_only_fingerprint_error(valid_doc: dict[str, Any], key: str, value: Any,
                                                        drop: bool) -> None:
    doc = json.loads(json.dumps(valid_doc))
    if drop:
        doc.pop(key)
    else:
        doc[key] = value
    with contextlib.suppress(FingerprintError):
        Fingerprint.from_json(doc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_hash_lists_raise_only_fingerprint_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.txt"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        items = import_hash_list(path)
    except FingerprintError:
        return
    assert items and all(i.md5 or i.sha1 or i.sha256 or i.pdq or i.phash for i in items)
