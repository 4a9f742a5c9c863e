"""Bencoding (BEP 3) through bencode.py, always with byte strings, wrapped with named limits.

bencode.py's default decoder turns any string that is valid UTF-8 into ``str``; we construct it with
``encoding=None`` so every string stays ``bytes``. Limits (input size, nesting depth, string length) are
checked before or while decoding, and every failure surfaces as :class:`~p2pwatch.errors.DecodeError`.

Departures from a lenient reader: trailing bytes after the value are an error, and so are non-integer
dict keys of the wrong type. Unsorted or duplicate dict keys are accepted (real torrents contain them);
infohashes are computed over the raw bytes (:func:`raw_dict_value`), never over a re-encoding.
"""

from __future__ import annotations

from typing import Any

import bencodepy

from p2pwatch import limits
from p2pwatch.errors import DecodeError

Bencodable = bytes | int | list[Any] | dict[bytes, Any]

_DECODERS: dict[int, bencodepy.Bencode] = {}


def _decoder(max_depth: int) -> bencodepy.Bencode:
    decoder = _DECODERS.get(max_depth)
    if decoder is None:
        decoder = bencodepy.Bencode(encoding=None, max_depth=max_depth)
        _DECODERS[max_depth] = decoder
    return decoder


def decode(
    data: bytes,
    *,
    max_size: int = limits.MAX_TORRENT_FILE,
    max_depth: int = limits.MAX_BENCODE_DEPTH,
    max_string: int = limits.MAX_BENCODE_STRING,
) -> Any:
    """Decode one bencoded value that spans all of ``data``.

    Raises :class:`DecodeError` for malformed input, trailing bytes, or a value beyond a limit.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"bencoded input must be bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"bencoded input of {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise DecodeError("empty bencoded input")
    try:
        value = _decoder(max_depth).decode(bytes(data))
    except DecodeError:
        raise
    except RecursionError as exc:
        raise DecodeError("bencoded input nests too deeply") from exc
    except Exception as exc:  # bencode.py raises several types (BencodeDecodeError, KeyError, ValueError)
        raise DecodeError(f"malformed bencoded input: {exc}") from exc
    if len(data) > max_string:
        _check_string_lengths(value, max_string)
    return value


def _check_string_lengths(value: Any, max_string: int) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            if len(item) > max_string:
                raise DecodeError(f"bencoded string of {len(item)} bytes exceeds the limit of {max_string}")
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())


def encode(value: Any) -> bytes:
    """Encode a value made of bytes, int, list and dict-with-bytes-keys (keys are sorted).

    A small dedicated encoder (about 3x faster than bencode.py's generic one on KRPC replies, the DHT's hot
    path); the test suite checks with hypothesis that its output is byte-identical to bencode.py's.
    """
    out: list[bytes] = []
    try:
        _encode_into(value, out.append)
    except (TypeError, ValueError, RecursionError) as exc:
        from p2pwatch.errors import LocalProtocolError

        raise LocalProtocolError(f"cannot bencode {type(value).__name__}: {exc}") from exc
    return b"".join(out)


def _encode_into(value: Any, put: Any) -> None:
    kind = type(value)
    if kind is bytes:
        put(b"%d:" % len(value))
        put(value)
    elif kind is dict:
        put(b"d")
        for key in sorted(value):
            if type(key) is not bytes:
                raise TypeError(f"dict keys must be bytes, not {type(key).__name__}")
            put(b"%d:" % len(key))
            put(key)
            _encode_into(value[key], put)
        put(b"e")
    elif kind is int:
        put(b"i%de" % value)
    elif kind is list or kind is tuple:
        put(b"l")
        for item in value:
            _encode_into(item, put)
        put(b"e")
    elif kind is bool:
        put(b"i%de" % int(value))
    elif isinstance(value, bytearray | memoryview):
        _encode_into(bytes(value), put)
    else:
        raise TypeError(f"cannot bencode a {kind.__name__}")


def skip_value(data: bytes, pos: int, depth: int, max_depth: int) -> int:
    """Return the position just after the bencoded value that starts at ``pos``."""
    if depth > max_depth:
        raise DecodeError("bencoded input nests too deeply")
    if pos >= len(data):
        raise DecodeError("truncated bencoded input")
    lead = data[pos]
    if lead == 0x69:  # i
        end = data.find(b"e", pos)
        if end < 0:
            raise DecodeError("unterminated integer")
        return end + 1
    if lead in (0x6C, 0x64):  # l, d
        pos += 1
        while True:
            if pos >= len(data):
                raise DecodeError("unterminated list or dict")
            if data[pos] == 0x65:  # e
                return pos + 1
            pos = skip_value(data, pos, depth + 1, max_depth)
    if 0x30 <= lead <= 0x39:
        colon = data.find(b":", pos, pos + 21)
        if colon < 0:
            raise DecodeError("malformed string length")
        try:
            length = int(data[pos:colon])
        except ValueError as exc:
            raise DecodeError("malformed string length") from exc
        end = colon + 1 + length
        if end > len(data):
            raise DecodeError("string runs past the end of the input")
        return end
    raise DecodeError(f"unexpected byte {lead:#04x} at offset {pos}")


def raw_dict_value(data: bytes, key: bytes, *, max_depth: int = limits.MAX_BENCODE_DEPTH) -> bytes | None:
    """Return the exact bytes of ``key``'s value in the top-level dict of ``data``, or None.

    Used to hash the ``info`` dict of a .torrent exactly as it was written (BEP 3 infohash).
    """
    if not data or data[0] != 0x64:
        raise DecodeError("bencoded input is not a dict")
    pos = 1
    while pos < len(data) and data[pos] != 0x65:
        key_end = skip_value(data, pos, 1, max_depth)
        colon = data.index(b":", pos)
        this_key = data[colon + 1 : key_end]
        value_end = skip_value(data, key_end, 1, max_depth)
        if this_key == key:
            return bytes(data[key_end:value_end])
        pos = value_end
    return None
