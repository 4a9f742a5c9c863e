"""KRPC codec: BEP 5 / 32 / 33 / 42 / 43 / 51 byte literals, validation, round trips, hypothesis fuzzing."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pwatch import limits
from p2pwatch.dht import krpc
from p2pwatch.dht.krpc import (
    AnnouncePeer,
    Error,
    FindNode,
    GetPeers,
    Message,
    Ping,
    Response,
    SampleInfohashes,
    UnknownQuery,
)
from p2pwatch.dht.nodeinfo import CompactNodes, NodeInfo
from p2pwatch.errors import CompactAddressError, KRPCError, LocalProtocolError
from p2pwatch.torrent import bencoding

A = b"abcdefghij0123456789"
M = b"mnopqrstuvwxyz123456"
N = b"0123456789abcdefghij"
ID_A = b"2:id20:" + A  # bencoded 'id' entry

# ---------------------------------------------------------------------------------- literals (BEP text)

PING_Q = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
PING_R = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re"
FIND_NODE_Q = b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe"
# BEP 5's find_node reply has a 9-byte placeholder "def456..."; here one real 26-byte node (1.2.3.4:6881)
FIND_NODE_R = (
    b"d1:rd2:id20:0123456789abcdefghij5:nodes26:mnopqrstuvwxyz123456\x01\x02\x03\x04\x1a\xe1e1:t2:aa1:y1:re"
)
GET_PEERS_Q = (
    b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe"
)
GET_PEERS_R_VALUES = (
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re"
)
ANNOUNCE_Q = (
    b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
    b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"
)
ERROR_E = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee"
SAMPLE_Q = (
    b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q17:sample_infohashes1:t2:aa1:y1:qe"
)
SAMPLE_R = (
    b"d1:rd2:id20:0123456789abcdefghij8:intervali21600e5:nodes26:mnopqrstuvwxyz123456\x01\x02\x03\x04\x1a\xe1"
    b"3:numi2e7:samples40:" + A + M + b"e1:t2:aa1:y1:re"
)

NODE = NodeInfo(M, "1.2.3.4", 6881)

EXPECTED: dict[bytes, Message] = {
    PING_Q: Ping(b"aa", A),
    PING_R: Response(b"aa", M),
    FIND_NODE_Q: FindNode(b"aa", A, M),
    FIND_NODE_R: Response(b"aa", N, nodes=(NODE,)),
    GET_PEERS_Q: GetPeers(b"aa", A, M),
    GET_PEERS_R_VALUES: Response(
        b"aa", A, values=(("97.120.106.101", 11893), ("105.100.104.116", 28269)), token=b"aoeusnth"
    ),
    ANNOUNCE_Q: AnnouncePeer(b"aa", A, M, 6881, b"aoeusnth", implied_port=True),
    ERROR_E: Error(b"aa", 201, "A Generic Error Ocurred"),
    SAMPLE_Q: SampleInfohashes(b"aa", A, M),
    SAMPLE_R: Response(b"aa", N, nodes=(NODE,), samples=(A, M), num=2, interval=21600),
}
LITERALS = list(EXPECTED)


@pytest.mark.parametrize("data", LITERALS)
def test_literal_decodes(data: bytes) -> None:
    assert krpc.decode(data) == EXPECTED[data]


@pytest.mark.parametrize("data", LITERALS)
def test_literal_every_truncation_fails(data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(KRPCError):
            krpc.decode(data[:cut])


@pytest.mark.parametrize("data", LITERALS)
@pytest.mark.parametrize("tail", [b"x", b"e", b"i1e", b"d1:ai1ee", b"\x00"])
def test_literal_with_trailing_bytes_fails(data: bytes, tail: bytes) -> None:
    with pytest.raises(KRPCError) as info:
        krpc.decode(data + tail)
    assert info.value.transaction_id is None  # undecodable datagrams are dropped, never answered
    assert krpc.error_reply(info.value) is None


@pytest.mark.parametrize("data", LITERALS)
def test_literal_reencodes_to_the_same_bytes(data: bytes) -> None:
    assert krpc.encode(krpc.decode(data)) == data


def test_bep5_placeholder_nodes_are_rejected() -> None:
    # BEP 5's example reply carries "def456..." (9 bytes) as 'nodes': not a multiple of 26
    with pytest.raises(KRPCError) as info:
        krpc.decode(b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re")
    assert info.value.transaction_id == b"aa"
    assert not info.value.from_query
    assert krpc.error_reply(info.value) is None  # never answer a response


# ------------------------------------------------------------------------- libtorrent-style messages

LT_V = b"1:v4:LT\x02\x00"
LT_IP = b"2:ip6:\xc0\x00\x02\x07\x1a\xe1"  # 192.0.2.7:6881, our address as the responder saw it


def test_libtorrent_style_queries() -> None:
    ro = b"2:roi1e"
    get_peers = (
        b"d1:ad2:id20:" + A + b"9:info_hash20:" + M + b"6:noseedi1e6:scrapei1e4:wantl2:n42:n6ee"
        b"1:q9:get_peers" + ro + b"1:t2:\x00\x01" + LT_V + b"1:y1:qe"
    )
    assert krpc.decode(get_peers) == GetPeers(
        b"\x00\x01", A, M, want=(b"n4", b"n6"), noseed=True, scrape=True, read_only=True
    )
    find_node = b"d1:ad2:id20:" + A + b"6:target20:" + M + b"e1:q9:find_node1:t2:\x00\x02" + LT_V + b"1:y1:qe"
    assert krpc.decode(find_node) == FindNode(b"\x00\x02", A, M)
    ping = b"d1:ad2:id20:" + A + b"e1:q4:ping" + ro + b"1:t2:\x00\x03" + LT_V + b"1:y1:qe"
    assert krpc.decode(ping) == Ping(b"\x00\x03", A, read_only=True)
    announce = (
        b"d1:ad2:id20:"
        + A
        + b"9:info_hash20:"
        + M
        + b"1:n4:name4:porti51413e4:seedi1e5:token4:\x01\x02\x03\x04"
        b"e1:q13:announce_peer1:t2:\x00\x04" + LT_V + b"1:y1:qe"
    )
    assert krpc.decode(announce) == AnnouncePeer(b"\x00\x04", A, M, 51413, b"\x01\x02\x03\x04", seed=True)
    sample = (
        b"d1:ad2:id20:"
        + A
        + b"6:target20:"
        + M
        + b"e1:q17:sample_infohashes1:t2:\x00\x05"
        + LT_V
        + b"1:y1:qe"
    )
    assert krpc.decode(sample) == SampleInfohashes(b"\x00\x05", A, M)


def test_libtorrent_style_responses_and_error() -> None:
    nodes6 = N + b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01\x1a\xe2"  # 2001:db8::1:6882
    values = b"6:valuesl6:\x0a\x00\x00\x01\x1a\xe318:\x20\x01\x0d\xb8" + bytes(11) + b"\x02\x1a\xe4e"
    reply = (
        b"d" + LT_IP + b"1:rd2:id20:" + N + b"5:nodes26:" + M + b"\x01\x02\x03\x04\x1a\xe1"
        b"6:nodes638:"
        + nodes6
        + b"1:pi6881e5:token4:\xaa\xbb\xcc\xdd"
        + values
        + b"e1:t2:\x00\x01"
        + LT_V
        + b"1:y1:re"
    )
    assert krpc.decode(reply) == Response(
        b"\x00\x01",
        N,
        nodes=(NODE,),
        nodes6=(NodeInfo(N, "2001:db8::1", 6882),),
        values=(("10.0.0.1", 6883), ("2001:db8::2", 6884)),
        token=b"\xaa\xbb\xcc\xdd",
        external_ip=("192.0.2.7", 6881),
    )
    bloom = bytes(range(256))
    scrape = (
        b"d"
        + LT_IP
        + b"1:rd4:BFpe256:"
        + bloom
        + b"4:BFsd256:"
        + bloom[::-1]
        + b"2:id20:"
        + N
        + b"e1:t2:\x00\x02"
        + LT_V
        + b"1:y1:re"
    )
    assert krpc.decode(scrape) == Response(
        b"\x00\x02", N, bf_seeds=bloom[::-1], bf_peers=bloom, external_ip=("192.0.2.7", 6881)
    )
    error = b"d1:eli203e15:invalid node IDe" + LT_IP + b"1:t2:\x00\x03" + LT_V + b"1:y1:ee"
    assert krpc.decode(error) == Error(b"\x00\x03", 203, "invalid node ID")


def test_external_ip_v6_and_malformed_ip_is_ignored() -> None:
    v6 = (
        b"d2:ip18:"
        + b"\x20\x01\x0d\xb8"
        + bytes(11)
        + b"\x07\x00\x50"
        + b"1:rd2:id20:"
        + N
        + b"e1:t1:x1:y1:re"
    )
    assert krpc.decode(v6) == Response(b"x", N, external_ip=("2001:db8::7", 80))
    bad = b"d2:ip5:abcde1:rd2:id20:" + N + b"e1:t1:x1:y1:re"
    assert krpc.decode(bad) == Response(b"x", N)


# ------------------------------------------------------------------------------------- query rules


def _query(method: bytes, args: bytes, tid: bytes = b"tt", top: bytes = b"") -> bytes:
    return (
        b"d1:ad"
        + ID_A
        + args
        + b"e1:q"
        + str(len(method)).encode()
        + b":"
        + method
        + top
        + b"1:t2:"
        + tid
        + b"1:y1:qe"
    )


def _malformed_query(data: bytes) -> KRPCError:
    with pytest.raises(KRPCError) as info:
        krpc.decode(data)
    exc = info.value
    assert exc.code == 203 and exc.transaction_id == b"tt" and exc.from_query
    reply = krpc.error_reply(exc)
    assert reply is not None
    answer = krpc.decode(reply)
    assert isinstance(answer, Error) and answer.tid == b"tt" and answer.code == 203
    return exc


@pytest.mark.parametrize(
    "data",
    [
        _query(b"find_node", b"6:target19:" + M[:19]),
        _query(b"find_node", b""),
        _query(b"get_peers", b"9:info_hash21:" + M + b"x"),
        _query(b"get_peers", b"9:info_hashi5e"),
        _query(b"sample_infohashes", b"6:targetli1ee"),
        _query(b"get_peers", b"9:info_hash20:" + M + b"4:want2:n4"),
        _query(b"get_peers", b"9:info_hash20:" + M + b"6:noseed1:1"),
        _query(b"announce_peer", b"9:info_hash20:" + M + b"4:porti6881e"),
        _query(b"announce_peer", b"9:info_hash20:" + M + b"4:porti6881e5:token65:" + b"t" * 65),
        _query(b"announce_peer", b"9:info_hash20:" + M + b"4:porti0e5:token1:t"),
        _query(b"announce_peer", b"9:info_hash20:" + M + b"4:porti65536e5:token1:t"),
        _query(b"announce_peer", b"9:info_hash20:" + M + b"5:token1:t"),
        _query(b"ping", b"", top=b"2:ro1:1"),
        b"d1:ad2:id19:" + A[:19] + b"e1:q4:ping1:t2:tt1:y1:qe",
        b"d1:ade1:q4:ping1:t2:tt1:y1:qe",
        b"d1:ali1ee1:q4:ping1:t2:tt1:y1:qe",
        b"d1:ad" + ID_A + b"e1:t2:tt1:y1:qe",
        b"d1:ad" + ID_A + b"e1:qi1e1:t2:tt1:y1:qe",
    ],
)
def test_malformed_queries_get_a_203_reply(data: bytes) -> None:
    _malformed_query(data)


def test_announce_port_rules() -> None:
    base = b"9:info_hash20:" + M + b"12:implied_porti1e"
    token = b"5:token1:t"
    assert krpc.decode(_query(b"announce_peer", base + b"4:porti0e" + token)) == AnnouncePeer(
        b"tt", A, M, 0, b"t", implied_port=True
    )
    assert krpc.decode(_query(b"announce_peer", base + token)).port == 0  # type: ignore[union-attr]
    assert krpc.decode(_query(b"announce_peer", base + b"4:porti70000e" + token)).port == 0  # type: ignore[union-attr]
    explicit = b"9:info_hash20:" + M + b"12:implied_porti0e4:porti1e" + token
    assert krpc.decode(_query(b"announce_peer", explicit)) == AnnouncePeer(b"tt", A, M, 1, b"t")


def test_want_keeps_only_n4_n6_in_canonical_order() -> None:
    args = b"6:target20:" + M + b"4:wantl2:n62:xxi7e2:n42:n6e"
    assert krpc.decode(_query(b"find_node", args)) == FindNode(b"tt", A, M, want=(b"n4", b"n6"))
    args = b"6:target20:" + M + b"4:wantl2:n5e"
    assert krpc.decode(_query(b"find_node", args)) == FindNode(b"tt", A, M)


def test_unknown_query_keeps_target_for_find_node_style_answer() -> None:
    assert krpc.decode(_query(b"get", b"6:target20:" + M)) == UnknownQuery(b"tt", A, b"get", M)
    assert krpc.decode(_query(b"vote", b"9:info_hash20:" + M)) == UnknownQuery(b"tt", A, b"vote", M)
    assert krpc.decode(_query(b"put", b"5:token1:x1:v1:x")) == UnknownQuery(b"tt", A, b"put", None)
    assert krpc.decode(_query(b"x", b"6:target3:abc", top=b"2:roi1e")) == UnknownQuery(
        b"tt", A, b"x", None, read_only=True
    )


def test_ro_and_extra_keys_are_read() -> None:
    assert krpc.decode(_query(b"ping", b"3:zzzli1ee", top=b"2:roi0e3:zzzi9e")) == Ping(b"tt", A)
    assert krpc.decode(_query(b"ping", b"", top=b"2:roi7e")) == Ping(b"tt", A, read_only=True)


def test_query_method_class_attribute() -> None:
    assert Ping(b"", A).method == b"ping" and GetPeers(b"", A, M).method == b"get_peers"
    assert SampleInfohashes(b"", A, M).method == b"sample_infohashes"
    assert UnknownQuery(b"", A, b"zz", None).method == b"zz"


# ----------------------------------------------------------------------------------- response rules


def _reply(body: bytes, top: bytes = b"") -> bytes:
    return b"d" + top + b"1:rd2:id20:" + N + body + b"e1:t2:rr1:y1:re"


def test_values_skip_and_count_malformed_entries() -> None:
    body = b"6:valuesl6:\x01\x02\x03\x04\x00\x505:short12:" + b"x" * 12 + b"i5e6:\x05\x06\x07\x08\x00\x51e"
    r = krpc.decode(_reply(body))
    assert isinstance(r, Response)
    assert r.values == (("1.2.3.4", 80), ("5.6.7.8", 81))
    assert r.skipped_values == 3
    assert r == Response(b"rr", N, values=(("1.2.3.4", 80), ("5.6.7.8", 81)))  # diagnostic, not compared


@pytest.mark.parametrize(
    "body",
    [
        b"5:nodes25:" + b"n" * 25,
        b"5:nodes27:" + b"n" * 27,
        b"6:nodes626:" + b"n" * 26,
        b"5:nodesi1e",
        b"6:values6:abcdef",
        b"5:token65:" + b"t" * 65,
        b"5:tokeni1e",
        b"7:samples19:" + b"s" * 19,
        b"7:samplesli1ee",
        b"3:numi-1e",
        b"3:num1:1",
        b"8:intervali-5e",
        b"4:BFsd255:" + b"b" * 255,
        b"4:BFpe257:" + b"b" * 257,
    ],
)
def test_malformed_responses_fail_without_reply(body: bytes) -> None:
    with pytest.raises(KRPCError) as info:
        krpc.decode(_reply(body))
    assert info.value.transaction_id == b"rr" and not info.value.from_query
    assert krpc.error_reply(info.value) is None


def test_too_many_samples() -> None:
    n = limits.MAX_SAMPLES_PER_REPLY
    assert n * 20 > limits.MAX_DATAGRAM  # the datagram limit already stops this; the check stays explicit
    with pytest.raises(KRPCError):
        krpc.decode(_reply(b"7:samples" + str((n + 1) * 20).encode() + b":" + b"s" * ((n + 1) * 20)))


def test_bep51_empty_samples_are_written() -> None:
    empty = Response(b"rr", N, samples=(), num=0, interval=60)
    data = krpc.encode(empty)
    assert b"7:samples0:" in data
    assert krpc.decode(data) == empty
    assert b"samples" not in krpc.encode(Response(b"rr", N))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i1e",
        b"le",
        b"d1:y1:qe",
        b"d1:ti1e1:y1:qe",
        b"d1:t17:" + b"t" * 17 + b"1:y1:qe",
        b"\xff" * 10,
        b"d" * 20 + b"e" * 20,
        b"d1:a" + b"l" * 10 + b"e" * 10 + b"1:t1:x1:y1:qe",
        b"d1:t1:x1:y1:re" + b" " * limits.MAX_DATAGRAM,
    ],
)
def test_garbage_gets_no_reply(data: bytes) -> None:
    with pytest.raises(KRPCError) as info:
        krpc.decode(data)
    assert info.value.transaction_id is None
    assert krpc.error_reply(info.value) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"d1:eli202ee1:t1:x1:y1:ee", Error(b"x", 202, "")),
        (b"d1:eli204e2:\xff\xfee1:t1:x1:y1:ee", Error(b"x", 204, "\ufffd\ufffd")),
        (b"d1:eli201e3:abci9ee1:t0:1:y1:ee", Error(b"", 201, "abc")),
    ],
)
def test_lenient_errors(data: bytes, expected: Error) -> None:
    assert krpc.decode(data) == expected


@pytest.mark.parametrize("data", [b"d1:ele1:t1:x1:y1:ee", b"d1:el1:xe1:t1:x1:y1:ee", b"d1:e1:x1:t1:x1:y1:ee"])
def test_malformed_errors(data: bytes) -> None:
    with pytest.raises(KRPCError) as info:
        krpc.decode(data)
    assert info.value.transaction_id == b"x" and krpc.error_reply(info.value) is None


def test_unknown_y_is_an_error_with_tid_but_no_reply() -> None:
    with pytest.raises(KRPCError) as info:
        krpc.decode(b"d1:t1:x1:y1:ze")
    assert info.value.transaction_id == b"x" and krpc.error_reply(info.value) is None


# ----------------------------------------------------------------------------------------- encoding


def test_encode_top_level_options_exact_bytes() -> None:
    data = krpc.encode(Ping(b"aa", A, read_only=True), client_version=b"PW01")
    assert data == b"d1:ad2:id20:" + A + b"e1:q4:ping2:roi1e1:t2:aa1:v4:PW011:y1:qe"
    data = krpc.encode(Response(b"aa", M), external_ip=("192.0.2.7", 6881))
    assert data == b"d" + LT_IP + b"1:rd2:id20:" + M + b"e1:t2:aa1:y1:re"
    data = krpc.encode(Response(b"aa", M, external_ip=("10.0.0.1", 1)), external_ip=("2001:db8::7", 80))
    assert krpc.decode(data) == Response(b"aa", M, external_ip=("2001:db8::7", 80))


def test_error_reply_round_trip() -> None:
    exc = KRPCError("bad token", 203, b"q1", from_query=True)
    assert krpc.error_reply(exc) == b"d1:eli203e9:bad tokene1:t2:q11:y1:ee"
    assert krpc.error_reply(KRPCError("x", 203, None, from_query=True)) is None
    assert krpc.error_reply(KRPCError("x", 203, b"q1")) is None


@pytest.mark.parametrize(
    "message",
    [
        Ping(b"aa", A[:19]),
        Ping(b"a" * 17, A),
        Ping("aa", A),  # type: ignore[arg-type]
        FindNode(b"aa", A, M, want=(b"n5",)),
        GetPeers(b"aa", A, M + b"x"),
        AnnouncePeer(b"aa", A, M, 0, b"t"),
        AnnouncePeer(b"aa", A, M, 65536, b"t"),
        AnnouncePeer(b"aa", A, M, 1, b"t" * 65),
        UnknownQuery(b"aa", A, b"ping", None),
        UnknownQuery(b"aa", A, b"get", b"short"),
        Response(b"aa", N, nodes=(NodeInfo(M, "2001:db8::1", 1),)),
        Response(b"aa", N, nodes6=(NodeInfo(M, "1.2.3.4", 1),)),
        Response(b"aa", N, nodes=(NodeInfo(M[:19], "1.2.3.4", 1),)),
        Response(b"aa", N, nodes=(NodeInfo(M, "1.2.3.4", 65536),)),
        Response(b"aa", N, values=(("not an ip", 1),)),
        Response(b"aa", N, samples=(b"short",)),
        Response(b"aa", N, num=-1),
        Response(b"aa", N, bf_seeds=b"x"),
        Response(b"aa", N, token=b"t" * 65),
        Error(b"aa", "201", "x"),  # type: ignore[arg-type]
        Error(b"aa", 201, "\ud800"),
        "not a message",
    ],
)
def test_encode_rejects_what_decode_would_refuse(message: Message) -> None:
    with pytest.raises(LocalProtocolError):
        krpc.encode(message)


def test_encode_rejects_bad_options() -> None:
    with pytest.raises(LocalProtocolError):
        krpc.encode(Ping(b"aa", A), client_version="LT")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        krpc.encode(Ping(b"aa", A), external_ip=("999.1.1.1", 1))


# ----------------------------------------------------------------------------------------- hypothesis

ids = st.binary(min_size=20, max_size=20)
tids = st.binary(max_size=limits.MAX_KRPC_TRANSACTION_ID)
tokens = st.binary(max_size=limits.MAX_KRPC_TOKEN)
ports = st.integers(0, 0xFFFF)
wants = st.sampled_from([(), (b"n4",), (b"n6",), (b"n4", b"n6")])
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
nodes4 = st.lists(st.builds(NodeInfo, ids, ipv4, ports), max_size=8).map(tuple)
nodes6 = st.lists(st.builds(NodeInfo, ids, ipv6, ports), max_size=8).map(tuple)
values = st.lists(st.tuples(ipv4 | ipv6, ports), max_size=8).map(tuple)
blooms = st.none() | st.binary(min_size=256, max_size=256)
counts = st.none() | st.integers(0, 2**40)
methods = st.binary(max_size=20).filter(
    lambda m: m not in (b"ping", b"find_node", b"get_peers", b"announce_peer", b"sample_infohashes")
)

messages = st.one_of(
    st.builds(Ping, tids, ids, st.booleans()),
    st.builds(FindNode, tids, ids, ids, wants, st.booleans()),
    st.builds(GetPeers, tids, ids, ids, wants, st.booleans(), st.booleans(), st.booleans()),
    st.builds(
        AnnouncePeer,
        tids,
        ids,
        ids,
        st.integers(1, 0xFFFF),
        tokens,
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(AnnouncePeer, tids, ids, ids, st.just(0), tokens, st.just(True), st.booleans(), st.booleans()),
    st.builds(SampleInfohashes, tids, ids, ids, wants, st.booleans()),
    st.builds(UnknownQuery, tids, ids, methods, st.none() | ids, st.booleans()),
    st.builds(
        Response,
        tids,
        ids,
        nodes4,
        nodes6,
        values,
        st.none() | tokens,
        st.lists(ids, max_size=10).map(tuple),
        counts,
        counts,
        blooms,
        blooms,
        st.none() | st.tuples(ipv4 | ipv6, ports),
    ),
    st.builds(Error, tids, st.integers(-(2**40), 2**40), st.text(max_size=40)),
)


def _canonical_ip(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


def _normalise(m: Message) -> Message:
    """hypothesis IPv6 strings are already compressed; IPv4-mapped ones decode the same way."""
    if isinstance(m, Response):
        return dataclasses.replace(
            m,
            nodes=tuple(NodeInfo(n.id, _canonical_ip(n.ip), n.port) for n in m.nodes),
            nodes6=tuple(NodeInfo(n.id, _canonical_ip(n.ip), n.port) for n in m.nodes6),
            values=tuple((_canonical_ip(ip), p) for ip, p in m.values),
            external_ip=None if m.external_ip is None else (_canonical_ip(m.external_ip[0]), m.external_ip[1]),
        )
    return m


@given(messages, st.none() | st.binary(max_size=8))
def test_round_trip(message: Message, version: bytes | None) -> None:
    data = krpc.encode(message, client_version=version)
    decoded = krpc.decode(data)
    assert _normalise(decoded) == _normalise(message)
    assert krpc.encode(decoded, client_version=version) == data


def _only_krpc_errors(data: bytes) -> None:
    try:
        message = krpc.decode(data)
    except KRPCError as exc:
        assert exc.code == 203, exc  # 202 would mean an internal decoder bug
        reply = krpc.error_reply(exc)
        if reply is not None:
            assert exc.from_query and exc.transaction_id is not None
            assert krpc.decode(reply) == Error(exc.transaction_id, 203, str(exc))
        return
    again = krpc.decode(krpc.encode(message))
    assert again == message  # decoded values re-encode stably


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_krpc_error(data: bytes) -> None:
    _only_krpc_errors(data)


KRPC_KEYS = [
    b"t",
    b"y",
    b"q",
    b"a",
    b"r",
    b"e",
    b"id",
    b"target",
    b"info_hash",
    b"nodes",
    b"nodes6",
    b"values",
]
KRPC_KEYS += [b"token", b"port", b"implied_port", b"want", b"ro", b"ip", b"samples", b"num", b"BFsd"]
krpc_like = st.recursive(
    st.binary(max_size=24)
    | st.integers(-5, 70000)
    | st.sampled_from([b"q", b"r", b"e", b"ping", b"get_peers", b"announce_peer", b"n4"])
    | ids,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(KRPC_KEYS), c, max_size=6),
    max_leaves=20,
)


@given(krpc_like)
def test_structured_garbage_raises_only_krpc_error(value: object) -> None:
    _only_krpc_errors(bencoding.encode(value))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.sampled_from(LITERALS), st.data())
def test_mutations_of_valid_messages(data: bytes, draw: st.DataObject) -> None:
    buf = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 3))):
        op = draw.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= draw.draw(st.integers(1, 255))
        elif op == "insert":
            buf[pos:pos] = draw.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del buf[pos : pos + draw.draw(st.integers(1, 4))]
        else:
            del buf[pos:]
    _only_krpc_errors(bytes(buf))


_node_ids = st.binary(min_size=20, max_size=20)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ports = st.integers(1, 65535)


@given(
    tid=st.binary(max_size=4), sender=_node_ids,
    nodes=st.lists(st.builds(NodeInfo, _node_ids, _ipv4, _ports), max_size=8),
    nodes6=st.lists(st.builds(NodeInfo, _node_ids, st.just("2001:db8::1"), _ports), max_size=2),
    values=st.lists(st.tuples(_ipv4, _ports), max_size=8), token=st.none() | st.binary(max_size=20),
    samples=st.lists(_node_ids, max_size=3), num=st.none() | st.integers(0, 1000),
    interval=st.none() | st.integers(0, 21600), bloom=st.none() | st.binary(min_size=256, max_size=256),
    version=st.none() | st.binary(max_size=4), ip=st.none() | st.tuples(_ipv4, _ports),
)
def test_fast_response_encoder_equals_the_dict_encoder(tid: bytes, sender: bytes, nodes: list[NodeInfo],
                                                       nodes6: list[NodeInfo], values: list[tuple[str, int]],
                                                       token: bytes | None, samples: list[bytes], num: int | None,
                                                       interval: int | None, bloom: bytes | None,
                                                       version: bytes | None, ip: tuple[str, int] | None) -> None:
    from p2pwatch.dht.krpc import encode_response_dict
    from p2pwatch.torrent import bencoding

    message = krpc.Response(tid, sender, nodes=tuple(nodes), nodes6=tuple(nodes6), values=tuple(values), token=token,
                            samples=tuple(samples), num=num, interval=interval, bf_seeds=bloom, bf_peers=bloom)
    reference = encode_response_dict(message)
    if version is not None:
        reference[b"v"] = version
    if ip is not None:
        reference[b"ip"] = krpc.compact_address(*ip)
    assert krpc.encode(message, client_version=version, external_ip=ip) == bencoding.encode(reference)


def test_round_trip_of_an_ipv4_mapped_external_ip() -> None:
    """inet_ntop writes ::ffff:0:0 as ::ffff:0.0.0.0: the same address (found by hypothesis)."""
    message = Response(b"t1", b"\x01" * 20, external_ip=("::ffff:0:0", 1))
    decoded = krpc.decode(krpc.encode(message))
    assert isinstance(decoded, Response) and decoded.external_ip is not None
    assert ipaddress.ip_address(decoded.external_ip[0]) == ipaddress.ip_address("::ffff:0:0")
    assert _normalise(decoded) == _normalise(message)


def test_a_decoded_replys_nodes_are_read_when_first_used() -> None:
    """Issue 12: ``nodes`` stays the compact string until it is used; it equals and hashes as the tuple."""
    reply = krpc.decode(FIND_NODE_R)
    assert isinstance(reply, Response) and isinstance(reply.nodes, CompactNodes)
    assert reply.nodes._nodes is None  # not read yet
    assert len(reply.nodes) == 1 and bool(reply.nodes)
    assert reply.nodes == (NODE,) and list(reply.nodes) == [NODE]
    assert (NODE,) == reply.nodes  # noqa: SIM300 (the tuple on the left: its comparison is reflected)
    assert reply.nodes[0] == NODE and reply.nodes[:1] == (NODE,)
    assert hash(reply.nodes) == hash((NODE,)) and reply == Response(b"aa", N, nodes=(NODE,))
    assert reply.nodes != (NODE, NODE) and reply.nodes != [NODE]  # a tuple's equality, not a list's


def test_a_decoded_reply_encodes_its_nodes_as_they_came() -> None:
    reply = krpc.decode(FIND_NODE_R)
    assert krpc.encode(reply) == FIND_NODE_R
    assert isinstance(reply, Response)
    assert reply.nodes == (NODE,)  # read afterwards: the same nodes
    moved = dataclasses.replace(reply, nodes=(), nodes6=reply.nodes)  # IPv4 entries given as nodes6
    with pytest.raises(LocalProtocolError):
        krpc.encode(moved)


def test_compact_nodes_checks_its_length_at_once() -> None:
    with pytest.raises(CompactAddressError):
        CompactNodes(bytes(27), ipv6=False)
    assert len(CompactNodes(bytes(38 * 2), ipv6=True)) == 2
