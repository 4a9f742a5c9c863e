"""BEP 11 ut_pex codec, collector and candidate policy: byte literals, flags, IPv6, hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch import limits
from p2pwatch.netguard import NetworkPolicy
from p2pwatch.probe.pex import (
    PexCollector,
    PexError,
    PexFlags,
    PexPeer,
    decode_pex,
    encode_pex,
    pex_candidates,
)
from p2pwatch.torrent import bencoding

LOOPBACK = NetworkPolicy.loopback_only()
EVERYWHERE = NetworkPolicy()


def v4(a: int, b: int, c: int, d: int, port: int) -> bytes:
    return bytes([a, b, c, d]) + struct.pack(">H", port)


# ------------------------------------------------------------------------------------------ decoding


def test_libtorrent_style_message_with_flags() -> None:
    # what libtorrent's first message looks like: every field present, dropped empty
    payload = (b"d5:added12:" + v4(127, 0, 0, 2, 6881) + v4(127, 0, 0, 3, 51413)
               + b"7:added.f2:\x03\x10" + b"6:added60:8:added6.f0:7:dropped0:8:dropped60:e")
    message = decode_pex(payload)
    assert message.added == (PexPeer("127.0.0.2", 6881, 0x03), PexPeer("127.0.0.3", 51413, 0x10))
    assert message.added[0].seed and message.added[0].flags & PexFlags.ENCRYPTION
    assert not message.added[1].seed and message.added[1].flags == PexFlags.REACHABLE
    assert message.dropped == () and message.truncated == 0 and message.skipped == 0


def test_ipv6_and_dropped_contacts() -> None:
    addr6 = bytes(15) + b"\x01"  # ::1
    mapped = bytes(10) + b"\xff\xff" + bytes([10, 1, 2, 3])  # ::ffff:10.1.2.3 is read as IPv4
    payload = bencoding.encode({
        b"added6": addr6 + struct.pack(">H", 7000) + mapped + struct.pack(">H", 7001),
        b"added6.f": b"\x02\x00",
        b"dropped": v4(192, 0, 2, 9, 80),
        b"dropped6": addr6 + struct.pack(">H", 9),
    })
    message = decode_pex(payload)
    assert message.added == (PexPeer("::1", 7000, PexFlags.SEED), PexPeer("10.1.2.3", 7001, 0))
    assert message.dropped == (("192.0.2.9", 80), ("::1", 9))


def test_flags_are_optional() -> None:
    message = decode_pex(bencoding.encode({b"added": v4(1, 2, 3, 4, 5)}))
    assert message.added == (PexPeer("1.2.3.4", 5, 0),)


def test_dropped_only_message_is_valid() -> None:
    assert decode_pex(bencoding.encode({b"dropped": v4(1, 2, 3, 4, 5)})).dropped == (("1.2.3.4", 5),)


def test_roundtrip_through_encode() -> None:
    peers = [PexPeer("127.0.0.9", 1, 0x12), PexPeer("::1", 65535, 0), PexPeer("8.8.8.8", 443, 0xFF)]
    message = decode_pex(encode_pex(peers, dropped=[("127.0.0.7", 7), ("2001:db8::1", 8)]))
    assert message.added == (peers[0], peers[2], peers[1])  # IPv4 first, then IPv6
    assert message.dropped == (("127.0.0.7", 7), ("2001:db8::1", 8))


def test_port_zero_multicast_unspecified_and_duplicates_are_skipped() -> None:
    payload = bencoding.encode({b"added": v4(1, 2, 3, 4, 0) + v4(224, 0, 0, 1, 80) + v4(0, 0, 0, 0, 80)
                                + v4(5, 6, 7, 8, 9) + v4(5, 6, 7, 8, 9)})
    message = decode_pex(payload)
    assert message.added == (PexPeer("5.6.7.8", 9, 0),)
    assert message.skipped == 4


def test_per_message_cap_counts_what_it_drops() -> None:
    contacts = b"".join(v4(10, 0, i // 256, i % 256, 1000) for i in range(300))
    message = decode_pex(bencoding.encode({b"added": contacts}))
    assert len(message.added) == limits.MAX_PEX_PEERS_PER_MESSAGE
    assert message.truncated == 300 - limits.MAX_PEX_PEERS_PER_MESSAGE
    assert message.added[0] == PexPeer("10.0.0.0", 1000, 0)


@pytest.mark.parametrize("payload, reason", [
    (b"", "bencoding"),
    (b"le", "dictionary"),
    (b"i3e", "dictionary"),
    (b"d5:added5:abcdee", "multiple of 6"),
    (b"d6:added617:" + bytes(17) + b"e", "multiple of 18"),
    (b"d7:dropped7:" + bytes(7) + b"e", "multiple of 6"),
    (b"d5:addedi3ee", "byte string"),
    (b"d5:added6:" + v4(1, 2, 3, 4, 5) + b"7:added.f2:\x00\x00e", "flag bytes"),
    (b"d7:added.f1:\x00e", "none of added"),
    (b"d3:foo3:bare", "none of added"),
    (b"d5:added0:", "bencoding"),  # truncated
    (b"d5:added0:ee", "bencoding"),  # trailing bytes
])
def test_malformed_messages_raise_pex_error(payload: bytes, reason: str) -> None:
    with pytest.raises(PexError, match=reason):
        decode_pex(payload)


def test_oversized_message_is_refused_before_decoding() -> None:
    with pytest.raises(PexError, match="exceeds"):
        decode_pex(b"d5:added" + str(limits.MAX_EXTENDED_MESSAGE).encode() + b":" + bytes(limits.MAX_EXTENDED_MESSAGE)
                   + b"e")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_pex_error(data: bytes) -> None:
    try:
        message = decode_pex(data)
    except PexError:
        return
    assert len(message.added) <= limits.MAX_PEX_PEERS_PER_MESSAGE


_contact_strings = st.lists(st.binary(min_size=6, max_size=6), max_size=30).map(b"".join)
_pex_dicts = st.fixed_dictionaries({}, optional={
    b"added": st.one_of(_contact_strings, st.binary(max_size=40)),
    b"added.f": st.binary(max_size=30),
    b"added6": st.one_of(st.lists(st.binary(min_size=18, max_size=18), max_size=5).map(b"".join),
                         st.binary(max_size=40)),
    b"added6.f": st.binary(max_size=5),
    b"dropped": st.one_of(_contact_strings, st.integers()),
    b"x": st.lists(st.integers(), max_size=3),
})


@settings(max_examples=400, deadline=None)
@given(_pex_dicts)
def test_structured_hostile_dicts_never_escape_the_typed_error(d: dict[bytes, object]) -> None:
    try:
        message = decode_pex(bencoding.encode(d))
    except PexError:
        return
    for peer in message.added:
        assert peer.port > 0 and 0 <= peer.flags <= 0xFF
    assert len(set(message.added)) == len(message.added)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 0xFFFFFFFF), st.integers(1, 0xFFFF), st.integers(0, 255)),
                max_size=60, unique_by=lambda t: (t[0], t[1])))
def test_encode_decode_roundtrip_of_ipv4(contacts: list[tuple[int, int, int]]) -> None:
    import ipaddress

    peers = [PexPeer(str(ipaddress.IPv4Address(a)), port, flags) for a, port, flags in contacts]
    peers = [p for p in peers if not (ipaddress.ip_address(p.ip).is_multicast)]
    assert decode_pex(encode_pex(peers)).added == tuple(peers)


# ----------------------------------------------------------------------------------------- collector


def test_collector_caps_peers_and_messages_and_counts_errors() -> None:
    collector = PexCollector(max_peers=3, max_messages=3)
    first = encode_pex([PexPeer(f"127.0.0.{i}", 100 + i) for i in range(2, 4)])
    assert collector.feed(first) is not None
    with pytest.raises(PexError):
        collector.feed(b"garbage")
    second = encode_pex([PexPeer(f"127.0.0.{i}", 100 + i) for i in range(2, 7)], dropped=[("127.0.0.2", 102)])
    collector.feed(second)
    assert list(collector.peers) == [("127.0.0.2", 102), ("127.0.0.3", 103), ("127.0.0.4", 104)]
    assert collector.overflow == 2 and collector.dropped == 1 and collector.errors == 1
    assert collector.feed(first) is None and collector.ignored_messages == 1  # past max_messages
    assert collector.messages == 3


# ---------------------------------------------------------------------------------------- candidates


def test_candidates_respect_netguard_and_local_policy() -> None:
    listed = [PexPeer("127.0.0.5", 1), PexPeer("8.8.8.8", 2), PexPeer("192.168.1.5", 3), PexPeer("::1", 4)]
    reporter = ("127.0.0.2", 6881)
    # loopback-only policy (the tests' netguard): public and private addresses are never candidates
    chosen = pex_candidates([(reporter, listed)], allow_local=True, policy=LOOPBACK)
    assert [p.endpoint for p, _ in chosen] == [("127.0.0.5", 1), ("::1", 4)]
    assert all(r == reporter for _, r in chosen)
    # everywhere allowed, but local networks not: only the global address
    chosen = pex_candidates([(reporter, listed)], allow_local=False, policy=EVERYWHERE)
    assert [p.endpoint for p, _ in chosen] == [("8.8.8.8", 2)]


def test_candidates_dedupe_by_ip_and_skip_known() -> None:
    a, b = ("127.0.0.2", 1), ("127.0.0.3", 1)
    chosen = pex_candidates(
        [(a, [PexPeer("127.0.0.5", 1), PexPeer("127.0.0.5", 2), PexPeer("127.0.0.6", 1), PexPeer("127.0.0.3", 9)]),
         (b, [PexPeer("127.0.0.5", 1), PexPeer("127.0.0.7", 1), PexPeer("127.0.0.2", 1)])],
        known=[a, b, ("127.0.0.6", 99)], allow_local=True, policy=LOOPBACK)
    assert [(p.endpoint, r) for p, r in chosen] == [(("127.0.0.5", 1), a), (("127.0.0.7", 1), b)]


def test_one_reporter_cannot_fill_the_candidates() -> None:
    flood = ("127.0.0.2", 1), [PexPeer(f"127.0.1.{i}", 1) for i in range(1, 100)]
    honest = ("127.0.0.3", 1), [PexPeer("127.0.2.1", 1, PexFlags.SEED), PexPeer("127.0.2.2", 1)]
    chosen = pex_candidates([flood, honest], allow_local=True, policy=LOOPBACK, per_reporter=5, limit=6)
    by_reporter = [r for _, r in chosen]
    assert by_reporter.count(("127.0.0.2", 1)) == 4 and by_reporter.count(("127.0.0.3", 1)) == 2
    chosen = pex_candidates([flood, honest], allow_local=True, policy=LOOPBACK, per_reporter=5)
    assert len(chosen) == 7  # 5 from the flood at most, both honest ones


def test_seeds_first_within_a_reporter() -> None:
    reporter = ("127.0.0.2", 1)
    listed = [PexPeer("127.0.0.5", 1), PexPeer("127.0.0.6", 1, PexFlags.SEED), PexPeer("127.0.0.7", 1)]
    chosen = pex_candidates([(reporter, listed)], allow_local=True, policy=LOOPBACK, per_reporter=2)
    assert [p.ip for p, _ in chosen] == ["127.0.0.6", "127.0.0.5"]
