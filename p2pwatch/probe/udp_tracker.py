"""UDP tracker protocol (BEP 15) client state machine; the byte codec (and BEP 41 URL data) is in udp_tracker_codec.

The packet codec lives in :mod:`p2pwatch.probe.udp_tracker_codec` and is re-exported here, so existing
imports keep working. :class:`UDPTrackerClient` is the client side for one tracker endpoint: it obtains a connection id,
reuses it for ``connection_lifetime`` seconds (BEP 15: one minute), retransmits on the ``15·2ⁿ`` schedule
(``base_timeout`` replaces the 15 so tests can scale it down) and reports each request's outcome as an event.
It does no I/O: datagrams go in through :meth:`~UDPTrackerClient.receive_datagram`, come out of
:meth:`~UDPTrackerClient.datagrams_to_send`, and time is always an argument ``now``; a driver sleeps until
:meth:`~UDPTrackerClient.next_deadline` and then calls :meth:`~UDPTrackerClient.handle_timeout`.

Peers, scrape counts and the announce ``event`` (shared with the HTTP tracker codec) are defined in the codec.

Departures from BEP 15:

* ``n`` stops at ``max_retries`` (the spec's 8 by default); when that transmission times out, the request
  fails with :class:`~p2pwatch.errors.TrackerTimeout` instead of retrying forever.
* A retransmission reuses the transaction id, so a late answer to an earlier copy is still accepted.
* A reply that carries one of our transaction ids but is malformed, or answers with the wrong action, fails
  that request with a :class:`~p2pwatch.errors.TrackerError` (a 32-bit random id makes it the tracker's
  reply); datagrams shorter than 8 bytes or with an unknown transaction id are dropped and counted in
  ``ignored``.
* An announce reply whose peer list is not a whole number of 6-byte (18 for IPv6) entries is rejected:
  trailing extension data cannot be told apart from peers (libtorrent does the same). Scrape replies may be
  longer than needed; the extra bytes are ignored.
* An announce reply of just the 8-byte header is how opentracker refuses an infohash outside its whitelist;
  it is reported as a :class:`~p2pwatch.errors.TrackerFailure`, like an error packet.
* BEP 41 URL data is appended only when the tracker URL carries a path other than ``/announce`` or a query.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from p2pwatch import limits
from p2pwatch.errors import (
    ConfigError,
    LocalProtocolError,
    P2PWatchError,
    TrackerError,
    TrackerFailure,
    TrackerTimeout,
)
from p2pwatch.probe.udp_tracker_codec import (
    HEADER,
    MAX_ERROR_TEXT,
    PROTOCOL_ID,
    Action,
    AnnounceEvent,
    AnnouncePacket,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Peer,
    ScrapePacket,
    ScrapeResponse,
    ScrapeStats,
    UDPRequest,
    UDPResponse,
    decode_compact_peers,
    decode_request,
    decode_response,
    decode_url_data,
    encode_request,
    encode_response,
    encode_url_data,
)

#: BEP 15's largest n in 15·2ⁿ (3840 s); later retransmissions keep that interval.
MAX_BACKOFF = 8

__all__ = [
    "MAX_BACKOFF",
    "MAX_ERROR_TEXT",
    "PROTOCOL_ID",
    "Action",
    "AnnounceEvent",
    "AnnouncePacket",
    "AnnounceRequest",
    "AnnounceResponse",
    "ClientEvent",
    "ConnectRequest",
    "ConnectResponse",
    "ErrorResponse",
    "Peer",
    "RequestDone",
    "RequestFailed",
    "ScrapePacket",
    "ScrapeResponse",
    "ScrapeStats",
    "UDPRequest",
    "UDPResponse",
    "UDPTrackerClient",
    "decode_compact_peers",
    "decode_request",
    "decode_response",
    "decode_url_data",
    "encode_request",
    "encode_response",
    "encode_url_data",
    "parse_udp_url",
]


def parse_udp_url(url: str) -> tuple[str, int, bytes]:
    """``udp://host:port/path?query`` -> (host, port, BEP 41 URL data)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"tracker URL {url!r} is malformed: {exc}") from None
    if parts.scheme.lower() != "udp" or not parts.hostname or not port:
        raise ConfigError(f"tracker URL {url!r} must look like udp://HOST:PORT/announce")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    url_data = b"" if target in ("", "/", "/announce") else target.encode("utf-8")
    return parts.hostname, port, url_data


# ---- the client state machine ----


@dataclass(frozen=True, slots=True)
class RequestDone:
    handle: int
    response: AnnounceResponse | ScrapeResponse


@dataclass(frozen=True, slots=True)
class RequestFailed:
    handle: int
    error: P2PWatchError


ClientEvent = RequestDone | RequestFailed


@dataclass(slots=True)
class _Job:
    handle: int
    packet: AnnouncePacket | ScrapePacket  # connection and transaction ids are filled in when sent
    attempt: int = 0
    transaction_id: int | None = None
    deadline: float | None = None
    wire: bytes = b""


class UDPTrackerClient:
    """Client side of BEP 15 for one tracker endpoint (sans-IO)."""

    def __init__(self, *, ipv6: bool = False, base_timeout: float = 15.0, max_retries: int = 8,
                 connection_lifetime: float = 60.0, rng: random.Random | None = None) -> None:
        if base_timeout <= 0 or max_retries < 0 or connection_lifetime <= 0:
            raise LocalProtocolError("base_timeout and connection_lifetime must be > 0, max_retries >= 0")
        self.ipv6 = ipv6
        self.base_timeout = base_timeout
        self.max_retries = max_retries
        self.connection_lifetime = connection_lifetime
        self._rng = rng or random.SystemRandom()
        self._next_handle = 1
        self._waiting: list[_Job] = []  # need a connection id first
        self._sent: dict[int, _Job] = {}  # by transaction id
        self._connection_id: int | None = None
        self._connection_expires = 0.0
        self._connect_tid: int | None = None
        self._connect_attempt = 0
        self._connect_deadline = 0.0
        self._outgoing: list[bytes] = []
        #: Datagrams dropped (too short, or not one of our transaction ids).
        self.ignored = 0
        #: Connect requests transmitted (first copies and retransmissions).
        self.connects_sent = 0

    # -- requests --

    def announce(self, request: AnnounceRequest, now: float, *, url_data: bytes = b"") -> int:
        return self._submit(AnnouncePacket(0, 0, request, url_data), now)

    def scrape(self, infohashes: Iterable[bytes], now: float) -> int:
        hashes = tuple(infohashes)
        if not 1 <= len(hashes) <= limits.MAX_UDP_SCRAPE or any(len(h) != 20 for h in hashes):
            raise LocalProtocolError(f"a UDP scrape carries 1..{limits.MAX_UDP_SCRAPE} 20-byte infohashes")
        return self._submit(ScrapePacket(0, 0, hashes), now)

    def cancel(self, handle: int) -> None:
        self._waiting = [j for j in self._waiting if j.handle != handle]
        self._sent = {t: j for t, j in self._sent.items() if j.handle != handle}
        if not self._waiting:  # nobody needs the connect in flight: the next request starts afresh
            self._connect_tid = None

    def connected(self, now: float) -> bool:
        return self._connection_id is not None and now < self._connection_expires

    def pending(self) -> int:
        return len(self._waiting) + len(self._sent)

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def next_deadline(self) -> float | None:
        deadlines = [j.deadline for j in self._sent.values() if j.deadline is not None]
        if self._connect_tid is not None:
            deadlines.append(self._connect_deadline)
        return min(deadlines, default=None)

    # -- input --

    def receive_datagram(self, data: bytes, now: float) -> list[ClientEvent]:
        if len(data) < 8:
            self.ignored += 1
            return []
        action, tid = HEADER.unpack_from(data)
        if tid == self._connect_tid:
            return self._on_connect_reply(data, now)
        job = self._sent.pop(tid, None)
        if job is None:
            self.ignored += 1
            return []
        try:
            reply = decode_response(data, ipv6=self.ipv6)
        except TrackerError as exc:
            return [RequestFailed(job.handle, exc)]
        if isinstance(reply, ErrorResponse):
            return [RequestFailed(job.handle, TrackerFailure(reply.message))]
        if isinstance(job.packet, AnnouncePacket) and isinstance(reply, AnnounceResponse):
            return [RequestDone(job.handle, reply)]
        if isinstance(job.packet, ScrapePacket) and isinstance(reply, ScrapeResponse):
            wanted = len(job.packet.infohashes)
            if len(reply.stats) < wanted:
                return [RequestFailed(job.handle, TrackerError(
                    f"scrape reply has {len(reply.stats)} entries for {wanted} infohashes"))]
            return [RequestDone(job.handle, ScrapeResponse(tid, reply.stats[:wanted]))]
        return [RequestFailed(job.handle, TrackerError(f"tracker answered with action {action} to a "
                                                        f"{type(job.packet).__name__}"))]

    def handle_timeout(self, now: float) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        if self._connect_tid is not None and self._connect_deadline <= now:
            self._connect_attempt += 1
            if self._connect_attempt > self.max_retries:
                self._connect_tid = None
                events += self._fail_waiting(TrackerTimeout("UDP tracker did not answer the connect request"))
            else:
                self._transmit_connect(now)
        for tid, job in list(self._sent.items()):
            if job.deadline is None or job.deadline > now:
                continue
            job.attempt += 1
            if job.attempt > self.max_retries:
                del self._sent[tid]
                events.append(RequestFailed(job.handle, TrackerTimeout("UDP tracker did not answer")))
            elif self.connected(now):
                self._transmit(job, now)
            else:  # BEP 15: re-request a connection id once it has expired
                del self._sent[tid]
                job.transaction_id = job.deadline = None
                self._waiting.append(job)
                self._start_connect(now, job.attempt)
        return events

    # -- internals --

    def _submit(self, packet: AnnouncePacket | ScrapePacket, now: float) -> int:
        job = _Job(self._next_handle, packet)
        self._next_handle += 1
        if self.connected(now):
            self._send_job(job, now)
        else:
            self._waiting.append(job)
            self._start_connect(now, 0)
        return job.handle

    def _new_tid(self) -> int:
        while True:
            tid = self._rng.getrandbits(32)
            if tid not in self._sent and tid != self._connect_tid:
                return tid

    def _start_connect(self, now: float, attempt: int) -> None:
        if self._connect_tid is not None:
            return
        self._connect_tid = self._new_tid()
        self._connect_attempt = attempt
        self._transmit_connect(now)

    def _transmit_connect(self, now: float) -> None:
        assert self._connect_tid is not None
        self._outgoing.append(encode_request(ConnectRequest(self._connect_tid)))
        self._connect_deadline = now + self.base_timeout * 2 ** min(self._connect_attempt, MAX_BACKOFF)
        self.connects_sent += 1

    def _send_job(self, job: _Job, now: float) -> None:
        assert self._connection_id is not None
        tid = self._new_tid()
        job.transaction_id = tid
        packet = job.packet
        if isinstance(packet, AnnouncePacket):
            job.wire = encode_request(
                AnnouncePacket(self._connection_id, tid, packet.request, packet.url_data)
            )
        else:
            job.wire = encode_request(ScrapePacket(self._connection_id, tid, packet.infohashes))
        self._sent[tid] = job
        self._transmit(job, now)

    def _transmit(self, job: _Job, now: float) -> None:
        self._outgoing.append(job.wire)
        job.deadline = now + self.base_timeout * 2 ** min(job.attempt, MAX_BACKOFF)

    def _on_connect_reply(self, data: bytes, now: float) -> list[ClientEvent]:
        self._connect_tid = None
        try:
            reply = decode_response(data, ipv6=self.ipv6)
        except TrackerError as exc:
            return self._fail_waiting(exc)
        if isinstance(reply, ErrorResponse):
            return self._fail_waiting(TrackerFailure(reply.message))
        if not isinstance(reply, ConnectResponse):
            return self._fail_waiting(TrackerError("tracker answered a connect request with another action"))
        self._connection_id = reply.connection_id
        self._connection_expires = now + self.connection_lifetime
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            self._send_job(job, now)
        return []

    def _fail_waiting(self, error: P2PWatchError) -> list[ClientEvent]:
        waiting, self._waiting = self._waiting, []
        return [RequestFailed(job.handle, error) for job in waiting]
