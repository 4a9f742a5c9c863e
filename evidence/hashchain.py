"""The observation hash chain, re-computed on the standard library alone.

This is an independent copy of the normative definition in p2pwatch's store (``p2pwatch/storage/chain.py``,
``docs/storage.md``); a test checks that both give the same hashes. The evidence package must not import
p2pwatch (police have no p2pwatch)::

    canonical(fields) = UTF-8 of json.dumps(fields, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False, allow_nan=False)
    body_hash         = SHA-256(canonical(fields))                         (32 bytes)
    row_hash          = hex(SHA-256(bytes.fromhex(prev_hash) || body_hash))
    prev_hash(seq 1)  = GENESIS_HASH = "0" * 64;  prev_hash(seq n) = row_hash(seq n - 1)

Observation fields: ``kind`` ("observation"), ``seq``, ``observed_at``, ``torrent`` (40 hex DHT id),
``addr`` (salted address digest), ``level``, ``source``, ``client``, ``peer_id``, ``have_fraction``,
``transcript`` (SHA-256 hex of the transcript's canonical JSON, or null). The peer address enters the chain
only through ``addr = hex(SHA-256(bytes.fromhex(addr_salt) || canonical([ip, port, reporter])))``, so the
store can purge old addresses and the chain still verifies.

An exported row (observations.jsonl) is the hashed fields plus the keys in :data:`NOT_HASHED`: ``prev_hash``,
``row_hash`` and the disclosed address ``ip``, ``port``, ``reporter``, ``addr_salt`` (all four null when
purged). A row of another case inside the segment is exported as a *redacted row*
``{"seq": n, "redacted": true, "body_hash": hex}``: its contents stay out of the bundle, and every link is
still re-computed. :class:`ChainChecker` checks a segment row by row in bounded memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

GENESIS_HASH = "0" * 64
#: Keys of an exported observation row that its hash does not cover.
NOT_HASHED = frozenset({"prev_hash", "row_hash", "ip", "port", "reporter", "addr_salt"})
REDACTED_KEYS = frozenset({"seq", "redacted", "body_hash"})
_UNHASHED = ("prev_hash", "row_hash", "ip", "port", "reporter", "addr_salt")
#: Name of this chain definition, recorded in chain.json.
ALGORITHM = "p2pwatch-chain-v1: row_hash = sha256(prev_hash || sha256(canonical_json(fields)))"
_sha256 = hashlib.sha256
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_HEX = re.compile("[0-9a-f]*")


def _default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _fast_encoder() -> Any:
    """The json module's C encoder, built once (``JSONEncoder.encode`` builds one per call, which costs more
    than the encoding of a small row). Used only when it gives exactly what ``_ENCODER`` gives."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encoder = make(None, _default, json.encoder.encode_basestring, None, ":", ",", True, False, False)
        probe = {"b": [1, 2.5, None, "\u00e9\"\n", 10**20], "a": {"y": True, "x": -0.0}, "": []}
        if "".join(encoder(probe, 0)) != _ENCODER.encode(probe):
            return None
    except Exception:
        return None
    return encoder


_FAST = _fast_encoder()
_string = json.encoder.encode_basestring  # JSON string literal, non-ASCII kept (as ensure_ascii=False)


def canonical_bytes(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not ASCII-escaped), no NaN or Infinity."""
    if _FAST is not None:
        return "".join(_FAST(value, 0)).encode("utf-8")
    return _ENCODER.encode(value).encode("utf-8")


def body_hash(fields: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical_bytes(dict(fields))).digest()


def link_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def row_hash(fields: Mapping[str, Any], prev_hash: str) -> str:
    """The chain hash of one row from its fields and the previous row's hash (hex)."""
    return link_hash(prev_hash, body_hash(fields))


def address_digest(addr_salt: str, ip: str, port: int, reporter: str | None) -> str:
    if type(ip) is str and type(port) is int and (reporter is None or type(reporter) is str):
        text = f"[{_string(ip)},{port},{'null' if reporter is None else _string(reporter)}]"  # = canonical
        return hashlib.sha256(bytes.fromhex(addr_salt) + text.encode("utf-8")).hexdigest()
    return hashlib.sha256(bytes.fromhex(addr_salt) + canonical_bytes([ip, port, reporter])).hexdigest()


def hashed_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an exported row that its hash covers."""
    return {k: v for k, v in row.items() if k not in NOT_HASHED}


def is_hash(value: Any, size: int = 32) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == 2 * size and _HEX.fullmatch(value) is not None


class ChainError(ValueError):
    """A row breaks the chain."""


@dataclass
class ChainChecker:
    """Feed exported rows in order; raises :class:`ChainError` at the first row that breaks the chain.

    Checks: sequence numbers are consecutive; each full row's ``prev_hash`` is the previous row's hash and
    its ``row_hash`` re-computes from its fields; its disclosed address matches its ``addr`` digest (or is
    wholly purged); each redacted row links through its ``body_hash``. ``first_prev_hash``,
    ``last_row_hash`` and ``last_seq`` are the anchors to compare with chain.json.
    """

    rows: int = 0
    redacted: int = 0
    purged: int = 0
    first_seq: int | None = None
    first_prev_hash: str | None = None
    last_seq: int | None = None
    last_row_hash: str | None = None
    _line: int = field(default=0, repr=False)

    def start(self, prev_hash: str) -> None:
        """Anchor the segment when it opens with a redacted row (its prev_hash comes from chain.json)."""
        if not is_hash(prev_hash):
            raise ChainError("chain.json first_prev_hash must be 64 lowercase hex digits")
        self.first_prev_hash = prev_hash

    def feed(self, row: Any) -> dict[str, Any] | None:
        """Check one row. A case row loses its unhashed keys (:data:`NOT_HASHED`), which are returned (so
        ``row`` is left holding exactly the hashed fields); a redacted row returns None."""
        self._line += 1
        if type(row) is not dict:
            raise ChainError(f"line {self._line}: not a JSON object")
        seq = row.get("seq")
        if type(seq) is not int or seq < 1:
            raise ChainError(f"line {self._line}: 'seq' must be a positive integer")
        last = self.last_seq
        if last is not None and seq != last + 1:
            raise ChainError(f"line {self._line} (seq {seq}): does not follow seq {last} (a row is missing or "
                             "out of order)")
        expected_prev = self.last_row_hash if last is not None else self.first_prev_hash
        if row.get("redacted") is True:
            if row.keys() != REDACTED_KEYS or not is_hash(row["body_hash"]):
                raise ChainError(f"line {self._line} (seq {seq}): a redacted row is exactly seq, redacted, "
                                 "body_hash (64 hex)")
            if expected_prev is None:
                raise ChainError(f"line {self._line}: the segment opens with a redacted row but has no "
                                 "first_prev_hash")
            self.redacted += 1
            self._advance(seq, link_hash(expected_prev, bytes.fromhex(row["body_hash"])))
            return None
        extra = {k: row.pop(k, None) for k in _UNHASHED}
        prev, digest = extra["prev_hash"], extra["row_hash"]
        if expected_prev is None:
            if not is_hash(prev):
                raise ChainError(f"line {self._line} (seq {seq}): prev_hash must be 64 lowercase hex digits")
            self.first_prev_hash = prev
        elif prev != expected_prev:
            raise ChainError(f"line {self._line} (seq {seq}): prev_hash is not the hash of the row before")
        if "redacted" in row:
            raise ChainError(f"line {self._line} (seq {seq}): 'redacted' must be true or absent")
        try:
            recomputed = link_hash(prev, _sha256(canonical_bytes(row)).digest())
        except ValueError as exc:
            raise ChainError(f"line {self._line} (seq {seq}): cannot be hashed ({exc})") from None
        if recomputed != digest:
            raise ChainError(f"line {self._line} (seq {seq}): row_hash does not match the row's fields")
        ip, port, reporter, salt = extra["ip"], extra["port"], extra["reporter"], extra["addr_salt"]
        if ip is None:
            if port is not None or reporter is not None or salt is not None:
                raise ChainError(f"line {self._line} (seq {seq}): partly purged address")
            self.purged += 1
        elif type(ip) is not str or type(port) is not int or not is_hash(salt, 16):
            raise ChainError(f"line {self._line} (seq {seq}): a disclosed address needs ip, port and a 32-hex "
                             "addr_salt")
        elif address_digest(salt, ip, port, reporter) != row.get("addr"):
            raise ChainError(f"line {self._line} (seq {seq}): ip, port and reporter do not match the hashed "
                             "address digest")
        self.rows += 1
        self._advance(seq, recomputed)
        return extra

    def _advance(self, seq: int, digest: str) -> None:
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq, self.last_row_hash = seq, digest
