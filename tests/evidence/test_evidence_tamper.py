"""Tampering with a bundle is detected: byte flips anywhere in the ZIP, and semantic edits re-packed with a
re-computed manifest (old signature, another key, or the centre's own key)."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.verify import EXIT_OK, Options, verify_bundle
from evidence.zipcanon import STORED, ZipWriter, read_content, scan
from p2pwatch.bundle import build_manifest, write_bundle
from p2pwatch.bundle.keys import fingerprint, public_pem
from tests.bundle.test_bundle_writer import sample_inputs, signing_key

RANDOM_POSITIONS = 5000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("tamper")
    write_bundle(tmp / "b.zip", **sample_inputs(tmp / "data"))
    return (tmp / "b.zip").read_bytes()


def _members(data: bytes) -> list[tuple[str, bytes, int]]:
    f = io.BytesIO(data)
    return [(e.name, read_content(f, e, 1 << 30), e.method) for e in scan(f, len(data))]


def _put(writer: ZipWriter, name: str, content: bytes, method: int) -> None:
    """As the bundle writer does: observations.jsonl streamed, every other member written whole (so a small
    member gets the same small-window compressor, zipcanon.compressor)."""
    if name != "observations.jsonl":
        writer.write(name, content, method=method)
        return
    with writer.open(name, method=method, large=True) as out:
        out.write(content)


def repack(data: bytes, *, replace: dict[str, bytes | None], key: Ed25519PrivateKey | None,
           keep_signature: bool = False) -> bytes:
    """Rewrite a bundle with some members replaced (None: removed), a re-computed manifest, and a signature by
    ``key`` (with its public key swapped in), or the old signature when ``keep_signature``."""
    members = _members(data)
    old_manifest = json.loads(next(d for n, d, _ in members if n == "manifest.json"))
    old_sig = next(d for n, d, _ in members if n == "manifest.sig")
    if key is not None and not keep_signature:
        replace = {**replace, "public_key.pem": public_pem(key)}
    out = io.BytesIO()
    writer = ZipWriter(out)
    files = []
    for name, content, method in members:
        if name in ("manifest.json", "manifest.sig"):
            continue
        new: bytes | None = replace.get(name, content)
        if new is None:
            continue
        _put(writer, name, new, method)
        files.append((name, hashlib.sha256(new).hexdigest(), len(new)))
    prefix = out.getvalue()[: writer.position]
    manifest = build_manifest(
        files=files, prefix=(len(prefix), hashlib.sha256(prefix).hexdigest()),
        tool_version=old_manifest["tool_version"], created_at=old_manifest["created_at"],
        config_hash=old_manifest["config_sha256"], case_name=old_manifest["case"],
        key_fingerprint=fingerprint(key) if key is not None and not keep_signature else old_manifest["key_fingerprint"])
    writer.write("manifest.json", manifest, method=STORED)
    writer.write("manifest.sig", old_sig if keep_signature or key is None else key.sign(manifest), method=STORED)
    writer.finish()
    return out.getvalue()


def _member(data: bytes, name: str) -> bytes:
    return next(d for n, d, _ in _members(data) if n == name)


def _failed(data: bytes) -> set[str]:
    result = verify_bundle(data)
    assert result.exit_code != EXIT_OK
    return {c.name for c in result.failed}


def test_repack_without_changes_still_verifies(bundle: bytes) -> None:
    assert repack(bundle, replace={}, key=signing_key()) == bundle
    assert verify_bundle(bundle).exit_code == EXIT_OK


def test_every_flipped_byte_is_detected(bundle: bytes) -> None:
    entries = scan(io.BytesIO(bundle), len(bundle))
    dense: set[int] = set()
    for e in entries:
        dense.update(range(e.offset, e.data_offset))  # every local header
    for e in entries[-2:]:
        dense.update(range(e.offset, e.end))  # manifest.json and manifest.sig, headers and data
    dense.update(range(entries[-1].end, len(bundle)))  # central directory and end records
    rng = random.Random(20250102)
    others = [p for p in range(len(bundle)) if p not in dense]
    positions = sorted(dense) + sorted(rng.sample(others, RANDOM_POSITIONS))
    assert len(positions) > 10_000
    options = Options(fail_fast=True)
    undetected = []
    buf = bytearray(bundle)
    for position in positions:
        original = buf[position]
        buf[position] = original ^ rng.randrange(1, 256)
        if verify_bundle(bytes(buf), options).exit_code == EXIT_OK:
            undetected.append(position)
        buf[position] = original
    assert undetected == []


def test_single_bit_flips_in_compressed_data_are_detected(bundle: bytes) -> None:
    """The last byte of each deflate stream holds padding bits that inflate ignores; the archive prefix hash
    in the manifest still catches a flip there."""
    entries = scan(io.BytesIO(bundle), len(bundle))
    buf = bytearray(bundle)
    for e in entries[:-2]:
        for bit in range(8):
            buf[e.end - 1] ^= 1 << bit
            assert verify_bundle(bytes(buf), Options(fail_fast=True)).exit_code != EXIT_OK
            buf[e.end - 1] ^= 1 << bit


def _edit_observation(data: bytes, edit: Any) -> bytes:
    lines = _member(data, "observations.jsonl").split(b"\n")
    rows = [json.loads(line) for line in lines if line]
    edit(rows)
    return b"".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for r in rows)


def _level3_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rows if r.get("level") == 3)


def test_edited_observation_with_the_old_signature_fails_the_signature(bundle: bytes) -> None:
    edited = _edit_observation(bundle, lambda rows: _level3_row(rows).update(client="Transmission/4.0"))
    failed = _failed(repack(bundle, replace={"observations.jsonl": edited}, key=None, keep_signature=True))
    assert "signature" in failed and "chain" in failed
    assert "manifest" not in failed  # the manifest was re-computed: only the signature can tell


def test_resigned_with_another_key_fails_the_fingerprint(bundle: bytes) -> None:
    edited = _edit_observation(bundle, lambda rows: _level3_row(rows).update(client="Transmission/4.0"))
    other = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    tampered = repack(bundle, replace={"observations.jsonl": edited}, key=other)
    result = verify_bundle(tampered)
    failed = {c.name for c in result.failed}
    assert "key" in failed and "signature" not in failed
    assert result.fingerprint == fingerprint(other)
    expected = fingerprint(signing_key())
    assert verify_bundle(tampered, Options(expect_fingerprint=expected)).exit_code != EXIT_OK


def test_expected_fingerprint_option(bundle: bytes) -> None:
    good = fingerprint(signing_key())
    assert verify_bundle(bundle, Options(expect_fingerprint=good.upper())).exit_code == EXIT_OK
    result = verify_bundle(bundle, Options(expect_fingerprint="ab" * 32))
    assert {c.name for c in result.failed} == {"key"}


def test_row_deleted_from_the_middle_fails_the_chain(bundle: bytes) -> None:
    def drop(rows: list[dict[str, Any]]) -> None:
        middle = len(rows) // 2
        while rows[middle].get("redacted"):
            middle += 1
        del rows[middle]

    failed = _failed(repack(bundle, replace={"observations.jsonl": _edit_observation(bundle, drop)}, key=signing_key()))
    assert "chain" in failed and not failed & {"zip", "manifest", "key", "signature"}


def test_rehashed_chain_without_the_head_fails_the_anchors(bundle: bytes) -> None:
    chain = json.loads(_member(bundle, "chain.json"))
    chain["head_hash"] = "ab" * 32
    failed = _failed(repack(bundle, replace={"chain.json": json.dumps(chain).encode()}, key=signing_key()))
    assert failed == {"chain"}


@pytest.mark.parametrize("target", ["proof", "piece-file", "transcript", "v2-root", "perceptual", "peer-level"])
def test_semantic_edits_re_signed_by_the_centre_fail_their_check(bundle: bytes, target: str) -> None:
    doc = json.loads(_member(bundle, "bundle.json"))
    replace: dict[str, bytes | None] = {}
    m3 = next(m for m in doc["matches"] if m["id"] == "m3")
    expected = {"match m3"}
    if target == "proof":
        m3["proof"]["piece_hash"] = "12" * 20
    elif target == "piece-file":
        name = f"pieces/{m3['infohash']}/{m3['proof']['piece_index']}.sha1"
        replace[name] = ("34" * 20 + "\n").encode()
        expected = {"match m3", "chain"}  # a level-3 observation rests on the same piece
    elif target == "transcript":
        name = next(n for n, _, _ in _members(bundle) if n.startswith("transcripts/"))
        body = json.loads(_member(bundle, name))
        body["level"] = 4
        replace[name] = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        expected = {"chain"}
    elif target == "v2-root":
        m2 = next(m for m in doc["matches"] if m["id"] == "m2")
        m2["proof"]["pieces_root"] = "56" * 32
        expected = {"match m2"}
    elif target == "perceptual":
        m4 = next(m for m in doc["matches"] if m["id"] == "m4")
        m4["proof"]["frames"][0]["distance"] = 1
        expected = {"match m4"}
    else:
        doc["peers"][-1]["level"] = 3
        expected = {"peers"}
    replace["bundle.json"] = json.dumps(doc, indent=1).encode()
    assert _failed(repack(bundle, replace=replace, key=signing_key())) == expected


def test_unlisted_or_missing_files_fail_the_manifest(bundle: bytes) -> None:
    members = _members(bundle)
    out = io.BytesIO()
    writer = ZipWriter(out)
    for name, content, method in members[:-2]:
        _put(writer, name, content, method)
    writer.write("extra.txt", b"added after signing")
    for name, content, method in members[-2:]:
        writer.write(name, content, method=method)
    writer.finish()
    assert _failed(out.getvalue()) == {"manifest"}
    dropped = repack(bundle, replace={}, key=None, keep_signature=True)
    assert dropped == bundle
    without = repack(bundle, replace={"timeline.png": None}, key=None, keep_signature=True)
    assert "signature" in _failed(without)


def test_truncated_or_extended_archives_fail(bundle: bytes, tmp_path: Path) -> None:
    for data in (bundle[:-1], bundle + b"\0", b"", bundle[:100], b"PK\x03\x04" + bundle[4:30]):
        assert verify_bundle(data).exit_code != EXIT_OK


@pytest.mark.parametrize("edit", ["matches-int", "peers-str", "case-str", "torrents-none", "deep", "not-json",
                                  "chain-list"])
def test_malformed_members_fail_without_a_traceback(bundle: bytes, edit: str) -> None:
    doc = json.loads(_member(bundle, "bundle.json"))
    replace: dict[str, bytes | None] = {}
    if edit == "matches-int":
        doc["matches"] = 5
    elif edit == "peers-str":
        doc["peers"] = "x"
    elif edit == "case-str":
        doc["case"] = "x"
    elif edit == "torrents-none":
        doc["torrents"] = None
    if edit == "deep":
        replace["bundle.json"] = b"[" * 100_000 + b"]" * 100_000
    elif edit == "not-json":
        replace["bundle.json"] = b"\xff\xfe not json"
    elif edit == "chain-list":
        replace["chain.json"] = b"[]"
    else:
        replace["bundle.json"] = json.dumps(doc).encode()
    result = verify_bundle(repack(bundle, replace=replace, key=signing_key()))
    assert result.exit_code == 1 and result.failed
