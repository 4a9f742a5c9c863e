"""The dedicated KRPC bencode decoder against bencode.py (through p2pwatch.torrent.bencoding) as the reference.

Contract (see p2pwatch/dht/krpc_bdecode.py): whatever it accepts, bencode.py accepts with the same value;
whatever bencode.py rejects, it rejects; it may reject more only for non-canonical number spellings.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pwatch import limits
from p2pwatch.dht import krpc_bdecode
from p2pwatch.errors import DecodeError
from p2pwatch.torrent import bencoding

_FAILED = object()


def reference(data: bytes) -> Any:
    """bencode.py's answer with the limits krpc used to pass it, or _FAILED."""
    try:
        return bencoding.decode(data, max_size=limits.MAX_DATAGRAM, max_depth=limits.MAX_KRPC_DEPTH)
    except DecodeError:
        return _FAILED


def fast(data: bytes) -> Any:
    try:
        return krpc_bdecode.decode(data)
    except DecodeError:
        return _FAILED


def same(a: Any, b: Any) -> bool:
    """Equal values of exactly the same types all the way down (``1 == True`` and list vs tuple do not pass)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def encode_in_order(value: Any) -> bytes:
    """Bencode keeping dict keys in the order they were read (so only number spellings can differ)."""
    if type(value) is bytes:
        return b"%d:%s" % (len(value), value)
    if type(value) is int:
        return b"i%de" % value
    if type(value) is list:
        return b"l" + b"".join(encode_in_order(v) for v in value) + b"e"
    return b"d" + b"".join(encode_in_order(k) + encode_in_order(v) for k, v in value.items()) + b"e"


def check_against_reference(data: bytes) -> None:
    ref, got = reference(data), fast(data)
    if ref is _FAILED:
        assert got is _FAILED, f"accepted what bencode.py rejects: {data!r}"
    elif got is _FAILED:  # allowed only for a non-canonical spelling of a number or a length
        assert encode_in_order(ref) != data, f"rejected canonical input: {data!r}"
    else:
        assert same(got, ref), data


# ------------------------------------------------------------------------------------------ byte literals

ID = b"abcdefghij0123456789"
LITERALS: dict[bytes, Any] = {
    b"d1:ad2:id20:" + ID + b"e1:q4:ping1:t2:aa1:y1:qe": {
        b"a": {b"id": ID}, b"q": b"ping", b"t": b"aa", b"y": b"q"},
    b"d1:rd2:id20:" + ID + b"5:nodes26:" + ID + b"\x01\x02\x03\x04\x1a\xe1e1:t2:aa1:y1:re": {
        b"r": {b"id": ID, b"nodes": ID + b"\x01\x02\x03\x04\x1a\xe1"}, b"t": b"aa", b"y": b"r"},
    b"d1:rd2:id20:" + ID + b"5:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re": {
        b"r": {b"id": ID, b"token": b"aoeusnth", b"values": [b"axje.u", b"idhtnm"]}, b"t": b"aa", b"y": b"r"},
    b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee": {
        b"e": [201, b"A Generic Error Ocurred"], b"t": b"aa", b"y": b"e"},
    b"d1:ad2:id20:" + ID + b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe": {
        b"a": {b"id": ID, b"port": 6881, b"token": b"aoeusnth"}, b"q": b"announce_peer", b"t": b"aa", b"y": b"q"},
    b"d1:rd8:intervali21600e3:numi-2e7:samples0:e1:t0:1:v4:PW\x00\x011:y1:re": {
        b"r": {b"interval": 21600, b"num": -2, b"samples": b""}, b"t": b"", b"v": b"PW\x00\x01", b"y": b"r"},
    b"i0e": 0,
    b"i-42e": -42,
    b"0:": b"",
    b"12:\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9": "éééééé".encode(),  # valid UTF-8 stays bytes
    b"le": [],
    b"de": {},
    b"lli1eeli2ei3eee": [[1], [2, 3]],
    b"d1:b0:1:a0:e": {b"b": b"", b"a": b""},  # unsorted keys: accepted, as bencode.py does
    b"d1:ai1e1:ai2ee": {b"a": 2},  # a duplicate key: the last one wins, as in bencode.py
}


@pytest.mark.parametrize("data", list(LITERALS))
def test_literal_whole(data: bytes) -> None:
    assert same(krpc_bdecode.decode(data), LITERALS[data])
    assert same(krpc_bdecode.decode(data), reference(data))
    assert same(krpc_bdecode.decode(bytearray(data)), LITERALS[data])
    assert same(krpc_bdecode.decode(memoryview(data)), LITERALS[data])


@pytest.mark.parametrize("data", list(LITERALS))
def test_literal_every_prefix_is_an_error(data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            krpc_bdecode.decode(data[:cut])


@pytest.mark.parametrize("data", list(LITERALS))
@pytest.mark.parametrize("tail", [b"e", b"i1e", b"0:", b"x", b"\x00", b"d", b"le"])
def test_literal_with_trailing_data_is_an_error(data: bytes, tail: bytes) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        krpc_bdecode.decode(data + tail)


@pytest.mark.parametrize("data", [
    b"", b"e", b"x", b"-1:a", b":", b"i", b"ie", b"i-e", b"i-0e", b"i01e", b"i-01e", b"i1", b"ix1e", b"01:a",
    b"00:", b"2:a", b"l", b"d", b"d1:a", b"di1ei2ee", b"dle0:e", b"d1:ae", b"l1:ai1e", b"1:ab", b"9999999999:a",
    b"i1.5e", b"i1e1", b"le:", b"d0:e",
])
def test_malformed_is_rejected_like_bencode_py(data: bytes) -> None:
    assert reference(data) is _FAILED
    with pytest.raises(DecodeError):
        krpc_bdecode.decode(data)


# bencode.py hands number digits to int(), which allows whitespace, '+' and '_'; and it reads dict keys with
# its string reader whatever their first byte. These are the documented extra rejections.
NON_CANONICAL = [b"i+1e", b"i 1e", b"i1 e", b"i1_0e", b"i-1_0e", b"1 :a", b"1_0:aaaaaaaaaa", b"d-0:i1ee",
                 b"d 1:ai1ee", b"d+1:ai1ee", b"li\t7ee", b"d1:ad+1:bi1eee"]


@pytest.mark.parametrize("data", NON_CANONICAL)
def test_non_canonical_numbers_are_rejected_though_bencode_py_accepts_them(data: bytes) -> None:
    assert reference(data) is not _FAILED
    with pytest.raises(DecodeError, match=r"non-canonical|not a string"):
        krpc_bdecode.decode(data)


def test_limits() -> None:
    deepest = b"l" * (limits.MAX_KRPC_DEPTH + 1) + b"e" * (limits.MAX_KRPC_DEPTH + 1)
    assert same(krpc_bdecode.decode(deepest), reference(deepest))
    too_deep = b"l" + deepest + b"e"
    assert reference(too_deep) is _FAILED
    with pytest.raises(DecodeError, match="deeply"):
        krpc_bdecode.decode(too_deep)
    with pytest.raises(DecodeError, match="deeply"):
        krpc_bdecode.decode(b"d1:a" + deepest + b"e")
    biggest = b"2043:" + b"x" * 2043
    assert len(biggest) == limits.MAX_DATAGRAM
    assert krpc_bdecode.decode(biggest) == b"x" * 2043
    with pytest.raises(DecodeError, match="exceeds"):
        krpc_bdecode.decode(b"2044:" + b"x" * 2044)
    with pytest.raises(DecodeError, match="exceeds"):
        krpc_bdecode.decode(b"i1e", max_size=2)
    with pytest.raises(DecodeError, match="deeply"):
        krpc_bdecode.decode(b"lle" + b"e", max_depth=0)
    with pytest.raises(DecodeError, match="must be bytes"):
        krpc_bdecode.decode("i1e")  # type: ignore[arg-type]


def test_a_string_length_beyond_the_input_allocates_nothing() -> None:
    with pytest.raises(DecodeError, match="past the end"):
        krpc_bdecode.decode(b"l2000:abce")
    with pytest.raises(DecodeError):  # more digits than any datagram could need: no colon looked for beyond
        krpc_bdecode.decode(b"l" + b"9" * 50 + b":e")


# ------------------------------------------------------------------------------------------ hypothesis

values = st.recursive(
    st.binary(max_size=40) | st.integers() | st.integers(-20, 20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=10), children, max_size=5),
    max_leaves=25,
)


@given(values)
def test_generated_values_decode_exactly_as_bencode_py(value: Any) -> None:
    data = bencoding.encode(value)
    check_against_reference(data)
    if len(data) <= limits.MAX_DATAGRAM and reference(data) is not _FAILED:
        assert same(krpc_bdecode.decode(data), value)


@given(st.lists(st.tuples(st.binary(max_size=4), values), max_size=6))
def test_unsorted_and_duplicate_keys_decode_as_bencode_py(items: list[tuple[bytes, Any]]) -> None:
    data = b"d" + b"".join(bencoding.encode(k) + bencoding.encode(v) for k, v in items) + b"e"
    check_against_reference(data)
    if len(data) <= limits.MAX_DATAGRAM:
        assert fast(data) is not _FAILED


# bytes that matter to the grammar, so that mutations make interesting near-misses
_GRAMMAR = st.sampled_from(list(b"0123456789ilde:-+ _\t\x00x"))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=500)
@given(values, st.data())
def test_mutated_byte_strings_agree_with_bencode_py(value: Any, draw: st.DataObject) -> None:
    buf = bytearray(bencoding.encode(value))
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["replace", "insert", "delete", "truncate", "append", "flip"]))
        pos = draw.draw(st.integers(0, len(buf)))
        if op == "replace" and pos < len(buf):
            buf[pos] = draw.draw(_GRAMMAR)
        elif op == "flip" and pos < len(buf):
            buf[pos] ^= draw.draw(st.integers(1, 255))
        elif op == "insert":
            buf[pos:pos] = bytes(draw.draw(st.lists(_GRAMMAR, min_size=1, max_size=3)))
        elif op == "delete":
            del buf[pos : pos + draw.draw(st.integers(1, 3))]
        elif op == "truncate":
            del buf[pos:]
        else:
            buf += draw.draw(st.binary(min_size=1, max_size=3))
    check_against_reference(bytes(buf))


@given(st.binary(max_size=64))
def test_arbitrary_bytes_agree_with_bencode_py(data: bytes) -> None:
    check_against_reference(data)
