"""Hash lists from elsewhere (docs/fingerprint-format.md): CSV, JSON lines, a JSON array of objects, or
bare hex hashes one per line, each read into :class:`HashListItem` values (whatever md5/sha1/sha256/pdq/phash
hashes, size and name an item gives). Split out of :mod:`p2pwatch.match.fingerprint`, which re-exports these names.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from p2pwatch import limits
from p2pwatch.errors import FingerprintError, LocalProtocolError
from p2pwatch.match.local_files import check_regular_file

__all__ = ["HashListItem", "import_hash_list", "parse_hex"]



def parse_hex(text: Any, digits: int) -> str:
    """``text`` lower-cased when it is exactly ``digits`` hex digits; ValueError otherwise."""
    if not isinstance(text, str) or len(text) != digits:
        raise ValueError(f"expected {digits} hex digits, got {text!r}")
    bytes.fromhex(text)
    return text.lower()


_HASH_DIGITS = {"md5": 32, "sha1": 40, "sha256": 64, "pdq": 64, "phash": 16}
_COLUMN_ALIASES = {
    "md5": "md5", "md5hash": "md5", "sha1": "sha1", "sha1hash": "sha1", "sha256": "sha256",
    "sha256hash": "sha256", "pdq": "pdq", "pdqhash": "pdq", "phash": "phash", "size": "size",
    "bytes": "size", "filesize": "size", "length": "size", "name": "name", "filename": "name", "file": "name",
}


@dataclass(frozen=True)
class HashListItem:
    """One item of an imported hash list: whatever hashes it gives (hex, lower case), where it came from."""

    source: str  # "list.csv:12"
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    phash: str | None = None
    size: int | None = None
    name: str | None = None

    @property
    def fingerprint_id(self) -> str:
        """The strongest id the item has: the SHA-256, else ``sha1:``/``md5:``/``pdq:``/``phash:`` hex."""
        if self.sha256:
            return self.sha256
        for kind in ("sha1", "md5", "pdq", "phash"):
            value = getattr(self, kind)
            if value:
                return f"{kind}:{value}"
        raise LocalProtocolError("a hash list item without a hash")  # pragma: no cover - refused on import


def _item(fields: Mapping[str, Any], where: str) -> HashListItem:
    values: dict[str, Any] = {}
    for raw_key, raw in fields.items():
        key = _COLUMN_ALIASES.get("".join(ch for ch in str(raw_key).lower() if ch.isalnum()))
        if key is None or raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        text = str(raw).strip()
        if key in _HASH_DIGITS:
            try:
                values[key] = parse_hex(text, _HASH_DIGITS[key])
            except ValueError:
                raise FingerprintError(f"{where}: {key} must be {_HASH_DIGITS[key]} hex digits, "
                                       f"not {text[:80]!r}") from None
        elif key == "size":
            if not text.isdigit():
                raise FingerprintError(f"{where}: size must be a whole number of bytes, not {text[:40]!r}")
            values["size"] = int(text)
        else:
            values["name"] = os.path.basename(text)
    if not any(k in values for k in _HASH_DIGITS):
        raise FingerprintError(f"{where}: no md5, sha1, sha256, pdq or phash value")
    return HashListItem(source=where, **values)


def _bare_item(text: str, where: str) -> HashListItem:
    kind = {32: "md5", 40: "sha1", 64: "sha256"}.get(len(text))
    if kind is None:
        raise FingerprintError(f"{where}: {text[:80]!r} is not an MD5, SHA-1 or SHA-256 in hex (for PDQ or "
                               f"several hashes per item, use CSV with a header row)")
    return _item({kind: text}, where)


def import_hash_list(path: str | os.PathLike[str]) -> list[HashListItem]:
    """Read a hash list (accepted forms: docs/fingerprint-format.md): CSV (``,`` ``;`` or tab) with a header
    naming md5/sha1/sha256/pdq/phash/size/name columns, JSON lines, a JSON array of objects, or bare hex
    hashes one per line (typed by length). ``#`` lines and blank lines are skipped in text forms."""
    import csv
    import io


    name = os.fspath(path)
    check_regular_file(name)
    try:
        with open(name, encoding="utf-8-sig") as handle:
            text = handle.read(limits.MAX_FINGERPRINT_FILE + 1)
    except UnicodeDecodeError:
        raise FingerprintError(f"{name}: a hash list must be UTF-8 text") from None
    except OSError as exc:
        raise FingerprintError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(text) > limits.MAX_FINGERPRINT_FILE:
        raise FingerprintError(f"{name}: larger than {limits.MAX_FINGERPRINT_FILE} bytes")
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise FingerprintError(f"{name}: no items")
    for n, line in numbered:
        if len(line) > limits.MAX_HASH_LIST_LINE:
            raise FingerprintError(f"{name}:{n}: line longer than {limits.MAX_HASH_LIST_LINE} characters")
    first = numbered[0][1].lstrip()
    if first.startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FingerprintError(f"{name}: not valid JSON: {exc}") from None
        if not isinstance(doc, list) or not all(isinstance(d, dict) for d in doc):
            raise FingerprintError(f"{name}: a JSON hash list must be an array of objects")
        return [_item(d, f"{name}[{i}]") for i, d in enumerate(doc)]
    if first.startswith("{"):
        items = []
        for n, line in numbered:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FingerprintError(f"{name}:{n}: not a JSON object: {exc}") from None
            if not isinstance(obj, dict):
                raise FingerprintError(f"{name}:{n}: not a JSON object")
            items.append(_item(obj, f"{name}:{n}"))
        return items
    delimiter = next((d for d in (",", "\t", ";") if d in first), None)
    bare = first.strip()
    if delimiter is None and len(bare) in (32, 40, 64) and all(c in string.hexdigits for c in bare):
        return [_bare_item(line.strip(), f"{name}:{n}") for n, line in numbered]
    rows = list(csv.reader(io.StringIO("\n".join(line for _, line in numbered)), delimiter=delimiter or ","))
    header = [h.strip() for h in rows[0]]
    keys = {_COLUMN_ALIASES.get("".join(ch for ch in h.lower() if ch.isalnum())) for h in header}
    if not keys & set(_HASH_DIGITS):
        raise FingerprintError(f"{name}:{numbered[0][0]}: the CSV header names no md5, sha1, sha256, pdq or "
                               f"phash column (got {', '.join(header)[:120]})")
    items = []
    for (n, _), row in zip(numbered[1:], rows[1:], strict=False):
        if len(row) > len(header):
            raise FingerprintError(f"{name}:{n}: {len(row)} fields, the header has {len(header)}")
        items.append(_item(dict(zip(header, row, strict=False)), f"{name}:{n}"))
    return items
