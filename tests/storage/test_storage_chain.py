"""The hash-chain definitions (p2pwatch.storage.chain): test vector, fast paths, and the checker."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from p2pwatch.storage.chain import (
    GENESIS_HASH,
    ChainChecker,
    SeqTemplate,
    address_digest,
    audit_fields,
    canonical_bytes,
    format_timestamp,
    observation_fields,
    observation_template,
    quantize_fraction,
    row_hash,
)

REPO = Path(__file__).resolve().parents[2]

# The worked example of docs/storage.md; the evidence verifier's tests can use the same numbers.
VECTOR_SALT = "00112233445566778899aabbccddeeff"


def vector_fields(seq: int = 1) -> dict[str, object]:
    return observation_fields(
        seq=seq, observed_at="2024-05-01T12:00:00.000000Z", torrent="0123456789abcdef0123456789abcdef01234567",
        addr=address_digest(VECTOR_SALT, "203.0.113.7", 51413, "198.51.100.1:6881"), level=3, source="probe",
        client="qBittorrent 4.6.2", peer_id="2d71423436323042" + "41" * 12, have_fraction=1.0,
        transcript=hashlib.sha256(b"[]").hexdigest())


def test_definition_matches_the_documented_formula() -> None:
    fields = vector_fields()
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(bytes.fromhex(GENESIS_HASH) + hashlib.sha256(text.encode()).digest()).hexdigest()
    assert row_hash(fields, GENESIS_HASH) == expected
    salt_and_json = bytes.fromhex(VECTOR_SALT) + b'["203.0.113.7",51413,"198.51.100.1:6881"]'
    assert fields["addr"] == hashlib.sha256(salt_and_json).hexdigest()


def test_documented_vector() -> None:
    doc = (REPO / "docs" / "storage.md").read_text()
    fields = vector_fields()
    first = row_hash(fields, GENESIS_HASH)
    second = row_hash(vector_fields(2), first)
    assert canonical_bytes(fields).decode() in doc
    assert str(fields["addr"]) in doc
    assert first in doc
    assert second in doc


def test_timestamp_format() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=UTC)
    assert format_timestamp(moment) == "2024-05-01T12:00:00.000005Z"
    assert format_timestamp(moment.replace(tzinfo=None)) == "2024-05-01T12:00:00.000005Z"
    assert format_timestamp(datetime(999, 1, 1)) == "0999-01-01T00:00:00.000000Z"


def test_quantize_fraction() -> None:
    assert quantize_fraction(None) is None
    assert quantize_fraction(1) == 1.0 and isinstance(quantize_fraction(1), float)
    assert quantize_fraction(0.1234567) == 0.123457
    for bad in (float("nan"), float("inf")):
        try:
            quantize_fraction(bad)
        except ValueError:
            continue
        raise AssertionError("non-finite fraction accepted")


text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
hex40 = st.text("0123456789abcdef", min_size=40, max_size=40)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)


@given(seq=st.integers(0, 2**62), observed_at=text, torrent=text, addr=hex64, level=st.integers(0, 4),
       source=text, client=st.none() | text, peer_id=st.none() | hex40,
       have_fraction=st.none() | st.floats(allow_nan=False, allow_infinity=False),
       transcript=st.none() | hex64)
def test_observation_template_is_byte_identical(seq: int, observed_at: str, torrent: str, addr: str, level: int,
                                                source: str, client: str | None, peer_id: str | None,
                                                have_fraction: float | None, transcript: str | None) -> None:
    kwargs = dict(observed_at=observed_at, torrent=torrent, addr=addr, level=level, source=source, client=client,
                  peer_id=peer_id, have_fraction=have_fraction, transcript=transcript)
    prefix, suffix = observation_template(**kwargs)  # type: ignore[arg-type]
    fields = observation_fields(seq=seq, **kwargs)  # type: ignore[arg-type]
    assert prefix + str(seq).encode() + suffix == canonical_bytes(fields)
    fields.pop("seq")
    assert SeqTemplate(fields).render(seq) == prefix + str(seq).encode() + suffix


@given(ip=text, port=st.integers(0, 65535), reporter=st.none() | text, salt=st.binary(min_size=16, max_size=16))
def test_address_digest_is_canonical_json(ip: str, port: int, reporter: str | None, salt: bytes) -> None:
    expected = hashlib.sha256(salt + canonical_bytes([ip, port, reporter])).hexdigest()
    assert address_digest(salt.hex(), ip, port, reporter) == expected


@given(fields=st.dictionaries(text.filter(lambda k: k != "seq"), st.none() | st.integers() | text | st.booleans(),
                              max_size=8), seq=st.integers(0, 10**12))
def test_seq_template_any_flat_object(fields: dict[str, object], seq: int) -> None:
    assert SeqTemplate(fields).render(seq) == canonical_bytes({**fields, "seq": seq})


def build_chain(n: int) -> list[tuple[int, dict[str, object], str, str]]:
    rows = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        fields = audit_fields(seq=seq, at="2024-01-01T00:00:00.000000Z", actor="t", action="a", detail={"n": seq})
        digest = row_hash(fields, prev)
        rows.append((seq, fields, prev, digest))
        prev = digest
    return rows


def check(rows: list[tuple[int, dict[str, object], str, str]]) -> ChainChecker:
    checker = ChainChecker("audit")
    for seq, fields, prev, digest in rows:
        checker.feed(seq, fields, prev, digest)
    return checker


def test_checker_accepts_an_intact_chain() -> None:
    checker = check(build_chain(5))
    assert checker.report.ok
    assert (checker.report.checked, checker.report.first_seq, checker.report.last_seq) == (5, 1, 5)


def test_checker_reports_each_kind_of_damage_at_its_row() -> None:
    rows = build_chain(6)
    seq, fields, prev, digest = rows[2]
    changed = [*rows[:2], (seq, {**fields, "actor": "mallory"}, prev, digest), *rows[3:]]
    report = check(changed).report
    assert [p.seq for p in report.problems] == [3]
    assert "contents" in report.problems[0].reason

    report = check([*rows[:2], *rows[3:]]).report  # a row deleted
    assert {p.seq for p in report.problems} == {4}
    assert any("gap" in p.reason for p in report.problems)

    report = check([rows[0], rows[2], rows[1], *rows[3:]]).report  # two rows swapped
    assert not report.ok

    seq, fields, prev, digest = rows[4]
    report = check([*rows[:4], (seq, {**fields, "seq": 99}, prev, digest), rows[5]]).report
    assert [p.seq for p in report.problems] == [5, 5]


def test_checker_with_floating_anchor() -> None:
    rows = build_chain(6)[3:]
    checker = ChainChecker("audit", anchor_seq=None, anchor_hash=None)
    for seq, fields, prev, digest in rows:
        checker.feed(seq, fields, prev, digest)
    assert checker.report.ok
    assert checker.report.anchor_hash == rows[0][2]


def test_chain_module_needs_only_the_standard_library() -> None:
    code = ("import sys; import p2pwatch.storage.chain; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'trio')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
