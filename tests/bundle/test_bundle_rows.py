"""p2pwatch.bundle.rows: a row given as a tuple (the exporter's fast path) gives the line a mapping gives, and
a tuple that does not verify is refused like a mapping."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evidence.proofs import TorrentIndex
from evidence.torrent import parse_torrent
from p2pwatch.bundle.rows import ROW_FIELDS, Observations
from p2pwatch.errors import BundleError
from p2pwatch.storage import chain
from p2pwatch.torrent.maker import make_v1_torrent

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


def _index() -> tuple[TorrentIndex, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.bin"
        path.write_bytes(b"\x01" * 40000)
        raw = make_v1_torrent("x.bin", [("x.bin", path)], piece_length=16384, single_file=True)
    torrent = parse_torrent(raw)
    key = torrent.infohash_v1.hex() if torrent.infohash_v1 else ""
    index = TorrentIndex()
    index.add(key, torrent)
    return index, key


INDEX, TORRENT = _index()


def chain_rows(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exported rows (mappings) hashed by the store's definition; a spec with ``redacted`` becomes one."""
    rows, prev = [], chain.GENESIS_HASH
    for seq, spec in enumerate(specs, 1):
        salt = spec.get("salt", hashlib.sha256(b"%d" % seq).hexdigest()[:32])
        ip, port, reporter = spec.get("ip", "198.51.100.1"), spec.get("port", 6881), spec.get("reporter")
        fields = chain.observation_fields(
            seq=seq, observed_at=spec.get("at", f"2025-01-01T00:00:{seq % 60:02d}.000001Z"), torrent=TORRENT,
            addr=chain.address_digest(salt, ip, port, reporter), level=spec.get("level", 0),
            source=spec.get("source", "dht"), client=spec.get("client"), peer_id=spec.get("peer_id"),
            have_fraction=spec.get("have"), transcript=spec.get("transcript"))
        digest = chain.row_hash(fields, prev)
        if spec.get("redacted"):
            rows.append({"seq": seq, "redacted": True, "body_hash": chain.body_hash(fields).hex()})
        else:
            disclosed = (None, None, None, None) if spec.get("purged") else (ip, port, reporter, salt)
            rows.append({**fields, "prev_hash": prev, "row_hash": digest,
                         **dict(zip(("ip", "port", "reporter", "addr_salt"), disclosed, strict=True))})
        prev = digest
    return rows


def as_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["seq"], row["body_hash"]) if row.get("redacted") else tuple(row[k] for k in ROW_FIELDS)


def lines(rows: list[Any]) -> tuple[bytes, Observations]:
    obs, out = Observations(INDEX, None), []
    obs.stream(rows, out.append)
    return b"".join(out), obs


@given(st.lists(st.fixed_dictionaries({}, optional={
    "client": st.none() | TEXT, "reporter": st.none() | TEXT, "ip": TEXT, "port": st.integers(0, 65535),
    "level": st.integers(0, 4), "source": TEXT, "peer_id": st.none() | TEXT, "transcript": st.none() | TEXT,
    "have": st.none() | st.floats(allow_nan=False, allow_infinity=False), "purged": st.booleans(),
    "redacted": st.booleans(), "at": TEXT}), min_size=1, max_size=8))
def test_tuples_give_the_lines_mappings_give(specs: list[dict[str, Any]]) -> None:
    specs[0]["redacted"] = False  # a segment opening with a redacted row needs an anchor
    rows = chain_rows(specs)
    by_mapping, a = lines(rows)
    by_tuple, b = lines([as_tuple(r) for r in rows])
    mixed, c = lines([as_tuple(r) if i % 2 else r for i, r in enumerate(rows)])
    assert by_tuple == by_mapping == mixed
    for obs in (b, c):
        assert (obs.rows, obs.redacted, obs.levels, obs.peers, obs.prev, obs.first_prev, obs.last_seq) == \
            (a.rows, a.redacted, a.levels, a.peers, a.prev, a.first_prev, a.last_seq)


def _specs() -> list[dict[str, Any]]:
    return [{"level": 3, "client": "c\u00e9", "have": 0.5, "transcript": "ab" * 32}, {"reporter": "192.0.2.1:1"},
            {"redacted": True}, {"purged": True}, {}]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("level", 2, "seq 2: row_hash does not match"),
    ("level", 5, "seq 2: level must be an integer 0..4"),
    ("level", True, "seq 2: level must be an integer"),
    ("prev_hash", "00" * 32, "seq 2: prev_hash is not the hash"),
    ("row_hash", "00" * 32, "seq 2: row_hash does not match"),
    ("ip", "198.51.100.9", "seq 2: the address does not match"),
    ("reporter", None, "seq 2: the address does not match"),
    ("addr_salt", lambda v: v.upper(), "seq 2: the address does not match"),
    ("addr_salt", lambda v: v[:30], "seq 2: the address does not match"),
    ("port", None, "seq 2: the address does not match"),
    ("have_fraction", float("nan"), "seq 2: have_fraction must be finite"),
    ("client", 7, "malformed observation row after seq 1"),
    ("seq", 3, "seq 3 does not follow 1"),
])
def test_a_tuple_that_does_not_verify_is_refused(name: str, value: Any, message: str) -> None:
    rows: list[Any] = [as_tuple(r) for r in chain_rows(_specs())]
    second = list(rows[1])
    i = ROW_FIELDS.index(name)
    second[i] = value(second[i]) if callable(value) else value
    rows[1] = tuple(second)
    with pytest.raises(BundleError, match=message):
        lines(rows)


def test_redacted_tuples_and_order_are_checked() -> None:
    rows = [as_tuple(r) for r in chain_rows(_specs())]
    with pytest.raises(BundleError, match="does not follow"):
        lines([rows[0], rows[2]])
    with pytest.raises(BundleError, match="first_prev_hash"):
        lines(rows[2:])
    bad = (rows[2][0], rows[2][1].upper())
    with pytest.raises(BundleError, match="body_hash"):
        lines([rows[0], rows[1], bad])
    assert hashlib.sha256(lines(rows)[0]).hexdigest() == hashlib.sha256(lines(chain_rows(_specs()))[0]).hexdigest()


def test_the_exporter_selects_the_row_tuple_order() -> None:
    from p2pwatch.storage.reading import EXPORT_COLUMNS

    assert (*ROW_FIELDS, "torrent_id") == EXPORT_COLUMNS
