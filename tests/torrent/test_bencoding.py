from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pwatch.errors import DecodeError
from p2pwatch.torrent import bencoding

SAMPLE = b"d1:ai1e4:infod1:x2:yze1:zli1ei2eee"


def test_decode_keeps_bytes() -> None:
    value = bencoding.decode(SAMPLE)
    assert value == {b"a": 1, b"info": {b"x": b"yz"}, b"z": [1, 2]}
    assert bencoding.decode(b"3:\xc3\xa9x") == b"\xc3\xa9x"  # valid UTF-8 stays bytes


def test_round_trip() -> None:
    assert bencoding.encode(bencoding.decode(SAMPLE)) == SAMPLE


def test_every_truncation_and_trailing_bytes_are_typed_errors() -> None:
    for cut in range(len(SAMPLE)):
        with pytest.raises(DecodeError):
            bencoding.decode(SAMPLE[:cut])
    with pytest.raises(DecodeError):
        bencoding.decode(SAMPLE + b"x")


def test_limits() -> None:
    with pytest.raises(DecodeError):
        bencoding.decode(b"l" * 50 + b"e" * 50, max_depth=10)
    with pytest.raises(DecodeError):
        bencoding.decode(b"i1e", max_size=2)
    with pytest.raises(DecodeError):
        bencoding.decode(b"l10:aaaaaaaaaae", max_string=5)
    with pytest.raises(DecodeError):
        bencoding.decode(b"l" * 5000 + b"e" * 5000)


def test_raw_dict_value_is_the_exact_span() -> None:
    assert bencoding.raw_dict_value(SAMPLE, b"info") == b"d1:x2:yze"
    assert bencoding.raw_dict_value(SAMPLE, b"missing") is None
    with pytest.raises(DecodeError):
        bencoding.raw_dict_value(b"li1ee", b"info")


bencodable = st.recursive(
    st.binary(max_size=20) | st.integers(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=8), children, max_size=5),
    max_leaves=20,
)


@given(bencodable)
def test_hypothesis_round_trip(value: object) -> None:
    assert bencoding.decode(bencoding.encode(value)) == value


@given(st.binary(max_size=200))
def test_hypothesis_garbage_only_raises_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        bencoding.decode(data)


@given(bencodable)
def test_encoder_matches_bencode_py_byte_for_byte(value: object) -> None:
    import bencodepy

    assert bencoding.encode(value) == bencodepy.Bencode(encoding=None).encode(value)


def test_encoder_refuses_unencodable_values() -> None:
    from p2pwatch.errors import LocalProtocolError

    for bad in ({"text-key": 1}, 1.5, None, {b"a": object()}):
        with pytest.raises(LocalProtocolError):
            bencoding.encode(bad)
