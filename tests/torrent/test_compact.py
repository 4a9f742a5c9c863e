"""The compact peer / node codec (BEP 23, 7, 32, 5): byte literals, the IPv4-mapped rule, hypothesis properties,
and the four callers keeping their own error types."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pwatch.dht import krpc
from p2pwatch.errors import CompactAddressError, KRPCError, LocalProtocolError, TrackerError
from p2pwatch.probe.pex import PexError, PexPeer, decode_pex, encode_pex
from p2pwatch.probe.udp_tracker_codec import decode_compact_peers
from p2pwatch.torrent import bencoding, compact

ports = st.integers(0, 0xFFFF)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
node_ids = st.binary(min_size=20, max_size=20)


def test_byte_literals() -> None:
    assert compact.encode_peer("10.1.2.3", 6881) == bytes([10, 1, 2, 3, 0x1A, 0xE1])
    assert compact.decode_peer(bytes([10, 1, 2, 3, 0x1A, 0xE1])) == ("10.1.2.3", 6881)
    v6 = bytes.fromhex("20010db8000000000000000000000001") + b"\x00\x50"
    assert compact.encode_peer("2001:db8::1", 80) == v6
    assert compact.decode_peer(v6) == ("2001:db8::1", 80)
    assert compact.decode_peer_list(b"") == [] and compact.decode_node_list(b"", ipv6=True) == []
    node = b"\x07" * 20 + bytes([127, 0, 0, 1, 0, 1])
    assert compact.decode_node_list(node) == [(b"\x07" * 20, "127.0.0.1", 1)]
    assert compact.encode_node(b"\x07" * 20, "127.0.0.1", 1) == node


def test_ipv4_mapped_stays_ipv6_in_the_codec_and_unmap_reads_it_as_ipv4() -> None:
    mapped = bytes(10) + b"\xff\xff" + bytes([10, 1, 2, 3]) + b"\x00\x07"
    assert compact.decode_peer6(mapped) == ("::ffff:10.1.2.3", 7)
    assert compact.encode_peer("::ffff:10.1.2.3", 7) == mapped  # lossless both ways
    assert compact.unmap("::ffff:10.1.2.3") == "10.1.2.3"
    assert compact.unmap("::ffff:a01:203") == "10.1.2.3"
    assert compact.unmap("2001:db8::1") == "2001:db8::1" and compact.unmap("10.1.2.3") == "10.1.2.3"
    assert compact.unmap("not an address") == "not an address"
    # the callers: PEX reads it as IPv4 (its documented policy), KRPC values and tracker peers keep it
    assert decode_pex(bencoding.encode({b"added6": mapped})).added == (PexPeer("10.1.2.3", 7),)
    assert decode_compact_peers(mapped, ipv6=True)[0].ip == "::ffff:10.1.2.3"
    reply = krpc.decode(bencoding.encode({b"t": b"t1", b"y": b"r", b"r": {b"id": b"\x01" * 20, b"values": [mapped]}}))
    assert isinstance(reply, krpc.Response) and reply.values == (("::ffff:10.1.2.3", 7),)


@pytest.mark.parametrize(("ip", "port", "ipv6"), [
    ("10.1.2.3", -1, None), ("10.1.2.3", 65536, None), ("10.1.2", 1, None), ("::g", 1, None),
    ("10.1.2.3\x00", 1, None), ("10.1.2.3", 1, True), ("::1", 1, False), ("fe80::1%eth0", 1, None),
])
def test_bad_encoder_input_is_a_local_error(ip: str, port: int, ipv6: bool | None) -> None:
    with pytest.raises(LocalProtocolError):
        compact.encode_peer(ip, port, ipv6=ipv6)


def test_bad_node_id_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="20 bytes"):
        compact.encode_node(b"short", "10.0.0.1", 1)
    with pytest.raises(LocalProtocolError, match="20 bytes"):
        compact.encode_node_list([(b"short", "10.0.0.1", 1)])


# ----------------------------------------------------------------------------------------------- properties


@given(st.one_of(ipv4, ipv6), ports)
def test_one_peer_round_trip(ip: str, port: int) -> None:
    blob = compact.encode_peer(ip, port)
    assert len(blob) == (compact.PEER6_LEN if ":" in ip else compact.PEER4_LEN)
    back_ip, back_port = compact.decode_peer(blob)
    assert ipaddress.ip_address(back_ip) == ipaddress.ip_address(ip) and back_port == port
    assert compact.encode_peer(back_ip, back_port) == blob


@given(st.booleans(), st.data())
def test_peer_list_round_trip(v6: bool, data: st.DataObject) -> None:
    endpoints = data.draw(st.lists(st.tuples(ipv6 if v6 else ipv4, ports), max_size=20))
    blob = compact.encode_peer_list(endpoints, ipv6=v6)
    decoded = compact.decode_peer_list(blob, ipv6=v6)
    assert [(ipaddress.ip_address(ip), port) for ip, port in decoded] == [
        (ipaddress.ip_address(ip), port) for ip, port in endpoints
    ]
    assert compact.encode_peer_list(decoded, ipv6=v6) == blob


@given(st.booleans(), st.data())
def test_node_list_round_trip(v6: bool, data: st.DataObject) -> None:
    nodes = data.draw(st.lists(st.tuples(node_ids, ipv6 if v6 else ipv4, ports), max_size=12))
    blob = compact.encode_node_list(nodes, ipv6=v6)
    assert len(blob) == len(nodes) * (compact.NODE6_LEN if v6 else compact.NODE4_LEN)
    decoded = compact.decode_node_list(blob, ipv6=v6)
    assert [(n, ipaddress.ip_address(ip), p) for n, ip, p in decoded] == [
        (n, ipaddress.ip_address(ip), p) for n, ip, p in nodes
    ]
    assert compact.encode_node_list(decoded, ipv6=v6) == blob


@given(st.binary(max_size=200), st.booleans())
def test_every_well_sized_string_round_trips_byte_for_byte(raw: bytes, v6: bool) -> None:
    for size, decode, encode in (
        (compact.PEER6_LEN if v6 else compact.PEER4_LEN, compact.decode_peer_list, compact.encode_peer_list),
        (compact.NODE6_LEN if v6 else compact.NODE4_LEN, compact.decode_node_list, compact.encode_node_list),
    ):
        blob = raw[: len(raw) - len(raw) % size]
        assert encode(decode(blob, ipv6=v6), ipv6=v6) == blob  # type: ignore[operator]


@given(st.integers(0, 400), st.booleans())
def test_every_wrong_length_is_refused(length: int, v6: bool) -> None:
    blob = bytes(length)
    for size, decode in ((compact.PEER6_LEN if v6 else compact.PEER4_LEN, compact.decode_peer_list),
                         (compact.NODE6_LEN if v6 else compact.NODE4_LEN, compact.decode_node_list)):
        if length % size:
            with pytest.raises(CompactAddressError, match=f"not a multiple of {size}"):
                decode(blob, ipv6=v6)
        else:
            assert len(decode(blob, ipv6=v6)) == length // size
    for exact, one in ((6, compact.decode_peer4), (18, compact.decode_peer6)):
        if length != exact:
            with pytest.raises(CompactAddressError):
                one(blob)
    if length not in (6, 18):
        with pytest.raises(CompactAddressError, match="6 or 18"):
            compact.decode_peer(blob)


@given(st.binary(max_size=400))
def test_hostile_bytes_raise_only_the_typed_error(raw: bytes) -> None:
    decoders = (compact.decode_peer, compact.decode_peer4, compact.decode_peer6,
                lambda b: compact.decode_peer_list(b), lambda b: compact.decode_peer_list(b, ipv6=True),
                lambda b: compact.decode_node_list(b), lambda b: compact.decode_node_list(b, ipv6=True))
    for decode in decoders:
        with contextlib.suppress(CompactAddressError):  # anything else fails the test
            decode(raw)


def _reply_listing(raw: bytes) -> bytes:
    """A get_peers reply whose ``nodes``, ``nodes6`` and ``values`` entry are all ``raw`` (BEP 5, 32)."""
    return bencoding.encode({b"t": b"aa", b"y": b"r",
                             b"r": {b"id": b"\x01" * 20, b"nodes": raw, b"nodes6": raw, b"values": [raw]}})


@given(st.binary(max_size=200))
def test_callers_keep_their_error_types(raw: bytes) -> None:
    for call, error in ((lambda: decode_compact_peers(raw), TrackerError),
                        (lambda: decode_compact_peers(raw, ipv6=True), TrackerError),
                        (lambda: krpc.decode(_reply_listing(raw)), KRPCError),
                        (lambda: decode_pex(bencoding.encode({b"added": raw, b"dropped6": raw})), PexError)):
        with contextlib.suppress(error):  # anything else fails the test
            call()


@given(st.lists(st.tuples(st.one_of(ipv4, ipv6), st.integers(1, 0xFFFF), st.integers(0, 255)), max_size=10))
def test_pex_round_trip_through_the_codec(listed: list[tuple[str, int, int]]) -> None:
    peers = list({(compact.unmap(ip), port): PexPeer(compact.unmap(ip), port, flags)
                  for ip, port, flags in listed if not ipaddress.ip_address(ip).is_unspecified
                  and not ipaddress.ip_address(ip).is_multicast
                  and not ipaddress.ip_address(compact.unmap(ip)).is_unspecified
                  and not ipaddress.ip_address(compact.unmap(ip)).is_multicast}.values())
    decoded = decode_pex(encode_pex(peers))
    v4_first = [p for p in peers if ":" not in p.ip] + [p for p in peers if ":" in p.ip]
    assert [(ipaddress.ip_address(p.ip), p.port, p.flags) for p in decoded.added] == [
        (ipaddress.ip_address(p.ip), p.port, p.flags) for p in v4_first
    ]


def test_format_addr_brackets_ipv6_only() -> None:
    """The one text form of an endpoint (the CLI, the monitor's log, PEX listings, the web bind)."""
    assert compact.format_addr(("10.1.2.3", 6881)) == "10.1.2.3:6881"
    assert compact.format_addr(("::1", 6881)) == "[::1]:6881"
    assert compact.format_addr(("::ffff:10.1.2.3", 1)) == "[::ffff:10.1.2.3]:1"  # the codec's rule: no unmapping


def test_the_monitor_formats_addresses_without_the_cli() -> None:
    """The monitor daemon must not import the command line (it formats through the codec module)."""
    import subprocess
    import sys

    code = "import sys, p2pwatch.monitor.daemon; print(sorted(m for m in sys.modules if m.startswith('p2pwatch.cli')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
