"""BEP 15 UDP tracker: codec byte literals, the client state machine (schedule, connection ids, errors),
hypothesis on both directions of the codec, and the trio driver against misbehaving test trackers."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch import netguard
from p2pwatch.errors import (
    ConfigError,
    LocalProtocolError,
    NetworkRefused,
    TrackerError,
    TrackerFailure,
    TrackerTimeout,
)
from p2pwatch.probe import trackers
from p2pwatch.probe.udp_tracker import (
    AnnounceEvent,
    AnnouncePacket,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Peer,
    RequestDone,
    RequestFailed,
    ScrapePacket,
    ScrapeResponse,
    ScrapeStats,
    UDPTrackerClient,
    decode_request,
    decode_response,
    decode_url_data,
    encode_request,
    encode_response,
    encode_url_data,
    parse_udp_url,
)
from tests.conftest import loopback_address

IH = bytes(range(20))
PID = b"-PW0100-abcdefghijkl"
REQ = AnnounceRequest(IH, PID, 6881, AnnounceEvent.STARTED, downloaded=1, left=2, uploaded=3, key=0xDEADBEEF,
                      num_want=200)
CID = 0x0102030405060708

# --------------------------------------------------------------------------- codec: byte literals


def test_connect_request_literal() -> None:
    literal = bytes.fromhex("0000041727101980" "00000000" "11223344")
    assert encode_request(ConnectRequest(0x11223344)) == literal
    assert decode_request(bytes.fromhex("000004172710198000000000" "11223344")) == ConnectRequest(0x11223344)


def test_announce_request_layout() -> None:
    data = encode_request(AnnouncePacket(CID, 7, REQ))
    assert len(data) == 98
    assert data[0:8] == CID.to_bytes(8, "big")
    assert data[8:12] == b"\x00\x00\x00\x01" and data[12:16] == b"\x00\x00\x00\x07"
    assert data[16:36] == IH and data[36:56] == PID
    assert struct.unpack(">QQQ", data[56:80]) == (1, 2, 3)
    assert data[80:84] == b"\x00\x00\x00\x02"  # started
    assert data[84:88] == b"\x00" * 4  # IP address: default
    assert data[88:92] == b"\xde\xad\xbe\xef"
    assert data[92:96] == (200).to_bytes(4, "big")
    assert data[96:98] == (6881).to_bytes(2, "big")
    assert decode_request(data) == AnnouncePacket(CID, 7, REQ)


def test_announce_request_default_numwant_is_minus_one() -> None:
    data = encode_request(AnnouncePacket(CID, 1, AnnounceRequest(IH, PID, 1)))
    assert data[92:96] == b"\xff\xff\xff\xff"


def test_announce_request_with_bep41_url_data() -> None:
    path = b"/announce?passkey=" + b"x" * 300
    data = encode_request(AnnouncePacket(CID, 1, REQ, path))
    options = data[98:]
    assert options[0] == 2 and options[1] == 255 and options[2:257] == path[:255]
    assert options[257] == 2 and options[258] == len(path) - 255
    assert decode_url_data(options) == path
    assert decode_request(data).url_data == path  # type: ignore[union-attr]
    # NOP options are skipped, EndOfOptions stops
    assert decode_url_data(b"\x01\x02\x02ab\x00\x02\x01z") == b"ab"
    with pytest.raises(TrackerError):
        decode_url_data(b"\x02\x05ab")
    assert encode_url_data(b"") == b""


def test_scrape_request_literal() -> None:
    data = encode_request(ScrapePacket(CID, 9, (IH, b"\xff" * 20)))
    assert data == CID.to_bytes(8, "big") + b"\x00\x00\x00\x02\x00\x00\x00\x09" + IH + b"\xff" * 20
    assert decode_request(data) == ScrapePacket(CID, 9, (IH, b"\xff" * 20))
    with pytest.raises(LocalProtocolError):
        encode_request(ScrapePacket(CID, 9, (IH,) * 75))


def test_connect_response_literal() -> None:
    data = bytes.fromhex("00000000" "11223344" "0102030405060708")
    assert decode_response(data) == ConnectResponse(0x11223344, CID)
    assert decode_response(data + b"extension") == ConnectResponse(0x11223344, CID)  # longer is fine
    assert encode_response(ConnectResponse(0x11223344, CID)) == data
    with pytest.raises(TrackerError):
        decode_response(data[:15])


def test_announce_response_ipv4_literal() -> None:
    data = (bytes.fromhex("00000001" "00000005" "00000708" "00000002" "00000003")
            + bytes([127, 0, 0, 2, 0x1A, 0xE1]) + bytes([10, 1, 2, 3, 0, 80]))
    reply = decode_response(data)
    assert reply == AnnounceResponse(5, 1800, 2, 3, (Peer("127.0.0.2", 6881), Peer("10.1.2.3", 80)))
    assert encode_response(reply) == data
    with pytest.raises(TrackerError, match="multiple of 6"):
        decode_response(data + b"\x01")


def test_announce_response_ipv6_peers() -> None:
    v6 = bytes.fromhex("20010db8000000000000000000000001") + b"\x1a\xe1"
    data = bytes.fromhex("00000001" "00000005" "00000708" "00000000" "00000001") + v6
    reply = decode_response(data, ipv6=True)
    assert isinstance(reply, AnnounceResponse)
    assert reply.peers == (Peer("2001:db8::1", 6881),)
    assert encode_response(reply, ipv6=True) == data
    # the address family of the datagram decides the stride: the same bytes over IPv4 are three peers
    as_v4 = decode_response(data, ipv6=False)
    assert isinstance(as_v4, AnnounceResponse) and len(as_v4.peers) == 3
    with pytest.raises(TrackerError, match="multiple of 18"):
        decode_response(data[:-1], ipv6=True)


def test_bare_announce_header_is_opentrackers_refusal() -> None:
    with pytest.raises(TrackerFailure, match="does not serve"):
        decode_response(bytes.fromhex("00000001" "00000005"))
    with pytest.raises(TrackerError):
        decode_response(bytes.fromhex("00000001" "00000005" "0000"))


def test_scrape_and_error_response_literals() -> None:
    data = bytes.fromhex("00000002" "00000009" "00000001" "00000002" "00000003"
                         "0000000a" "0000000b" "0000000c")
    reply = decode_response(data)
    assert reply == ScrapeResponse(9, (ScrapeStats(1, 2, 3), ScrapeStats(10, 11, 12)))
    assert encode_response(reply) == data
    assert decode_response(data + b"\x00\x01") == reply  # a partial trailing entry is ignored
    err = bytes.fromhex("00000003" "00000009") + b"Connection ID missmatch.\x00"
    assert decode_response(err) == ErrorResponse(9, "Connection ID missmatch.\x00")
    assert decode_response(bytes.fromhex("00000003" "00000009")) == ErrorResponse(9, "")


def test_every_prefix_decodes_or_raises_a_typed_error() -> None:
    full = encode_response(AnnounceResponse(1, 60, 1, 1, (Peer("127.0.0.9", 1),)))
    for cut in range(len(full) + 1):
        with contextlib.suppress(TrackerError):
            decode_response(full[:cut])
    with pytest.raises(TrackerError, match="unknown"):
        decode_response(bytes.fromhex("00000009" "00000000"))


def test_decode_request_rejects_garbage() -> None:
    with pytest.raises(TrackerError):
        decode_request(b"\x00" * 15)
    with pytest.raises(TrackerError, match="protocol id"):
        decode_request(bytes(8) + bytes(4) + bytes(4))
    with pytest.raises(TrackerError):
        decode_request(CID.to_bytes(8, "big") + b"\x00\x00\x00\x01" + bytes(4) + bytes(50))  # short announce
    bad_event = bytearray(encode_request(AnnouncePacket(CID, 1, REQ)))
    bad_event[80:84] = b"\x00\x00\x00\x09"
    with pytest.raises(TrackerError, match="event"):
        decode_request(bytes(bad_event))
    with pytest.raises(TrackerError):
        decode_request(CID.to_bytes(8, "big") + b"\x00\x00\x00\x02" + bytes(4) + bytes(21))


def test_parse_udp_url() -> None:
    assert parse_udp_url("udp://127.0.0.1:6969/announce") == ("127.0.0.1", 6969, b"")
    assert parse_udp_url("udp://127.0.0.1:6969") == ("127.0.0.1", 6969, b"")
    assert parse_udp_url("udp://[::1]:80/x?k=1") == ("::1", 80, b"/x?k=1")
    for bad in ("http://127.0.0.1:1/announce", "udp://127.0.0.1/announce", "udp://:5", "udp://h:99999"):
        with pytest.raises(ConfigError):
            parse_udp_url(bad)


def test_announce_request_validates_its_fields() -> None:
    for kwargs in ({"infohash": b"x"}, {"port": 70000}, {"num_want": -2}, {"left": -1}, {"key": 1 << 32}):
        fields = {"infohash": IH, "peer_id": PID, "port": 1} | kwargs
        with pytest.raises(LocalProtocolError):
            AnnounceRequest(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hypothesis


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_decode_response_raises_only_typed_errors(data: bytes, ipv6: bool) -> None:
    with contextlib.suppress(TrackerError):
        decode_response(data, ipv6=ipv6)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decode_request_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(TrackerError):
        decode_request(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=120), max_size=8), st.integers(0, 2**32 - 1))
def test_client_survives_any_datagrams(datagrams: list[bytes], tid_seed: int) -> None:
    client = UDPTrackerClient(rng=random.Random(tid_seed))
    handle = client.announce(REQ, 0.0)
    (connect,) = client.datagrams_to_send()
    tid = connect[12:16]
    for i, data in enumerate(datagrams):
        # half of them carry our transaction id, so the deeper paths run too
        if i % 2 and len(data) >= 8:
            data = data[:4] + tid + data[8:]
        for event in client.receive_datagram(data, 1.0):
            assert event.handle == handle
            if isinstance(event, RequestFailed):
                assert isinstance(event.error, TrackerError)


peers_v4 = st.lists(st.builds(Peer, st.ip_addresses(v=4).map(str), st.integers(0, 65535)), max_size=40)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), peers_v4)
def test_announce_response_round_trip(tid: int, interval: int, count: int, peers: list[Peer]) -> None:
    reply = AnnounceResponse(tid, interval, count, count, tuple(peers))
    assert decode_response(encode_response(reply)) == reply


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
       st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=74))
def test_scrape_request_round_trip(cid: int, tid: int, hashes: list[bytes]) -> None:
    packet = ScrapePacket(cid, tid, tuple(hashes))
    assert decode_request(encode_request(packet)) == packet


# --------------------------------------------------------------------------- the state machine


def _answer_connect(client: UDPTrackerClient, now: float, cid: int = CID) -> bytes:
    (connect,) = client.datagrams_to_send()
    assert decode_request(connect) == ConnectRequest(int.from_bytes(connect[12:16], "big"))
    tid = int.from_bytes(connect[12:16], "big")
    assert client.receive_datagram(encode_response(ConnectResponse(tid, cid)), now) == []
    return connect


def test_connect_then_announce_then_reuse_of_the_connection_id() -> None:
    client = UDPTrackerClient(rng=random.Random(1))
    handle = client.announce(REQ, 0.0)
    _answer_connect(client, 1.0)
    (announce,) = client.datagrams_to_send()
    packet = decode_request(announce)
    assert isinstance(packet, AnnouncePacket) and packet.connection_id == CID and packet.request == REQ
    reply = AnnounceResponse(packet.transaction_id, 1800, 1, 2, (Peer("127.0.0.3", 5),))
    (event,) = client.receive_datagram(encode_response(reply), 2.0)
    assert event == RequestDone(handle, reply)
    # within 60 s of the connect reply: no new connect
    second = client.scrape([IH], 60.0)
    (scrape,) = client.datagrams_to_send()
    assert isinstance(decode_request(scrape), ScrapePacket)
    assert client.connects_sent == 1
    client.cancel(second)
    # from 61 s on the connection id has expired
    client.announce(REQ, 61.0)
    (again,) = client.datagrams_to_send()
    assert decode_request(again) == ConnectRequest(int.from_bytes(again[12:16], "big"))
    assert client.connects_sent == 2


def test_connect_retransmission_schedule_and_timeout() -> None:
    client = UDPTrackerClient(base_timeout=15.0, max_retries=3, rng=random.Random(2))
    handle = client.announce(REQ, 0.0)
    sent_at = [0.0]
    assert len(client.datagrams_to_send()) == 1
    while True:
        deadline = client.next_deadline()
        assert deadline is not None
        events = client.handle_timeout(deadline)
        if events:
            break
        assert len(client.datagrams_to_send()) == 1
        sent_at.append(deadline)
    assert sent_at == [0, 15, 45, 105]  # BEP 15's "connect times out" example
    assert events == [RequestFailed(handle, events[0].error)]  # type: ignore[union-attr]
    assert isinstance(events[0].error, TrackerTimeout)  # type: ignore[union-attr]
    assert client.next_deadline() is None and client.pending() == 0


def test_announce_times_out_example_from_bep15() -> None:
    """Connect answered at t=1, announce at 1, 16, 46; at 106 the id has expired: connect, again at 226."""
    client = UDPTrackerClient(rng=random.Random(3))
    client.announce(REQ, 0.0)
    client.handle_timeout(0.5)
    _answer_connect(client, 1.0)
    (first,) = client.datagrams_to_send()
    assert isinstance(decode_request(first), AnnouncePacket)
    log: list[tuple[float, str]] = []
    for _ in range(4):
        deadline = client.next_deadline()
        assert deadline is not None
        assert client.handle_timeout(deadline) == []
        log += [(deadline, type(decode_request(data)).__name__) for data in client.datagrams_to_send()]
    assert log == [(16.0, "AnnouncePacket"), (46.0, "AnnouncePacket"), (106.0, "ConnectRequest"),
                   (226.0, "ConnectRequest")]


def test_late_reply_to_an_earlier_copy_is_accepted() -> None:
    client = UDPTrackerClient(base_timeout=1.0, rng=random.Random(4))
    handle = client.scrape([IH], 0.0)
    _answer_connect(client, 0.1)
    (scrape,) = client.datagrams_to_send()
    client.handle_timeout(1.1)
    (copy,) = client.datagrams_to_send()
    assert copy == scrape  # same transaction id
    tid = int.from_bytes(scrape[12:16], "big")
    (event,) = client.receive_datagram(encode_response(ScrapeResponse(tid, (ScrapeStats(4, 5, 6),))), 1.5)
    assert event == RequestDone(handle, ScrapeResponse(tid, (ScrapeStats(4, 5, 6),)))


def test_wrong_transaction_ids_and_runts_are_ignored() -> None:
    client = UDPTrackerClient(rng=random.Random(5))
    client.announce(REQ, 0.0)
    (connect,) = client.datagrams_to_send()
    tid = int.from_bytes(connect[12:16], "big")
    assert client.receive_datagram(encode_response(ConnectResponse(tid ^ 1, CID)), 0.1) == []
    assert client.receive_datagram(b"\x00\x00\x00", 0.1) == []
    assert client.ignored == 2 and not client.connected(0.1)


def test_error_packet_fails_the_request_with_the_trackers_text() -> None:
    client = UDPTrackerClient(rng=random.Random(6))
    handle = client.announce(REQ, 0.0)
    _answer_connect(client, 0.0)
    tid = int.from_bytes(client.datagrams_to_send()[0][12:16], "big")
    (event,) = client.receive_datagram(encode_response(ErrorResponse(tid, "torrent not registered")), 0.1)
    assert isinstance(event, RequestFailed) and isinstance(event.error, TrackerFailure)
    assert event.error.reason == "torrent not registered" and event.handle == handle


def test_error_packet_to_the_connect_fails_every_waiting_request() -> None:
    client = UDPTrackerClient(rng=random.Random(7))
    handles = {client.announce(REQ, 0.0), client.scrape([IH], 0.0)}
    (connect,) = client.datagrams_to_send()  # one connect serves both
    tid = int.from_bytes(connect[12:16], "big")
    events = client.receive_datagram(encode_response(ErrorResponse(tid, "go away")), 0.1)
    assert {e.handle for e in events} == handles
    assert all(isinstance(e, RequestFailed) and isinstance(e.error, TrackerFailure) for e in events)


@pytest.mark.parametrize("make_reply", [
    lambda tid: encode_response(ScrapeResponse(tid, ())),  # wrong action
    lambda tid: struct.pack(">II", 1, tid) + b"\x00" * 13,  # malformed announce
])
def test_a_reply_with_our_id_but_wrong_content_fails_the_request(make_reply) -> None:  # type: ignore[no-untyped-def]
    client = UDPTrackerClient(rng=random.Random(8))
    client.announce(REQ, 0.0)
    _answer_connect(client, 0.0)
    tid = int.from_bytes(client.datagrams_to_send()[0][12:16], "big")
    (event,) = client.receive_datagram(make_reply(tid), 0.1)
    assert isinstance(event, RequestFailed) and isinstance(event.error, TrackerError)


def test_short_scrape_reply_fails_and_long_one_is_trimmed() -> None:
    client = UDPTrackerClient(rng=random.Random(9))
    short = client.scrape([IH, IH[::-1]], 0.0)
    _answer_connect(client, 0.0)
    tid = int.from_bytes(client.datagrams_to_send()[0][12:16], "big")
    (event,) = client.receive_datagram(encode_response(ScrapeResponse(tid, (ScrapeStats(1, 1, 1),))), 0.1)
    assert isinstance(event, RequestFailed) and event.handle == short
    one = client.scrape([IH], 0.2)
    tid = int.from_bytes(client.datagrams_to_send()[0][12:16], "big")
    (event,) = client.receive_datagram(encode_response(ScrapeResponse(tid, (ScrapeStats(1, 2, 3),) * 3)), 0.3)
    assert event == RequestDone(one, ScrapeResponse(tid, (ScrapeStats(1, 2, 3),)))


def test_cancelling_every_waiting_request_abandons_the_connect() -> None:
    client = UDPTrackerClient(base_timeout=15.0, rng=random.Random(10))
    first = client.announce(REQ, 0.0)
    client.datagrams_to_send()
    for deadline in (15.0, 45.0, 105.0):
        client.handle_timeout(deadline)
    client.datagrams_to_send()
    client.cancel(first)
    assert client.next_deadline() is None
    client.announce(REQ, 110.0)  # e.g. the deregistering announce after a timed-out one
    (connect,) = client.datagrams_to_send()
    assert isinstance(decode_request(connect), ConnectRequest)
    assert client.next_deadline() == 125.0  # a fresh schedule, not the abandoned one's 225


def test_client_refuses_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        UDPTrackerClient(base_timeout=0)
    client = UDPTrackerClient()
    with pytest.raises(LocalProtocolError):
        client.scrape([IH] * 75, 0.0)
    with pytest.raises(LocalProtocolError):
        client.scrape([], 0.0)


# --------------------------------------------------------------------------- driver vs test trackers


class FakeTracker:
    """A UDP tracker for tests: answers with the codec, or misbehaves as told."""

    def __init__(self, mode: str = "good") -> None:
        self.mode = mode
        self.received: list[tuple[float, object]] = []
        self.sock: netguard.GuardedUDPSocket | None = None
        self.connect_count = 0

    async def serve(self, ip: str, *,
                    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        self.sock = await netguard.open_udp_socket(ip, 0)
        task_status.started(self.sock.getsockname())
        rng = random.Random(0)
        while True:
            data, addr = await self.sock.recvfrom(2048)
            message = decode_request(data)
            self.received.append((trio.current_time(), message))
            if self.mode == "silent":
                continue
            if self.mode == "garbage":
                await self.sock.sendto(rng.randbytes(rng.randrange(0, 40)), addr)
                continue
            if self.mode == "wrong-tid":
                wrong = ConnectResponse(message.transaction_id ^ 0xFF, CID)
                await self.sock.sendto(encode_response(wrong), addr)
                continue
            if isinstance(message, ConnectRequest):
                self.connect_count += 1
                await self.sock.sendto(encode_response(ConnectResponse(message.transaction_id, CID)), addr)
            elif isinstance(message, AnnouncePacket):
                if self.mode == "silent-announce" and message.request.event is AnnounceEvent.STARTED:
                    continue
                peers = (Peer("127.0.0.77", 7777), Peer(addr[0], message.request.port))
                await self.sock.sendto(encode_response(
                    AnnounceResponse(message.transaction_id, 900, 3, 4, peers)), addr)
            else:
                stats = tuple(ScrapeStats(len(h), 0, h[0]) for h in message.infohashes)
                await self.sock.sendto(encode_response(ScrapeResponse(message.transaction_id, stats)), addr)


def _url(addr: tuple[str, int]) -> str:
    return f"udp://{addr[0]}:{addr[1]}/announce"


@pytest.mark.parametrize("mode", ["garbage", "wrong-tid", "silent"])
async def test_misbehaving_tracker_ends_in_a_typed_timeout_on_schedule(mode: str,
                                                                        autojump_clock: object) -> None:
    fake = FakeTracker(mode)
    config = trackers.TrackerConfig(timeout=10_000, udp_base_timeout=15.0, udp_max_retries=3)
    with trio.fail_after(20_000):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            start = trio.current_time()
            with pytest.raises(TrackerTimeout):
                await trackers.announce(_url(addr), IH, config=config)
            nursery.cancel_scope.cancel()
    times = [t - start for t, _ in fake.received]
    assert times == [0, 15, 45, 105]
    assert all(isinstance(m, ConnectRequest) for _, m in fake.received)


async def test_overall_timeout_is_a_typed_timeout(autojump_clock: object) -> None:
    fake = FakeTracker("silent")
    config = trackers.TrackerConfig(timeout=20, udp_base_timeout=15.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            with pytest.raises(TrackerTimeout, match="within 20 s"):
                await trackers.scrape(_url(addr), [IH], config=config)
            nursery.cancel_scope.cancel()
    assert len(fake.received) == 2  # t=0 and t=15


async def test_announce_and_batched_scrape_against_a_good_tracker(autojump_clock: object) -> None:
    fake = FakeTracker()
    hashes = [bytes([i]) * 20 for i in range(1, 161)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            async with trackers.open_tracker(_url(addr)) as session:
                result = await session.announce(REQ)
                stats = await session.scrape(hashes)
            nursery.cancel_scope.cancel()
    assert result.interval == 900 and result.leechers == 3 and result.seeders == 4
    assert Peer("127.0.0.77", 7777) in result.peers and result.tracker == _url(addr)
    assert stats == {h: ScrapeStats(20, 0, h[0]) for h in hashes}
    scrapes = [m for _, m in fake.received if isinstance(m, ScrapePacket)]
    assert sorted(len(m.infohashes) for m in scrapes) == [12, 74, 74]
    assert fake.connect_count == 1  # one connection id for all of it


async def test_probe_shares_one_connection_and_deregisters(autojump_clock: object) -> None:
    fake = FakeTracker()
    me = loopback_address()
    config = trackers.TrackerConfig(local_address=me)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            probe = await trackers.probe_tracker(_url(addr), IH, port=5555, config=config)
            nursery.cancel_scope.cancel()
    events = [m.request.event for _, m in fake.received if isinstance(m, AnnouncePacket)]
    assert events == [AnnounceEvent.STARTED, AnnounceEvent.STOPPED]
    assert isinstance(fake.received[-1][1], ScrapePacket)  # scraped after deregistering
    assert fake.connect_count == 1
    assert probe.stopped and probe.stop_error is None
    assert probe.peers == (Peer("127.0.0.77", 7777),)  # our own endpoint is not reported
    assert (probe.seeders, probe.leechers, probe.completed) == (20, IH[0], 0)


async def test_probe_deregisters_even_when_the_started_announce_times_out(autojump_clock: object) -> None:
    fake = FakeTracker("silent-announce")
    config = trackers.TrackerConfig(timeout=30, stop_timeout=5, udp_base_timeout=15.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            with pytest.raises(TrackerTimeout):
                await trackers.probe_tracker(_url(addr), IH, config=config)
            nursery.cancel_scope.cancel()
    events = [m.request.event for _, m in fake.received if isinstance(m, AnnouncePacket)]
    assert events[-1] is AnnounceEvent.STOPPED and AnnounceEvent.STARTED in events


async def test_refused_destination_is_refused_before_sending() -> None:
    with pytest.raises(NetworkRefused, match=r"10\.0\.0\.1"):
        await trackers.announce("udp://10.0.0.1:6969/announce", IH)


# --------------------------------------------------------------------------- BEP 12 tiers


def test_tiers_shuffle_within_a_tier_dedupe_and_promote() -> None:
    tiers = trackers.TrackerTiers([["a", "b", "c", "d"], ["e", "a"], [" ", "f"], []], rng=random.Random(1))
    assert sorted(tiers.tiers[0]) == ["a", "b", "c", "d"] and tiers.tiers[1:] == (("e",), ("f",))
    shuffled = [trackers.TrackerTiers([list("abcdefgh")], rng=random.Random(seed)).tiers[0] for seed in range(5)]
    assert len(set(shuffled)) > 1  # tiers are shuffled when first read
    tiers.promote("c")
    assert tiers.tiers[0][0] == "c" and len(tiers) == 6 and list(tiers)[4:] == ["e", "f"]


def test_tiers_from_a_magnet_and_a_torrent() -> None:
    from p2pwatch.torrent import bencoding
    from p2pwatch.torrent.magnet import parse_magnet
    from p2pwatch.torrent.metainfo import parse_torrent

    magnet = parse_magnet("magnet:?xt=urn:btih:" + IH.hex() + "&tr=udp%3A%2F%2Fa%3A1&tr=http%3A%2F%2Fb%2Fannounce")
    assert trackers.TrackerTiers.from_magnet(magnet).tiers == (("udp://a:1",), ("http://b/announce",))
    info = {b"name": b"x", b"piece length": 16384, b"length": 3, b"pieces": b"\x00" * 20}
    torrent = bencoding.encode({b"announce": b"http://ignored/announce", b"info": info,
                                b"announce-list": [[b"udp://t1:1", b"udp://t2:2"], [b"http://t3/announce"]]})
    tiers = trackers.TrackerTiers.from_metainfo(parse_torrent(torrent), rng=random.Random(0))
    assert sorted(tiers.tiers[0]) == ["udp://t1:1", "udp://t2:2"] and tiers.tiers[1] == ("http://t3/announce",)


async def test_announce_tiers_reports_every_failure(autojump_clock: object) -> None:
    fake = FakeTracker("silent")
    config = trackers.TrackerConfig(timeout=10, udp_base_timeout=15.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            tiers = trackers.TrackerTiers([[_url(addr)], [_url(addr).replace("/announce", "/x")]])
            with pytest.raises(TrackerTimeout, match="no tracker answered"):
                await trackers.announce_tiers(tiers, IH, config=config)
            with pytest.raises(ConfigError):
                await trackers.announce_tiers(trackers.TrackerTiers([]), IH)
            nursery.cancel_scope.cancel()
    assert len(fake.received) == 2
