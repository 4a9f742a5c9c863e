"""The stand-alone verifier: standard library only, the signature on a bare Python and by OpenSSL, exit codes, and
agreement of its independent re-implementations (chain, bencode, torrents, merkle) with p2pwatch's own."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence import bdecode, hashchain, torrent
from evidence.__main__ import main
from evidence.proofs import ProofError, TorrentIndex, check_match
from p2pwatch.bundle import write_bundle
from p2pwatch.storage import chain as store_chain
from p2pwatch.torrent import merkle
from p2pwatch.torrent.metainfo import parse_torrent as p2p_parse
from tests.bundle.test_bundle_writer import make_torrent, sample_inputs
from tests.conftest import require_binary, require_component

ROOT = Path(__file__).resolve().parents[2]
try:
    import libtorrent as lt
except ImportError:  # pragma: no cover - depends on the machine
    lt = None


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_component("libtorrent", lt is not None, "pip install libtorrent")  # sample_inputs makes torrents
    tmp = tmp_path_factory.mktemp("verify")
    write_bundle(tmp / "case.zip", **sample_inputs(tmp / "data", rows=300))
    return tmp / "case.zip"


def _isolated(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in ``python -I -S``: no site-packages (so no cryptography), no environment, no cwd on path;
    only the repository root is added, to find the evidence package."""
    prelude = f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
    return subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code, *args], capture_output=True,
                          text=True, timeout=120, check=False, cwd=cwd)


def test_imports_nothing_outside_the_standard_library() -> None:
    code = ("import evidence.verify, evidence.__main__; "
            "names = [m.split('.')[0] for m in sys.modules]; "
            "ours = ('evidence', '__main__'); "
            "bad = sorted({n for n in names if n not in sys.stdlib_module_names and n not in ours}); "
            "print(bad)")
    proc = _isolated(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    for path in (ROOT / "evidence").glob("*.py"):
        assert "p2pwatch" not in "".join(line for line in path.read_text().splitlines()
                                         if line.startswith(("import", "from"))), path


def test_bare_python_checks_the_signature_and_prints_the_openssl_command(bundle_path: Path, tmp_path: Path) -> None:
    extract = tmp_path / "sig"
    proc = _isolated("from evidence.__main__ import main; sys.exit(main(sys.argv[1:]))",
                     "verify", str(bundle_path), "--extract-dir", str(extract))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("[ ok ] signature: "))
    assert "verified with public_key.pem by the pure-Python RFC 8032 verifier" in line and "cryptography" not in line
    assert proc.stdout.splitlines()[-1] == "RESULT: VERIFIED, every check holds"
    command_line = next(line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("openssl "))
    assert command_line.split()[:4] == ["openssl", "pkeyutl", "-verify", "-pubin"]
    assert sorted(p.name for p in extract.iterdir()) == ["manifest.json", "manifest.sig", "public_key.pem"]
    require_binary("openssl")
    ran = subprocess.run(command_line.split(), capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0 and "Signature Verified Successfully" in ran.stdout
    # A different signature must fail with the same command.
    (extract / "manifest.sig").write_bytes(bytes(64))
    bad = subprocess.run(command_line.split(), capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0


def test_signature_verifiers_and_flags(bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def signature_line(*args: str) -> tuple[int, str]:
        code = main(["verify", str(bundle_path), *args])
        out = capsys.readouterr().out
        return code, next(x for x in out.splitlines() if "] signature: " in x)

    code, line = signature_line()
    assert code == 0 and "by the pure-Python RFC 8032 verifier and by cryptography " in line
    code, line = signature_line("--no-cryptography")
    assert code == 0 and line.endswith("by the pure-Python RFC 8032 verifier")
    require_binary("openssl")
    code, line = signature_line("--no-cryptography", "--run-openssl", "--extract-dir", str(tmp_path / "b"))
    assert code == 0 and line.endswith("; and by openssl"), line
    # The unzipped files and the relative command printed without --extract-dir check it too.
    proc = subprocess.run([sys.executable, "-m", "evidence", "verify", str(bundle_path)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT)
    command_line = next(x.strip() for x in proc.stdout.splitlines() if x.strip().startswith("openssl "))
    assert "-inkey public_key.pem" in command_line
    unzipped = tmp_path / "unzipped"
    unzipped.mkdir()
    with zipfile.ZipFile(bundle_path) as z:
        z.extractall(unzipped, members=["manifest.json", "manifest.sig", "public_key.pem"])
    ran = subprocess.run(command_line.split(), capture_output=True, text=True, timeout=60, check=False, cwd=unzipped)
    assert ran.returncode == 0 and "Signature Verified Successfully" in ran.stdout


def test_module_command_and_exit_codes(bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "evidence", "verify", str(bundle_path)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"Evidence bundle {bundle_path}")
    assert [line.split("]")[0] + "]" for line in lines if line.startswith("[")] == ["[ ok ]"] * 12
    assert lines[-1] == "RESULT: VERIFIED, every check holds"
    assert main(["verify", str(tmp_path / "missing.zip")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["verify", str(bundle_path), "--bogus"]) == 2
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bundle_path.read_bytes()[:-5])
    assert main(["verify", str(broken)]) == 1
    assert "RESULT: NOT VERIFIED" in capsys.readouterr().out
    assert main(["verify", str(bundle_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is True and len(doc["checks"]) == 12 and doc["key_fingerprint"]


# --- agreement with p2pwatch's own implementations -----------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(1, 2**40), level=st.integers(0, 4), client=st.none() | st.text(max_size=30),
       fraction=st.none() | st.floats(0, 1), salt=st.binary(min_size=16, max_size=16),
       ip=st.ip_addresses().map(str), port=st.integers(0, 65535), reporter=st.none() | st.text(max_size=20),
       prev=st.binary(min_size=32, max_size=32))
def test_chain_definition_matches_the_store(seq: int, level: int, client: str | None, fraction: float | None,
                                            salt: bytes, ip: str, port: int, reporter: str | None,
                                            prev: bytes) -> None:
    addr = store_chain.address_digest(salt.hex(), ip, port, reporter)
    assert hashchain.address_digest(salt.hex(), ip, port, reporter) == addr
    fields = store_chain.observation_fields(
        seq=seq, observed_at="2025-01-01T00:00:00.000000Z", torrent="ab" * 20, addr=addr, level=level,
        source="probe", client=client, peer_id=None, have_fraction=store_chain.quantize_fraction(fraction),
        transcript=None)
    assert hashchain.canonical_bytes(fields) == store_chain.canonical_bytes(fields)
    assert hashchain.row_hash(fields, prev.hex()) == store_chain.row_hash(fields, prev.hex())
    assert hashchain.body_hash(fields) == store_chain.body_hash(fields)


def _tree(tmp: Path, sizes: list[int], rng: random.Random) -> Path:
    root = tmp / f"t{rng.getrandbits(32)}"
    if len(sizes) == 1:
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_bytes(rng.randbytes(sizes[0]))
        return root
    for i, size in enumerate(sizes):
        (root / f"f{i}.bin").parent.mkdir(parents=True, exist_ok=True)
        (root / f"f{i}.bin").write_bytes(rng.randbytes(size))
    return root


@pytest.mark.parametrize("flags", ["v1", "v2", "hybrid"])
@pytest.mark.parametrize("sizes", [[1], [16384], [40000], [70000, 5, 33000], [0, 20000, 131072]])
def test_torrent_reader_matches_p2pwatch_metainfo(tmp_path: Path, flags: str, sizes: list[int]) -> None:
    flag = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}[flags]
    rng = random.Random(len(sizes) * 1000 + sum(sizes))
    raw = make_torrent(_tree(tmp_path, sizes, rng), 16384, flag)
    mine, theirs = torrent.parse_torrent(raw), p2p_parse(raw)
    assert mine.infohash_v1 == theirs.infohash_v1 and mine.infohash_v2 == theirs.infohash_v2
    assert [(f.path, f.length, f.offset, f.pad, f.pieces_root) for f in mine.files] == [
        (f.path, f.length, f.offset, f.pad, f.pieces_root) for f in theirs.files]
    assert mine.num_pieces == theirs.num_pieces
    for index in range(mine.num_pieces):
        assert mine.piece_size(index) == theirs.piece_size(index)
        if theirs.piece_hashes:
            assert mine.piece_hash(index, "sha1") == theirs.piece_hashes[index]
        if theirs.infohash_v2:
            f = mine.file_at_piece(index)
            hashes = theirs.v2_piece_hashes(theirs.files[f.index])
            assert hashes is not None
            assert mine.piece_hash(index, "sha256-merkle") == hashes[index - f.offset // mine.piece_length]


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=300_000), piece_kib=st.sampled_from([16, 32, 64, 256]))
def test_merkle_matches_p2pwatch(data: bytes, piece_kib: int) -> None:
    piece_length = piece_kib * 1024
    leaves = torrent.block_hashes(data)
    assert leaves == merkle.block_hashes(data)
    assert torrent.merkle_root(leaves) == merkle.pieces_root(leaves)
    layer = merkle.piece_layer(leaves, piece_length)
    if len(data) > piece_length:
        assert torrent.root_from_piece_layer(layer, piece_length) == merkle.pieces_root(leaves)
        chunk = data[:piece_length]
        assert torrent.piece_hash_v2(chunk, piece_length, single_piece_file=False) == layer[0]
    else:
        assert torrent.piece_hash_v2(data, piece_length, single_piece_file=True) == layer[0]


def test_bdecode_is_strict() -> None:
    assert bdecode.decode(b"d1:ai1e1:bl3:xyzi-2eee") == {b"a": 1, b"b": [b"xyz", -2]}
    value, span = bdecode.decode_with_span(b"d4:infod1:xi0ee1:zi1ee", b"info")
    assert value[b"info"] == {b"x": 0} and span == (7, 15)
    for bad in (b"d1:bi1e1:ai2ee", b"d1:ai1e1:ai2ee", b"i01e", b"i-0e", b"ie", b"i1ei2e", b"3:ab", b"l", b"d",
                b"di1ei2ee", b"x", b"", b"l" * 100 + b"e" * 100, b"10:abc"):
        with pytest.raises(bdecode.BencodeError):
            bdecode.decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_bdecode_never_fails_otherwise(data: bytes) -> None:
    with contextlib.suppress(bdecode.BencodeError):
        bdecode.decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_torrent_reader_only_raises_its_error(data: bytes) -> None:
    with contextlib.suppress(torrent.TorrentError):
        torrent.parse_torrent(data)


def _perceptual(frames: list[dict[str, Any]], **proof: Any) -> dict[str, Any]:
    return {"id": "p", "method": "perceptual", "infohash": "aa" * 20, "file_index": 0,
            "proof": {"threshold": 8, "min_frames": 2, "frames": frames, **proof}}


def test_perceptual_proof_rechecks_distances_and_thresholds(tmp_path: Path) -> None:
    raw = make_torrent(_tree(tmp_path, [30000], random.Random(1)), 16384, lt.create_torrent.v1_only)
    parsed = torrent.parse_torrent(raw)
    index = TorrentIndex()
    index.add(parsed.infohash_v1.hex() if parsed.infohash_v1 else "", parsed)
    key = next(iter(parsed.ids()))

    def frame(a: int, b: int, **extra: Any) -> dict[str, Any]:
        return {"registered_hash": f"{a:016x}", "observed_hash": f"{b:016x}", "distance": (a ^ b).bit_count(),
                **extra}

    good = _perceptual([frame(0xFF, 0xFE), frame(0xF0F0, 0xF0F1), frame(0, 2**64 - 1)], matched_frames=2)
    good["infohash"] = key
    assert "2/3" in check_match(good, index, lambda k, i: None)
    lying = json.loads(json.dumps(good))
    lying["proof"]["frames"][2]["distance"] = 3
    with pytest.raises(ProofError, match="differ in 64 bits"):
        check_match(lying, index, lambda k, i: None)
    too_few = json.loads(json.dumps(good))
    too_few["proof"]["min_frames"] = 3
    with pytest.raises(ProofError, match="fewer than min_frames"):
        check_match(too_few, index, lambda k, i: None)
    offset = _perceptual([frame(1, 1, registered_time=0, observed_time=5), frame(2, 2, registered_time=10,
                                                                                observed_time=19)],
                         matched_frames=2, time_offset=5, offset_tolerance=1)
    offset["infohash"] = key
    with pytest.raises(ProofError, match="time offset"):
        check_match(offset, index, lambda k, i: None)
    assert hashlib.sha256(raw).digest()  # the torrent itself is untouched


def test_chain_check_reads_interleaved_with_other_members(bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With small read chunks the observation stream is read piecewise while transcripts and pieces are read
    in between (each chunk must seek to its own position)."""
    from evidence import verify, zipcanon

    monkeypatch.setattr(zipcanon, "CHUNK", 997)
    result = verify.verify_bundle(bundle_path)
    assert result.exit_code == 0, [c.lines() for c in result.failed]


def test_zip64_end_records_for_many_entries() -> None:
    import io
    import zipfile

    from evidence.zipcanon import ZipWriter, scan

    out = io.BytesIO()
    writer = ZipWriter(out)
    count = 66_000
    for i in range(count):
        writer.write(f"t/{i}.json", b"{}")
    with writer.open("big.jsonl", large=True) as stream:
        stream.write(b"x" * 1000)
    writer.finish()
    data = out.getvalue()
    entries = scan(io.BytesIO(data), len(data))
    assert len(entries) == count + 1 and entries[-1].zip64
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert len(z.namelist()) == count + 1
        assert z.read("big.jsonl") == b"x" * 1000 and z.read(f"t/{count - 1}.json") == b"{}"
