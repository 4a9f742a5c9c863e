"""The observation hash chain, re-computed on the standard library alone.

Definition (shared with p2pwatch's store, ``p2pwatch/storage/chain.py``; both must stay byte-identical)::

    canonical_json(fields) = json.dumps(fields, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False).encode("utf-8")
    row_hash = sha256(canonical_json(fields) + prev_hash_hex.encode("ascii")).hexdigest()

where ``fields`` is the row without the keys in :data:`NOT_HASHED` (``prev_hash`` and ``row_hash``), and
the first row of the whole chain has ``prev_hash`` = :data:`GENESIS_HASH`.

A bundle carries the *segment* of the chain that belongs to one case. Rows of other cases that lie between
its rows are replaced by *redacted runs*: ``{"redacted": true, "seq": first, "last_seq": last,
"prev_hash": ..., "row_hash": ...}``, the hash before the run and the hash of the run's last row. A run links
the segment together but cannot be re-computed (its rows are not in the bundle), so it proves only that the
rows shown sit in one chain, at the positions shown. :class:`ChainChecker` checks a segment row by row in
bounded memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS_HASH = "0" * 64
#: Keys of an exported row that are not part of the hashed fields.
NOT_HASHED = ("prev_hash", "row_hash")
#: Name of this chain definition, recorded in chain.json.
ALGORITHM = "sha256(canonical-json(fields) || prev_hash-hex), p2pwatch chain v1"
_HEX = frozenset("0123456789abcdef")


def canonical_json(fields: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not ASCII-escaped)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def row_hash(fields: Mapping[str, Any], prev_hash: str) -> str:
    """The hash of one row from its fields and the previous row's hash (hex)."""
    return hashlib.sha256(canonical_json(fields) + prev_hash.encode("ascii")).hexdigest()


def hashed_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an exported row that its hash covers."""
    return {k: v for k, v in row.items() if k not in NOT_HASHED}


def is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


class ChainError(ValueError):
    """A row breaks the chain."""


@dataclass
class ChainChecker:
    """Feed exported rows in order; raises :class:`ChainError` at the first row that breaks the chain.

    Checks: each row's ``prev_hash`` is the previous row's ``row_hash``; sequence numbers are consecutive;
    each full row's hash re-computes; redacted runs are well formed. ``first_prev_hash``, ``last_row_hash``
    and ``last_seq`` are the anchors to compare with chain.json.
    """

    rows: int = 0
    redacted_runs: int = 0
    redacted_rows: int = 0
    first_seq: int | None = None
    first_prev_hash: str | None = None
    last_seq: int | None = None
    last_row_hash: str | None = None
    _line: int = field(default=0, repr=False)

    def feed(self, row: Any) -> bool:
        """Check one row; return True for a full (re-computed) row, False for a redacted run."""
        self._line += 1
        where = f"row {self._line}"
        if not isinstance(row, dict):
            raise ChainError(f"{where}: not a JSON object")
        seq, prev, digest = row.get("seq"), row.get("prev_hash"), row.get("row_hash")
        if type(seq) is not int or seq < 1:
            raise ChainError(f"{where}: 'seq' must be a positive integer")
        if not is_hash(prev) or not is_hash(digest):
            raise ChainError(f"{where} (seq {seq}): prev_hash and row_hash must be 64 lowercase hex digits")
        if self.last_seq is None:
            self.first_seq, self.first_prev_hash = seq, prev
        else:
            if seq != self.last_seq + 1:
                raise ChainError(f"{where}: seq {seq} does not follow seq {self.last_seq} (a row is missing)")
            if prev != self.last_row_hash:
                raise ChainError(f"{where} (seq {seq}): prev_hash is not the row_hash of seq {self.last_seq}")
        full = row.get("redacted") is not True
        if full:
            if "redacted" in row or "last_seq" in row:
                raise ChainError(f"{where} (seq {seq}): 'redacted'/'last_seq' are reserved for redacted runs")
            if row_hash(hashed_fields(row), prev) != digest:
                raise ChainError(f"{where} (seq {seq}): row_hash does not match the row's fields")
            self.rows += 1
            last = seq
        else:
            last = row.get("last_seq")
            if set(row) != {"redacted", "seq", "last_seq", "prev_hash", "row_hash"}:
                raise ChainError(f"{where}: a redacted run has exactly redacted, seq, last_seq, prev_hash, row_hash")
            if type(last) is not int or last < seq:
                raise ChainError(f"{where}: a redacted run needs last_seq >= seq")
            self.redacted_runs += 1
            self.redacted_rows += last - seq + 1
        self.last_seq, self.last_row_hash = last, digest
        return full
