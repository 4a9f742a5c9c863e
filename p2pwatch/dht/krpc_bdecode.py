"""A dedicated, strict bencode decoder (BEP 3) for KRPC datagrams (BEP 5): the DHT's hot path.

:func:`p2pwatch.bencoding.decode` (bencode.py underneath) costs about a third of the time a node spends on
one query; a datagram is small (at most ``limits.MAX_DATAGRAM`` bytes) and shallow (at most
``limits.MAX_KRPC_DEPTH`` levels), so one flat loop without recursion, keyword arguments or per-token
slicing for dispatch does the same work several times faster.

Contract, checked by the test suite with hypothesis against ``bencoding.decode`` (bencode.py with bytes
everywhere) on generated values and on mutated byte strings:

* every input this decoder accepts, bencode.py accepts too, and both return the same value (strings stay
  ``bytes``, dicts are plain ``dict``, lists ``list``); unsorted and duplicate dict keys are accepted as
  bencode.py accepts them (the last duplicate wins);
* every input bencode.py rejects, this decoder rejects, with :class:`~p2pwatch.errors.DecodeError`;
* departure, on purpose: this decoder also rejects the *non-canonical* number spellings that bencode.py
  lets through because it hands the digits to Python's ``int()``: whitespace, ``+`` or ``_`` in an integer
  or a string length (``i 1e``, ``i+1e``, ``1_0:``), and dict keys whose length is not plain digits
  (``d-0:i1ee``, which bencode.py reads as the key ``b""``). No conforming KRPC implementation writes them.

Limits are those :mod:`p2pwatch.dht.krpc` passed to ``bencoding.decode``: input size and nesting depth
(checked before anything is allocated for a container); a string length is checked against the bytes
that remain before the string is sliced. Trailing bytes after the value are an error.
"""

from __future__ import annotations

from typing import Any

from p2pwatch import limits
from p2pwatch.errors import DecodeError

__all__ = ["decode"]

_E = 0x65  # e
_I = 0x69  # i
_L = 0x6C  # l
_D = 0x64  # d
_COLON = 0x3A
_ZERO = 0x30
_NINE = 0x39
# a length with more digits than this cannot fit in a datagram; the colon must come within it
_MAX_LENGTH_DIGITS = len(str(limits.MAX_DATAGRAM)) + 1


def _bad(text: str, pos: int) -> DecodeError:
    return DecodeError(f"malformed bencoded datagram: {text} at offset {pos}")


def _length(data: bytes, pos: int, c: int) -> tuple[int, int]:
    """The length of the string whose first digit ``c`` is at ``pos``, and where its bytes start.

    The slow path of the inline one-digit case: canonical digits only (no sign, no leading zero).
    """
    colon = data.find(b":", pos + 1, pos + 1 + _MAX_LENGTH_DIGITS)
    if colon < 0:
        raise _bad("string length without ':'", pos)
    digits = data[pos:colon]
    if not digits.isdigit() or (c == _ZERO and colon > pos + 1):  # isdigit() on bytes is ASCII-only
        raise _bad("non-canonical string length", pos)
    return int(digits), colon + 1


def _integer(data: bytes, pos: int) -> tuple[int, int]:
    """The integer ``i...e`` starting at ``pos``, and the offset after it (canonical spellings only)."""
    end = data.find(b"e", pos + 1)
    if end < 0:
        raise _bad("unterminated integer", pos)
    digits = data[pos + 1 : end]
    body = digits[1:] if digits[:1] == b"-" else digits
    if not body.isdigit() or (body[0] == _ZERO and (len(body) > 1 or body is not digits)):
        raise _bad("non-canonical integer", pos)
    return int(digits), end + 1


def decode(data: bytes, *, max_size: int = limits.MAX_DATAGRAM, max_depth: int = limits.MAX_KRPC_DEPTH) -> Any:
    """Decode one bencoded value that spans all of ``data`` (a KRPC datagram).

    Raises :class:`DecodeError` for malformed or non-canonical input, trailing bytes, or a value beyond a
    limit (``max_size`` bytes of input, containers nested deeper than ``max_depth`` below the top one).
    """
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise DecodeError(f"bencoded input must be bytes, not {type(data).__name__}")
        data = bytes(data)
    end = len(data)
    if end > max_size:
        raise DecodeError(f"bencoded input of {end} bytes exceeds the limit of {max_size}")
    if not end:
        raise DecodeError("empty bencoded input")
    try:
        value, pos = _decode(data, end, max_depth)
    except IndexError:  # data[pos] past the end: a container or a string that never finished
        raise DecodeError("truncated bencoded datagram") from None
    if pos != end:
        raise DecodeError(f"{end - pos} trailing bytes after the bencoded value")
    return value


def _decode(data: bytes, end: int, max_depth: int) -> tuple[Any, int]:
    """The loop behind :func:`decode`: strings and integers inline, containers on an explicit stack."""
    c = data[0]
    if c == _D:
        root: Any = {}
    elif c == _L:
        root = []
    else:  # a lone string or integer (never a KRPC message, but a valid bencoded value)
        if c == _I:
            return _integer(data, 0)
        if _ZERO <= c <= _NINE:
            n, start = _length(data, 0, c)
            if start + n > end:
                raise _bad("string runs past the end", 0)
            return data[start : start + n], start + n
        raise _bad(f"unexpected byte {c:#04x}", 0)
    stack: list[Any] = []
    push = stack.append
    pop = stack.pop
    cur: Any = root
    in_dict = c == _D
    key: bytes = b""
    pos = 1
    while True:
        c = data[pos]
        if c == _E:
            pos += 1
            if not stack:
                return root, pos
            cur = pop()
            in_dict = type(cur) is dict
            continue
        if in_dict:  # a key first: a string (canonical length), inline
            if data[pos + 1] == _COLON and _ZERO <= c <= _NINE:
                start = pos + 2
                pos = start + c - _ZERO
            elif _ZERO <= c <= _NINE:
                n, start = _length(data, pos, c)
                pos = start + n
            else:
                raise _bad("dict key is not a string", pos)
            if pos > end:
                raise _bad("dict key runs past the end", start)
            key = data[start:pos]
            c = data[pos]
        # a value
        if _ZERO <= c <= _NINE:
            d = data[pos + 1]
            if d == _COLON:
                start = pos + 2
                n = c - _ZERO
            elif data[pos + 2] == _COLON and _ZERO <= d <= _NINE and c != _ZERO:  # ids, tokens: 20, 8
                start = pos + 3
                n = (c - _ZERO) * 10 + d - _ZERO
            else:
                n, start = _length(data, pos, c)
            pos = start + n
            if pos > end:
                raise _bad("string runs past the end", start)
            value: Any = data[start:pos]
        elif c == _I:
            if data[pos + 2] == _E and _ZERO <= data[pos + 1] <= _NINE:
                value = data[pos + 1] - _ZERO
                pos += 3
            else:
                value, pos = _integer(data, pos)
        elif c in (_D, _L):
            if len(stack) >= max_depth:
                raise DecodeError("bencoded input nests too deeply")
            value = {} if c == _D else []
            if in_dict:
                cur[key] = value
            else:
                cur.append(value)
            push(cur)
            cur = value
            in_dict = c == _D
            pos += 1
            continue
        else:
            raise _bad(f"unexpected byte {c:#04x}", pos)
        if in_dict:
            cur[key] = value
        else:
            cur.append(value)
