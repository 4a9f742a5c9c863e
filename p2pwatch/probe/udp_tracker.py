"""UDP tracker protocol (BEP 15) as a sans-IO codec and client state machine, plus BEP 41 URL data.

The codec encodes and decodes every BEP 15 packet (both directions, so tests can run a tracker from the same
code). :class:`UDPTrackerClient` is the client side for one tracker endpoint: it obtains a connection id,
reuses it for ``connection_lifetime`` seconds (BEP 15: one minute), retransmits on the ``15·2ⁿ`` schedule
(``base_timeout`` replaces the 15 so tests can scale it down) and reports each request's outcome as an event.
It does no I/O: datagrams go in through :meth:`~UDPTrackerClient.receive_datagram`, come out of
:meth:`~UDPTrackerClient.datagrams_to_send`, and time is always an argument ``now``; a driver sleeps until
:meth:`~UDPTrackerClient.next_deadline` and then calls :meth:`~UDPTrackerClient.handle_timeout`.

Peers, scrape counts and the announce ``event`` are shared with the HTTP tracker codec and defined here.

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
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
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

PROTOCOL_ID = 0x41727101980
#: BEP 15's largest n in 15·2ⁿ (3840 s); later retransmissions keep that interval.
MAX_BACKOFF = 8
#: Longest error message text kept from an error packet.
MAX_ERROR_TEXT = 1024


class Action(IntEnum):
    CONNECT = 0
    ANNOUNCE = 1
    SCRAPE = 2
    ERROR = 3


class AnnounceEvent(IntEnum):
    """The announce ``event`` (BEP 15 numbering; :attr:`http_name` is the BEP 3 string)."""

    NONE = 0
    COMPLETED = 1
    STARTED = 2
    STOPPED = 3

    @property
    def http_name(self) -> str:
        return "" if self is AnnounceEvent.NONE else self.name.lower()


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer endpoint listed by a tracker (a level-0 claim). ``peer_id`` only from dictionary peer lists."""

    ip: str
    port: int
    peer_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    seeders: int
    completed: int
    leechers: int


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """What we announce; the same fields serve BEP 15 and BEP 3."""

    infohash: bytes
    peer_id: bytes
    port: int
    event: AnnounceEvent = AnnounceEvent.NONE
    downloaded: int = 0
    left: int = 0
    uploaded: int = 0
    key: int = 0
    num_want: int = -1
    ip: int = 0

    def __post_init__(self) -> None:
        if len(self.infohash) != 20 or len(self.peer_id) != 20:
            raise LocalProtocolError("infohash and peer_id must be 20 bytes each")
        if not 0 <= self.port <= 0xFFFF or not 0 <= self.key <= 0xFFFFFFFF or not 0 <= self.ip <= 0xFFFFFFFF:
            raise LocalProtocolError("port, key or ip out of range")
        if not -1 <= self.num_want <= 0x7FFFFFFF:
            raise LocalProtocolError("num_want out of range")
        for amount in (self.downloaded, self.left, self.uploaded):
            if not 0 <= amount < 1 << 63:
                raise LocalProtocolError("downloaded/left/uploaded out of range")


# ---- messages (both directions) ----


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    transaction_id: int


@dataclass(frozen=True, slots=True)
class AnnouncePacket:
    connection_id: int
    transaction_id: int
    request: AnnounceRequest
    url_data: bytes = b""


@dataclass(frozen=True, slots=True)
class ScrapePacket:
    connection_id: int
    transaction_id: int
    infohashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    transaction_id: int
    connection_id: int


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    transaction_id: int
    interval: int
    leechers: int
    seeders: int
    peers: tuple[Peer, ...]


@dataclass(frozen=True, slots=True)
class ScrapeResponse:
    transaction_id: int
    stats: tuple[ScrapeStats, ...]


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    transaction_id: int
    message: str


UDPRequest = ConnectRequest | AnnouncePacket | ScrapePacket
UDPResponse = ConnectResponse | AnnounceResponse | ScrapeResponse | ErrorResponse

_CONNECT = struct.Struct(">QII")
_ANNOUNCE = struct.Struct(">QII20s20sQQQIIIiH")
_HEADER = struct.Struct(">II")
_ANNOUNCE_REPLY = struct.Struct(">IIIII")
_SCRAPE_ENTRY = struct.Struct(">III")


def encode_request(message: UDPRequest) -> bytes:
    """Encode a client packet (connect, announce with optional BEP 41 URL data, scrape)."""
    if isinstance(message, ConnectRequest):
        return _CONNECT.pack(PROTOCOL_ID, Action.CONNECT, message.transaction_id)
    if isinstance(message, AnnouncePacket):
        r = message.request
        return _ANNOUNCE.pack(
            message.connection_id, Action.ANNOUNCE, message.transaction_id, r.infohash, r.peer_id,
            r.downloaded, r.left, r.uploaded, r.event, r.ip, r.key, r.num_want, r.port,
        ) + encode_url_data(message.url_data)
    if len(message.infohashes) > limits.MAX_UDP_SCRAPE or any(len(h) != 20 for h in message.infohashes):
        raise LocalProtocolError(f"a UDP scrape carries 1..{limits.MAX_UDP_SCRAPE} 20-byte infohashes")
    return _CONNECT.pack(message.connection_id, Action.SCRAPE, message.transaction_id) + b"".join(
        message.infohashes
    )


def decode_request(data: bytes) -> UDPRequest:
    """Decode a client packet (the tracker side; used by test trackers and fuzzing)."""
    if len(data) < 16:
        raise TrackerError(f"UDP tracker request of {len(data)} bytes is shorter than 16")
    connection_id, action, transaction_id = _CONNECT.unpack_from(data)
    if action == Action.CONNECT:
        if connection_id != PROTOCOL_ID:
            raise TrackerError("connect request without the BEP 15 protocol id")
        return ConnectRequest(transaction_id)
    if action == Action.ANNOUNCE:
        if len(data) < _ANNOUNCE.size:
            raise TrackerError(f"announce request of {len(data)} bytes is shorter than 98")
        fields = _ANNOUNCE.unpack_from(data)
        try:
            event = AnnounceEvent(fields[8])
        except ValueError:
            raise TrackerError(f"unknown announce event {fields[8]}") from None
        try:
            request = AnnounceRequest(fields[3], fields[4], fields[12], event, fields[5], fields[6],
                                      fields[7], fields[10], fields[11], fields[9])
        except LocalProtocolError as exc:
            raise TrackerError(f"announce request out of range: {exc}") from None
        return AnnouncePacket(connection_id, transaction_id, request, decode_url_data(data[_ANNOUNCE.size :]))
    if action == Action.SCRAPE:
        body = data[16:]
        if not body or len(body) % 20 or len(body) // 20 > limits.MAX_UDP_SCRAPE:
            raise TrackerError(f"scrape request body of {len(body)} bytes is not 1..74 infohashes")
        return ScrapePacket(connection_id, transaction_id,
                            tuple(body[i : i + 20] for i in range(0, len(body), 20)))
    raise TrackerError(f"unknown UDP tracker action {action}")


def encode_response(message: UDPResponse, *, ipv6: bool = False) -> bytes:
    """Encode a tracker packet (used by test trackers; ``ipv6`` picks 18-byte peer entries)."""
    if isinstance(message, ConnectResponse):
        return _HEADER.pack(Action.CONNECT, message.transaction_id) + message.connection_id.to_bytes(8, "big")
    if isinstance(message, AnnounceResponse):
        head = _ANNOUNCE_REPLY.pack(Action.ANNOUNCE, message.transaction_id, message.interval,
                                    message.leechers, message.seeders)
        family = socket.AF_INET6 if ipv6 else socket.AF_INET
        return head + b"".join(
            socket.inet_pton(family, p.ip) + p.port.to_bytes(2, "big") for p in message.peers
        )
    if isinstance(message, ScrapeResponse):
        return _HEADER.pack(Action.SCRAPE, message.transaction_id) + b"".join(
            _SCRAPE_ENTRY.pack(s.seeders, s.completed, s.leechers) for s in message.stats
        )
    return _HEADER.pack(Action.ERROR, message.transaction_id) + message.message.encode("utf-8")


def decode_response(data: bytes, *, ipv6: bool = False) -> UDPResponse:
    """Decode a tracker packet. ``ipv6`` says the datagram came over IPv6 (18-byte peer entries)."""
    if len(data) < 8:
        raise TrackerError(f"UDP tracker reply of {len(data)} bytes is shorter than 8")
    action, transaction_id = _HEADER.unpack_from(data)
    if action == Action.CONNECT:
        if len(data) < 16:
            raise TrackerError(f"connect reply of {len(data)} bytes is shorter than 16")
        return ConnectResponse(transaction_id, int.from_bytes(data[8:16], "big"))
    if action == Action.ANNOUNCE:
        if len(data) == 8:
            raise TrackerFailure("empty announce reply (the tracker does not serve this infohash)")
        if len(data) < _ANNOUNCE_REPLY.size:
            raise TrackerError(f"announce reply of {len(data)} bytes is shorter than 20")
        _, _, interval, leechers, seeders = _ANNOUNCE_REPLY.unpack_from(data)
        return AnnounceResponse(transaction_id, interval, leechers, seeders,
                                decode_compact_peers(data[_ANNOUNCE_REPLY.size :], ipv6=ipv6))
    if action == Action.SCRAPE:
        count = (len(data) - 8) // _SCRAPE_ENTRY.size
        stats = tuple(ScrapeStats(*_SCRAPE_ENTRY.unpack_from(data, 8 + i * _SCRAPE_ENTRY.size))
                      for i in range(min(count, limits.MAX_UDP_SCRAPE)))
        return ScrapeResponse(transaction_id, stats)
    if action == Action.ERROR:
        return ErrorResponse(transaction_id, data[8 : 8 + MAX_ERROR_TEXT].decode("utf-8", "replace"))
    raise TrackerError(f"unknown UDP tracker action {action}")


def decode_compact_peers(data: bytes, *, ipv6: bool = False) -> tuple[Peer, ...]:
    """Concatenated compact peers (BEP 23 / BEP 7): 6 bytes each, or 18 for IPv6."""
    stride = 18 if ipv6 else 6
    if len(data) % stride:
        raise TrackerError(f"compact peer list of {len(data)} bytes is not a multiple of {stride}")
    if len(data) // stride > limits.MAX_TRACKER_PEERS:
        raise TrackerError(f"tracker listed more than {limits.MAX_TRACKER_PEERS} peers")
    family, iplen = (socket.AF_INET6, 16) if ipv6 else (socket.AF_INET, 4)
    return tuple(
        Peer(socket.inet_ntop(family, data[off : off + iplen]),
             int.from_bytes(data[off + iplen : off + stride], "big"))
        for off in range(0, len(data), stride)
    )


def encode_url_data(url_data: bytes) -> bytes:
    """BEP 41 options: the URL's path and query as URLData options (type 2) of at most 255 bytes each."""
    return b"".join(b"\x02" + bytes([len(chunk)]) + chunk
                    for chunk in (url_data[i : i + 255] for i in range(0, len(url_data), 255)))


def decode_url_data(options: bytes) -> bytes:
    """Concatenate the URLData options of a BEP 41 option list (stops at EndOfOptions)."""
    out, pos = [], 0
    while pos < len(options):
        kind = options[pos]
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= len(options):
            raise TrackerError("truncated BEP 41 option")
        length = options[pos + 1]
        if pos + 2 + length > len(options):
            raise TrackerError("BEP 41 option runs past the end of the packet")
        if kind == 2:
            out.append(options[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return b"".join(out)


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
        action, tid = _HEADER.unpack_from(data)
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
