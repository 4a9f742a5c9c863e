"""Peer-wire codec (BEP 3/6/9/10/52) on byte literals: fed whole, byte by byte, and with trailing data."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch import limits
from p2pwatch.errors import LocalProtocolError, PeerWireError, RemoteProtocolError
from p2pwatch.probe import wire

IH = bytes(range(20))
PID = b"-LT2010-" + b"abcdefghijkl"
# base layer 2, index 0, length 4, proof layers 1
HASH_FIELDS = b"\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x01"
HANDSHAKE = b"\x13BitTorrent protocol" + b"\x00\x00\x00\x00\x00\x10\x00\x05" + IH + PID

# (literal, event): every message type, as it appears on the wire
MESSAGES: list[tuple[bytes, wire.WireEvent]] = [
    (b"\x00\x00\x00\x00", wire.KeepAlive()),
    (b"\x00\x00\x00\x01\x00", wire.Choke()),
    (b"\x00\x00\x00\x01\x01", wire.Unchoke()),
    (b"\x00\x00\x00\x01\x02", wire.Interested()),
    (b"\x00\x00\x00\x01\x03", wire.NotInterested()),
    (b"\x00\x00\x00\x05\x04\x00\x00\x00\x07", wire.Have(7)),
    (b"\x00\x00\x00\x03\x05\xff\x80", wire.Bitfield(b"\xff\x80")),
    (b"\x00\x00\x00\x0d\x06\x00\x00\x00\x01\x00\x00\x40\x00\x00\x00\x40\x00", wire.Request(1, 16384, 16384)),
    (b"\x00\x00\x00\x0c\x07\x00\x00\x00\x02\x00\x00\x00\x10abc", wire.Piece(2, 16, b"abc")),
    (b"\x00\x00\x00\x0d\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x40\x00", wire.Cancel(1, 0, 16384)),
    (b"\x00\x00\x00\x03\x09\x1a\xe1", wire.Port(6881)),
    (b"\x00\x00\x00\x05\x0d\x00\x00\x00\x03", wire.Suggest(3)),
    (b"\x00\x00\x00\x01\x0e", wire.HaveAll()),
    (b"\x00\x00\x00\x01\x0f", wire.HaveNone()),
    (b"\x00\x00\x00\x0d\x10\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x40\x00",
     wire.RejectRequest(1, 0, 16384)),
    (b"\x00\x00\x00\x05\x11\x00\x00\x00\x09", wire.AllowedFast(9)),
    (b"\x00\x00\x00\x3a\x14\x00d1:md11:ut_metadatai3ee13:metadata_sizei31235e1:v4:LT20e",
     wire.ExtendedHandshake(m={b"ut_metadata": 3}, metadata_size=31235, v="LT20")),
    (b"\x00\x00\x00\x1b\x14\x02d8:msg_typei0e5:piecei0ee", wire.MetadataRequest(0)),
    (b"\x00\x00\x00\x1b\x14\x02d8:msg_typei2e5:piecei1ee", wire.MetadataReject(1)),
    (b"\x00\x00\x00\x30\x14\x02d8:msg_typei1e5:piecei0e10:total_sizei5eeHELLO",
     wire.MetadataData(0, 5, b"HELLO")),
    (b"\x00\x00\x00\x05\x14\x07abc", wire.ExtendedMessage(7, b"abc")),
    (b"\x00\x00\x00\x31\x15" + b"R" * 32 + HASH_FIELDS,
     wire.HashRequest(b"R" * 32, 2, 0, 4, 1)),
    (b"\x00\x00\x00\x51\x16" + b"R" * 32 + b"\x00\x00\x00\x02" + bytes(7) + b"\x01" + bytes(4)
     + b"H" * 32, wire.Hashes(b"R" * 32, 2, 0, 1, 0, b"H" * 32)),
    (b"\x00\x00\x00\x31\x17" + b"R" * 32 + HASH_FIELDS,
     wire.HashReject(b"R" * 32, 2, 0, 4, 1)),
    (b"\x00\x00\x00\x03\x63xy", wire.UnknownMessage(99, 3)),
]


def feed_bytewise(parser: wire.WireParser, data: bytes) -> list[wire.WireEvent]:
    events: list[wire.WireEvent] = []
    for i in range(len(data)):
        events.extend(parser.feed(data[i : i + 1]))
    return events


@pytest.mark.parametrize(("literal", "event"), MESSAGES, ids=[type(e).__name__ for _, e in MESSAGES])
def test_message_literals(literal: bytes, event: wire.WireEvent) -> None:
    whole = wire.WireParser(expect_handshake=False, local_extensions={wire.UT_METADATA: 2})
    assert whole.feed(literal) == [event]
    assert whole.buffered == 0
    bytewise = wire.WireParser(expect_handshake=False, local_extensions={wire.UT_METADATA: 2})
    assert feed_bytewise(bytewise, literal) == [event]
    trailing = wire.WireParser(expect_handshake=False, local_extensions={wire.UT_METADATA: 2})
    next_prefix = b"\x00\x00\x00\x05\x04\x00"  # the start of a have message
    assert trailing.feed(literal + next_prefix) == [event]
    assert trailing.buffered == len(next_prefix)
    assert trailing.feed(b"\x00\x00\x01") == [wire.Have(1)]


ENCODABLE = [m for m in MESSAGES if not isinstance(m[1], wire.UnknownMessage)]


@pytest.mark.parametrize(("literal", "event"), ENCODABLE, ids=[type(e).__name__ for _, e in ENCODABLE])
def test_encode_gives_the_literal(literal: bytes, event: wire.WireEvent) -> None:
    ext = {wire.UT_METADATA: 2}
    assert wire.encode(event, remote_extensions=ext) == literal


def test_handshake_whole_bytewise_and_with_trailing_message() -> None:
    expected = wire.Handshake(IH, PID, b"\x00\x00\x00\x00\x00\x10\x00\x05")
    assert wire.WireParser().feed(HANDSHAKE) == [expected]
    assert feed_bytewise(wire.WireParser(), HANDSHAKE) == [expected]
    parser = wire.WireParser()
    assert parser.feed(HANDSHAKE + b"\x00\x00\x00\x01\x0e\x00\x00") == [expected, wire.HaveAll()]
    assert parser.buffered == 2
    assert expected.supports_extensions and expected.supports_fast and expected.supports_dht
    assert wire.encode(expected) == HANDSHAKE


def test_whole_stream_in_one_chunk_and_bytewise_agree() -> None:
    stream = HANDSHAKE + b"".join(lit for lit, _ in MESSAGES)
    events = [ev for _, ev in MESSAGES]
    assert wire.WireParser().feed(stream)[1:] == events
    assert feed_bytewise(wire.WireParser(), stream)[1:] == events


def test_reserved_bits() -> None:
    reserved = wire.make_reserved(wire.RESERVED_EXTENSIONS, wire.RESERVED_FAST, wire.RESERVED_DHT)
    assert reserved == b"\x00\x00\x00\x00\x00\x10\x00\x05"
    plain = wire.Handshake(IH, PID)
    assert not (plain.supports_extensions or plain.supports_fast or plain.supports_dht)


@pytest.mark.parametrize("garbage", [b"\x12", b"\x13BitTorrent protocoX", b"GET / HTTP/1.1\r\n"])
def test_bad_handshake_fails_early(garbage: bytes) -> None:
    with pytest.raises(wire.HandshakeError):
        wire.WireParser().feed(garbage)


def test_errors_are_sticky() -> None:
    parser = wire.WireParser()
    with pytest.raises(wire.HandshakeError):
        parser.feed(b"\x14")
    with pytest.raises(wire.HandshakeError):
        parser.feed(HANDSHAKE)


@pytest.mark.parametrize("header", [
    b"\x00\x00\x00\x02\x00",  # choke with a payload
    b"\x00\x00\x00\x04\x04",  # have of 3 bytes
    b"\x00\x00\x00\x0e\x06",  # request of 13 bytes
    b"\x00\x00\x00\x02\x09",  # port of 1 byte
    b"\x00\x00\x00\x32\x15",  # hash request of 49 bytes
])
def test_fixed_size_messages_with_wrong_length(header: bytes) -> None:
    # rejected from the 5-byte header alone, before the body arrives
    with pytest.raises(wire.MessageLengthError):
        wire.WireParser(expect_handshake=False).feed(header)


@pytest.mark.parametrize(("message_id", "limit"), [
    (7, 9 + limits.PEER_BLOCK_SIZE), (20, limits.MAX_EXTENDED_MESSAGE), (22, limits.MAX_HASHES_MESSAGE),
    (99, limits.MAX_UNKNOWN_MESSAGE), (5, 1 + (limits.MAX_PIECES + 7) // 8),
])
def test_length_limits_checked_before_buffering(message_id: int, limit: int) -> None:
    parser = wire.WireParser(expect_handshake=False)
    assert parser.feed((limit).to_bytes(4, "big") + bytes([message_id])) == []  # at the limit: waits
    with pytest.raises(wire.MessageLengthError):
        wire.WireParser(expect_handshake=False).feed((limit + 1).to_bytes(4, "big") + bytes([message_id]))
    with pytest.raises(wire.MessageLengthError):  # a 4 GiB length is refused just the same
        wire.WireParser(expect_handshake=False).feed(b"\xff\xff\xff\xff" + bytes([message_id]))


def test_bitfield_checked_against_piece_count() -> None:
    parser = wire.WireParser(expect_handshake=False, num_pieces=9)
    assert parser.feed(b"\x00\x00\x00\x03\x05\xff\x80") == [wire.Bitfield(b"\xff\x80")]
    assert wire.Bitfield(b"\xff\x80").count() == 9
    assert wire.Bitfield(b"\xff\x80").has(8) and not wire.Bitfield(b"\xff\x80").has(9)
    with pytest.raises(wire.MessageLengthError):  # 3 bytes for 9 pieces: too long, refused from the header
        wire.WireParser(expect_handshake=False, num_pieces=9).feed(b"\x00\x00\x00\x04\x05")
    with pytest.raises(wire.BitfieldError):  # spare bit set
        wire.WireParser(expect_handshake=False, num_pieces=9).feed(b"\x00\x00\x00\x03\x05\xff\xc0")
    with pytest.raises(wire.BitfieldError):  # too short
        wire.WireParser(expect_handshake=False, num_pieces=9).feed(b"\x00\x00\x00\x02\x05\xff")
    with pytest.raises(wire.BitfieldError):
        wire.WireParser(expect_handshake=False, num_pieces=9).feed(b"\x00\x00\x00\x05\x04\x00\x00\x00\x09")
    with pytest.raises(LocalProtocolError):
        wire.WireParser(num_pieces=0)


@pytest.mark.parametrize("payload", [
    b"\x00d1:mi3ee",  # m is not a dict
    b"\x00d1:md11:ut_metadatai300eee",  # id beyond 255
    b"\x00d13:metadata_sizei-1ee",  # negative size
    b"\x00not bencoding",
    b"\x00li1ee",  # not a dict
    b"\x02d8:msg_typei0ee",  # ut_metadata without piece
    b"\x02d8:msg_typei7e5:piecei0ee",  # unknown msg_type
    b"\x02d8:msg_typei1e5:piecei0ee",  # data without total_size
    b"\x02d8:msg_typei0e5:piecei0eeXX",  # request with trailing bytes
    b"\x02d8:msg_typei1e5:piecei0e10:total_sizei9ee" + bytes(16385),  # block beyond 16 KiB
    b"\x02garbage",
    b"",  # no extension id
])
def test_malformed_extended_messages(payload: bytes) -> None:
    frame = (len(payload) + 1).to_bytes(4, "big") + b"\x14" + payload
    with pytest.raises(PeerWireError):
        wire.WireParser(expect_handshake=False, local_extensions={wire.UT_METADATA: 2}).feed(frame)


def test_hashes_must_be_whole() -> None:
    body = b"\x16" + b"R" * 32 + bytes(16) + b"H" * 31
    with pytest.raises(wire.MalformedMessage):
        wire.WireParser(expect_handshake=False).feed(len(body).to_bytes(4, "big") + body)


def test_metadata_encoding_needs_the_peers_id() -> None:
    with pytest.raises(LocalProtocolError):
        wire.encode(wire.MetadataRequest(0))
    with pytest.raises(LocalProtocolError):
        wire.encode(wire.Handshake(IH[:10], PID))


def test_message_names() -> None:
    assert wire.message_name(wire.HaveAll()) == "have_all"
    assert wire.message_name(wire.RejectRequest(0, 0, 1)) == "reject_request"
    assert wire.message_name(wire.MetadataData(0, 1, b"x")) == "ut_metadata_data"
    assert wire.message_name(wire.Handshake(IH, PID)) == "handshake"


@pytest.mark.parametrize(("peer_id", "client"), [
    (b"-LT2010-abcdefghijkl", "libtorrent 2.0.1.0"),
    (b"-qB4630-abcdefghijkl", "qBittorrent 4.6.3.0"),
    (b"-ZZ1234-abcdefghijkl", "ZZ 1.2.3.4"),
    (b"M7-2-2--abcdefghijkl", "BitTorrent Mainline 7.2.2"),
    (bytes(20), None),
    (b"-\x00\x01abcd-" + bytes(12), None),
])
def test_client_from_peer_id(peer_id: bytes, client: str | None) -> None:
    assert wire.client_from_peer_id(peer_id) == client


# ----------------------------------------------------------------------------------- hypothesis


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=64), max_size=20),
       st.booleans(), st.none() | st.integers(min_value=1, max_value=100))
def test_arbitrary_chunks_raise_only_typed_errors(data: bytes, cuts: list[int], handshake: bool,
                                                  num_pieces: int | None) -> None:
    parser = wire.WireParser(expect_handshake=handshake, num_pieces=num_pieces,
                             local_extensions={wire.UT_METADATA: 2})
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            parser.feed(data[pos : pos + cut])
            pos += cut
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(MESSAGES))), max_size=12), st.data())
def test_valid_streams_split_anywhere_give_the_same_events(picks: list[int], data: st.DataObject) -> None:
    stream = HANDSHAKE + b"".join(MESSAGES[i][0] for i in picks)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=10)))
    parser = wire.WireParser(local_extensions={wire.UT_METADATA: 2})
    events: list[wire.WireEvent] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        events.extend(parser.feed(stream[prev:cut]))
        prev = cut
    assert events[1:] == [MESSAGES[i][1] for i in picks]
    assert parser.buffered == 0
