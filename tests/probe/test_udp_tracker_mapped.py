"""A UDP tracker (BEP 15) reached at an IPv4-mapped IPv6 address (``udp://[::ffff:127.0.0.x]:port``): the
probe's IPv6 socket sees the replies come from ``::ffff:127.0.0.x``, which is the tracker (p2pwatch.endpoints.unmap,
branch cleanup-a), while a datagram from any other address is still ignored; the tracker saw an IPv4 request, so
its peer list is read as IPv4 (6-byte entries)."""

from __future__ import annotations

import socket

import pytest
import trio

from p2pwatch import netguard
from p2pwatch.errors import TrackerTimeout
from p2pwatch.probe import trackers
from p2pwatch.probe.udp_tracker import (
    AnnouncePacket,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    Peer,
    decode_request,
    encode_response,
)
from tests.conftest import loopback_address
from tests.probe.test_udp_tracker import CID, IH, REQ, FakeTracker

FORGED = 0xBAD

if not socket.has_ipv6:  # pragma: no cover - depends on the machine
    pytest.fail("the mapped-address tests need an IPv6 (dual-stack) socket")


class SpoofedTracker(FakeTracker):
    """A good tracker but for the first connect request: that one only a forger at ``stranger`` answers (the
    right transaction id, a forged connection id); the tracker answers the client's retransmission."""

    def __init__(self, stranger: str) -> None:
        super().__init__()
        self.stranger = stranger
        self.connects = 0
        self.connection_ids: list[int] = []  # of the announces received

    async def serve(self, ip: str, *,
                    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        self.sock = sock = await netguard.open_udp_socket(ip, 0)
        forger = await netguard.open_udp_socket(self.stranger, 0)
        task_status.started(sock.getsockname())
        try:
            while True:
                data, addr = await sock.recvfrom(2048)
                message = decode_request(data)
                if isinstance(message, ConnectRequest):
                    self.connects += 1
                    who = forger if self.connects == 1 else sock
                    cid = FORGED if self.connects == 1 else CID
                    await who.sendto(encode_response(ConnectResponse(message.transaction_id, cid)), addr)
                elif isinstance(message, AnnouncePacket):
                    self.connection_ids.append(message.connection_id)
                    peers = (Peer("127.0.0.77", 7777),)
                    await sock.sendto(encode_response(AnnounceResponse(message.transaction_id, 900, 3, 4, peers)),
                                      addr)
        finally:
            forger.close()


def mapped_url(addr: tuple[str, int]) -> str:
    return f"udp://[::ffff:{addr[0]}]:{addr[1]}/announce"


async def test_replies_from_the_mapped_address_are_the_trackers() -> None:
    fake = FakeTracker()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            async with trackers.open_tracker(mapped_url(addr)) as session:
                assert isinstance(session, trackers.UDPTrackerSession)
                result = await session.announce(REQ)
                stats = await session.scrape([IH])
                assert session.client.ignored == 0
            nursery.cancel_scope.cancel()
    assert result.interval == 900 and Peer("127.0.0.77", 7777) in result.peers  # 6-byte IPv4 entries
    assert stats[IH].seeders == 20 and fake.connect_count == 1


async def test_a_forged_reply_from_another_mapped_address_is_ignored(autojump_clock: object) -> None:
    fake = SpoofedTracker(stranger=loopback_address())
    config = trackers.TrackerConfig(timeout=60, udp_base_timeout=15.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            async with trackers.open_tracker(mapped_url(addr), config) as session:
                assert isinstance(session, trackers.UDPTrackerSession)
                start = trio.current_time()
                result = await session.announce(REQ)
                waited = trio.current_time() - start
                assert session.client.ignored == 1  # the forgery, from ::ffff:<stranger>
            nursery.cancel_scope.cancel()
    assert fake.connects == 2 and waited == pytest.approx(15.0)  # answered at the BEP 15 retransmission
    assert fake.connection_ids == [CID] and result.seeders == 4


async def test_a_mapped_tracker_that_never_answers_still_times_out(autojump_clock: object) -> None:
    fake = FakeTracker("silent")
    config = trackers.TrackerConfig(timeout=20, udp_base_timeout=15.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(fake.serve, loopback_address())
            with pytest.raises(TrackerTimeout, match="within 20 s"):
                await trackers.announce(mapped_url(addr), IH, config=config)
            nursery.cancel_scope.cancel()
