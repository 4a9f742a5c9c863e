"""The SHA-256 hash chains of the evidence store, on the Python standard library alone.

This module imports nothing outside the standard library (no SQLAlchemy, nothing else from p2pwatch), so
the evidence verifier can use or copy it and recompute every hash a police recipient is asked to trust.
The definitions here are normative; ``docs/storage.md`` repeats them with a worked test vector.

Two chains live in one database: ``observations`` (peer observations, DESIGN.md principle 4) and ``audit``
(the audit log). Each row carries ``seq`` (1, 2, 3, … without gaps), ``prev_hash`` and ``row_hash``::

    canonical(fields) = UTF-8 of json.dumps(fields, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False, allow_nan=False)
    body_hash         = SHA-256(canonical(fields))                      (32 bytes)
    row_hash          = hex(SHA-256(bytes.fromhex(prev_hash) || body_hash))
    prev_hash(seq 1)  = GENESIS_HASH = "0" * 64;  prev_hash(seq n) = row_hash(seq n - 1)

All hex is lowercase. ``fields`` is a flat JSON object (the audit ``detail`` is the only nested value).
Observation fields (``kind`` = ``"observation"``)::

    seq          integer
    observed_at  "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always six fractional digits)
    torrent      the torrent's 20-byte DHT id as 40 hex (v1 infohash, or a v2 infohash truncated)
    addr         address_digest(addr_salt, ip, port, reporter), 64 hex (see below)
    level        integer 0..4 (DESIGN.md principle 4)
    source       "dht" | "tracker" | "pex" | "probe" | "announce"
    client       string or null (client name from the handshake)
    peer_id      40 hex or null
    have_fraction JSON number (a Python float, rounded to 6 decimals before storing) or null
    transcript   SHA-256 hex of the probe transcript's canonical JSON, or null

The peer address and the reporter (the DHT node or tracker that listed it) enter the chain only through a
salted digest, so the retention purge (p2pwatch.storage.retention) can erase them and the chain still
verifies::

    address_digest = hex(SHA-256(bytes.fromhex(addr_salt) || canonical([ip, port, reporter])))

``addr_salt`` is 16 random bytes per row (32 hex). While a row keeps its address, anyone holding ip, port,
reporter and salt can check the digest; the purge nulls all four, and without the salt the digest cannot be
brute-forced back to an address. ``ip`` is stored in ``ipaddress`` compressed form.

Audit fields (``kind`` = ``"audit"``): ``seq``, ``at`` (timestamp as above), ``actor``, ``action``,
``detail`` (a JSON object).

Splitting a row into ``body_hash`` and the link lets a bundle include rows of other cases as
``(seq, body_hash)`` only: the verifier still recomputes every link without seeing those rows' contents.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64
OBSERVATION_KIND = "observation"
AUDIT_KIND = "audit"
SALT_BYTES = 16

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: The string encoder ``json`` itself uses with ``ensure_ascii=False`` (the C one when available).
_encode_str = json.encoder.encode_basestring


def _json_str(value: str | None) -> str:
    return "null" if value is None else _encode_str(value)


def canonical_json(value: Any) -> str:
    """The canonical JSON text: sorted keys, no whitespace, non-ASCII kept as is, no NaN/Infinity."""
    return _ENCODER.encode(value)


def canonical_bytes(value: Any) -> bytes:
    """``canonical_json(value)`` encoded as UTF-8: the exact bytes that are hashed."""
    return _ENCODER.encode(value).encode("utf-8")


def body_hash(fields: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical serialization of a row's fields (32 raw bytes)."""
    return hashlib.sha256(canonical_bytes(dict(fields))).digest()


def link_hash(prev_hash: str, body: bytes) -> str:
    """``row_hash`` from the previous row's hash (hex) and this row's ``body_hash`` (raw bytes)."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def row_hash(fields: Mapping[str, Any], prev_hash: str) -> str:
    """The chain hash of one row: ``hex(SHA-256(bytes.fromhex(prev_hash) || SHA-256(canonical(fields))))``."""
    if len(prev_hash) != 64:
        raise ValueError("prev_hash must be 64 hex characters")
    return link_hash(prev_hash, body_hash(fields))


def address_digest(addr_salt: str, ip: str, port: int, reporter: str | None) -> str:
    """The salted digest of a peer address and its reporter that the chain covers instead of the address.

    ``hex(SHA-256(bytes.fromhex(addr_salt) || canonical_bytes([ip, port, reporter])))``; the JSON array is
    spelled out directly here (byte-identical, and faster than the general encoder).
    """
    return address_digest_bytes(bytes.fromhex(addr_salt), ip, port, reporter)


def address_digest_bytes(salt: bytes, ip: str, port: int, reporter: str | None) -> str:
    """``address_digest`` with the salt as raw bytes."""
    text = f"[{_encode_str(ip)},{int(port)},{_json_str(reporter)}]"
    return hashlib.sha256(salt + text.encode("utf-8")).hexdigest()


def format_timestamp(moment: datetime) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def quantize_fraction(value: float | None) -> float | None:
    """The stored (and hashed) form of ``have_fraction``: a float rounded to 6 decimals, or None."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("have_fraction must be finite (a number, not NaN or infinity)")
    return round(number, 6)


def observation_fields(
    *,
    seq: int,
    observed_at: datetime | str,
    torrent: str,
    addr: str,
    level: int,
    source: str,
    client: str | None,
    peer_id: str | None,
    have_fraction: float | None,
    transcript: str | None,
) -> dict[str, Any]:
    """The hashed fields of an observation row (see the module docstring)."""
    return {
        "kind": OBSERVATION_KIND,
        "seq": int(seq),
        "observed_at": observed_at if isinstance(observed_at, str) else format_timestamp(observed_at),
        "torrent": torrent,
        "addr": addr,
        "level": int(level),
        "source": source,
        "client": client,
        "peer_id": peer_id,
        "have_fraction": None if have_fraction is None else float(have_fraction),
        "transcript": transcript,
    }


def audit_fields(*, seq: int, at: datetime | str, actor: str, action: str,
                 detail: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed fields of an audit-log row."""
    return {
        "kind": AUDIT_KIND,
        "seq": int(seq),
        "at": at if isinstance(at, str) else format_timestamp(at),
        "actor": actor,
        "action": action,
        "detail": dict(detail),
    }


class SeqTemplate:
    """Canonical bytes of a row prepared before its ``seq`` is known (outside the chain-head lock).

    ``render(seq)`` returns exactly ``canonical_bytes(fields | {"seq": seq})``: sorted-key JSON of a flat
    object is the keys before ``"seq"``, then ``"seq":N``, then the keys after it.
    """

    __slots__ = ("_prefix", "_suffix")

    def __init__(self, fields_without_seq: Mapping[str, Any]) -> None:
        if "seq" in fields_without_seq:
            raise ValueError("the template must not contain seq")
        before = {k: v for k, v in fields_without_seq.items() if k < "seq"}
        after = {k: v for k, v in fields_without_seq.items() if k > "seq"}
        head = _ENCODER.encode(before)[:-1] + ("," if before else "") + '"seq":'
        tail = ("," + _ENCODER.encode(after)[1:]) if after else "}"
        self._prefix = head.encode("utf-8")
        self._suffix = tail.encode("utf-8")

    def render(self, seq: int) -> bytes:
        return self._prefix + str(int(seq)).encode("ascii") + self._suffix


def observation_template(
    *,
    observed_at: str,
    torrent: str,
    addr: str,
    level: int,
    source: str,
    client: str | None,
    peer_id: str | None,
    have_fraction: float | None,
    transcript: str | None,
) -> tuple[bytes, bytes]:
    """``(prefix, suffix)`` such that ``prefix + str(seq) + suffix`` is the row's canonical bytes.

    A fast path for the writer, byte-identical to ``canonical_bytes(observation_fields(...))`` (the tests
    check this on random inputs): the keys are fixed, so the sorted object is spelled out directly.
    """
    fraction = "null" if have_fraction is None else float.__repr__(float(have_fraction))
    if fraction in ("nan", "inf", "-inf"):
        raise ValueError("have_fraction must be finite (a number, not NaN or infinity)")
    prefix = (f'{{"addr":{_encode_str(addr)},"client":{_json_str(client)},"have_fraction":{fraction},'
              f'"kind":"{OBSERVATION_KIND}","level":{int(level)},"observed_at":{_encode_str(observed_at)},'
              f'"peer_id":{_json_str(peer_id)},"seq":')
    suffix = (f',"source":{_encode_str(source)},"torrent":{_encode_str(torrent)},'
              f'"transcript":{_json_str(transcript)}}}')
    return prefix.encode("utf-8"), suffix.encode("utf-8")


@dataclass(frozen=True)
class ChainProblem:
    """One row that does not verify, and why."""

    seq: int
    reason: str


@dataclass
class ChainReport:
    """What ``verify_chain`` checked. ``ok`` is true only when every check held."""

    chain: str
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    anchor_hash: str = GENESIS_HASH
    last_hash: str = GENESIS_HASH
    purged: int = 0
    head_seq: int | None = None
    head_hash: str | None = None
    problems: list[ChainProblem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def summary(self) -> str:
        if self.checked == 0 and self.ok:
            return f"{self.chain}: empty chain"
        state = "intact" if self.ok else f"{self.problem_count} problem(s), first at seq {self.problems[0].seq}"
        return (f"{self.chain}: {self.checked} rows, seq {self.first_seq}..{self.last_seq}, {state}, "
                f"last hash {self.last_hash}")


class ChainChecker:
    """Incremental, storage-independent verification of a chain fed row by row in ``seq`` order.

    Checks per row: ``seq`` follows the previous one without a gap, ``prev_hash`` equals the previous row's
    ``row_hash`` (or the anchor for the first row), the fields carry the same ``seq``, and the recomputed
    ``row_hash`` equals the stored one. After a mismatch it continues from the stored hash, so each
    altered row is reported once instead of every row after it.
    """

    def __init__(self, chain: str, *, anchor_seq: int | None = 0, anchor_hash: str | None = GENESIS_HASH,
                 max_problems: int = 100) -> None:
        self.report = ChainReport(chain=chain, anchor_hash=anchor_hash or GENESIS_HASH,
                                  last_hash=anchor_hash or GENESIS_HASH)
        self._expect_seq = None if anchor_seq is None else anchor_seq + 1
        self._expect_prev = anchor_hash
        self._max_problems = max_problems

    def problem(self, seq: int, reason: str) -> None:
        self.report.problem_count += 1
        if len(self.report.problems) < self._max_problems:
            self.report.problems.append(ChainProblem(seq, reason))

    def feed(self, seq: int, fields: Mapping[str, Any], prev_hash: str, stored_hash: str) -> None:
        """Check one row given its hashed fields."""
        if fields.get("seq") != seq:
            self.problem(seq, "hashed fields carry a different seq")
        try:
            canonical = canonical_bytes(dict(fields))
        except (ValueError, TypeError) as exc:
            self.problem(seq, f"row cannot be hashed: {exc}")
            canonical = None
        self.feed_canonical(seq, canonical, prev_hash, stored_hash)

    def feed_canonical(self, seq: int, canonical: bytes | None, prev_hash: str, stored_hash: str) -> None:
        """Check one row given the canonical bytes of its fields (None: already reported as unhashable)."""
        report = self.report
        if report.first_seq is None:
            report.first_seq = seq
            if self._expect_prev is None:  # anchored on the first row's own prev_hash
                report.anchor_hash = prev_hash
                self._expect_prev = prev_hash
        if self._expect_seq is not None and seq != self._expect_seq:
            self.problem(seq, f"sequence gap: expected seq {self._expect_seq}")
        if prev_hash != self._expect_prev:
            self.problem(seq, "prev_hash does not match the previous row's hash")
        if canonical is not None:
            try:
                recomputed = link_hash(prev_hash, hashlib.sha256(canonical).digest())
            except ValueError as exc:
                self.problem(seq, f"prev_hash is not hex: {exc}")
            else:
                if recomputed != stored_hash:
                    self.problem(seq, "row_hash does not match the row's contents")
        report.checked += 1
        report.last_seq = seq
        report.last_hash = stored_hash
        self._expect_seq = seq + 1
        self._expect_prev = stored_hash
