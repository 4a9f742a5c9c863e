"""A small, strict bencode decoder (BEP 3) on the Python standard library, for reading .torrent files.

Strings stay ``bytes``; integers are canonical (no leading zeros, no ``-0``); dictionary keys must be byte
strings in strictly increasing order (BEP 3 requires sorted keys, and a verifier has no reason to accept a
torrent that no conforming client would write); nothing may follow the top-level value. Nesting depth and
input size are bounded before anything is allocated. :func:`decode_with_span` also returns where a given
top-level key's value lies, so the info dict is hashed exactly as it appears in the file, never re-encoded.

Departure: none from BEP 3; stricter than most clients (they tolerate unsorted keys).
"""

from __future__ import annotations

from typing import Any

#: Largest .torrent this verifier reads (the bundle writer refuses larger ones too).
MAX_INPUT = 64 * 1024 * 1024
#: Deepest nesting of lists and dicts accepted.
MAX_DEPTH = 64


class BencodeError(ValueError):
    """The input is not strict, canonical bencoding."""


def _int_until(data: bytes, pos: int, stop: int) -> tuple[int, int]:
    """Parse the canonical decimal integer in ``data[pos:end]`` where ``data[end] == stop``."""
    end = data.find(bytes((stop,)), pos)
    if end < 0 or end - pos > 21:
        raise BencodeError(f"unterminated or oversized integer at byte {pos}")
    text = data[pos:end]
    negative = text.startswith(b"-")
    digits = text[1:] if negative else text
    if not digits or not digits.isdigit() or (digits.startswith(b"0") and (len(digits) > 1 or negative)):
        raise BencodeError(f"non-canonical integer {text[:24]!r} at byte {pos}")
    return int(text), end + 1


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise BencodeError("input ends inside a value")
    lead = data[pos]
    if lead == 0x69:  # i
        return _int_until(data, pos + 1, 0x65)
    if 0x30 <= lead <= 0x39:
        length, start = _int_until(data, pos, 0x3A)
        if length < 0 or start + length > len(data):
            raise BencodeError(f"string of {length} bytes at byte {pos} runs past the end of the input")
        return data[start : start + length], start + length
    if depth >= MAX_DEPTH:
        raise BencodeError(f"nesting deeper than {MAX_DEPTH}")
    if lead == 0x6C:  # l
        items: list[Any] = []
        pos += 1
        while pos < len(data) and data[pos] != 0x65:
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        if pos >= len(data):
            raise BencodeError("unterminated list")
        return items, pos + 1
    if lead == 0x64:  # d
        result: dict[bytes, Any] = {}
        previous: bytes | None = None
        pos += 1
        while pos < len(data) and data[pos] != 0x65:
            if not 0x30 <= data[pos] <= 0x39:
                raise BencodeError(f"dictionary key at byte {pos} is not a string")
            key, pos = _decode(data, pos, depth + 1)
            if previous is not None and key <= previous:
                raise BencodeError(f"dictionary keys unsorted or repeated at {key[:40]!r}")
            previous = key
            result[key], pos = _decode(data, pos, depth + 1)
        if pos >= len(data):
            raise BencodeError("unterminated dictionary")
        return result, pos + 1
    raise BencodeError(f"unexpected byte {lead:#04x} at byte {pos}")


def decode(data: bytes) -> Any:
    """Decode one bencoded value that spans all of ``data``."""
    value, _ = decode_with_span(data, b"")
    return value


def decode_with_span(data: bytes, key: bytes) -> tuple[Any, tuple[int, int] | None]:
    """Decode ``data``; when it is a dict holding ``key``, also return ``(start, end)`` of that key's
    value in ``data`` (the raw bytes a client hashes for the info dict)."""
    if not isinstance(data, bytes):
        raise BencodeError("bencoded input must be bytes")
    if len(data) > MAX_INPUT:
        raise BencodeError(f"input of {len(data)} bytes exceeds {MAX_INPUT}")
    span: tuple[int, int] | None = None
    if key and data[:1] == b"d":
        # The top-level dict is decoded here, key by key, noting where the key's value lies (each value
        # decoded once; the checks and messages are those of a walk before a whole decode).
        top: dict[bytes, Any] = {}
        pos, previous = 1, None
        while pos < len(data) and data[pos] != 0x65:
            name, pos = _decode(data, pos, 1)
            if not isinstance(name, bytes) or (previous is not None and name <= previous):
                raise BencodeError("top-level dictionary keys unsorted, repeated or not strings")
            previous = name
            start = pos
            top[name], pos = _decode(data, pos, 1)
            if name == key:
                span = (start, pos)
        if pos >= len(data):
            raise BencodeError("unterminated dictionary")
        value, end = top, pos + 1
    else:
        value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes follow the bencoded value")
    return value, span
