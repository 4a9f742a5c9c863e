"""BEP 15 UDP tracker packets as a sans-IO byte codec, with BEP 23/BEP 7 compact peers and BEP 41 URL data.

The codec encodes and decodes every BEP 15 packet (both directions, so tests can run a tracker from the same
code); :mod:`p2pwatch.probe.udp_tracker` holds the client state machine and re-exports every name here.
Peers, scrape counts and the announce ``event`` are shared with the HTTP tracker codec and defined here.

* An announce reply whose peer list is not a whole number of 6-byte (18 for IPv6) entries is rejected:
  trailing extension data cannot be told apart from peers (libtorrent does the same). Scrape replies may be
  longer than needed; the extra bytes are ignored.
* An announce reply of just the 8-byte header is how opentracker refuses an infohash outside its whitelist;
  it is reported as a :class:`~p2pwatch.errors.TrackerFailure`, like an error packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from p2pwatch import limits
from p2pwatch.errors import CompactAddressError, LocalProtocolError, TrackerError, TrackerFailure
from p2pwatch.torrent import compact

PROTOCOL_ID = 0x41727101980
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
HEADER = struct.Struct(">II")
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
        return HEADER.pack(Action.CONNECT, message.transaction_id) + message.connection_id.to_bytes(8, "big")
    if isinstance(message, AnnounceResponse):
        head = _ANNOUNCE_REPLY.pack(Action.ANNOUNCE, message.transaction_id, message.interval,
                                    message.leechers, message.seeders)
        return head + compact.encode_peer_list([(p.ip, p.port) for p in message.peers], ipv6=ipv6)
    if isinstance(message, ScrapeResponse):
        return HEADER.pack(Action.SCRAPE, message.transaction_id) + b"".join(
            _SCRAPE_ENTRY.pack(s.seeders, s.completed, s.leechers) for s in message.stats
        )
    return HEADER.pack(Action.ERROR, message.transaction_id) + message.message.encode("utf-8")


def decode_response(data: bytes, *, ipv6: bool = False) -> UDPResponse:
    """Decode a tracker packet. ``ipv6`` says the datagram came over IPv6 (18-byte peer entries)."""
    if len(data) < 8:
        raise TrackerError(f"UDP tracker reply of {len(data)} bytes is shorter than 8")
    action, transaction_id = HEADER.unpack_from(data)
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
    """Concatenated compact peers (BEP 23 / BEP 7): 6 bytes each, or 18 for IPv6 (:mod:`p2pwatch.torrent.compact`)."""
    stride = compact.PEER6_LEN if ipv6 else compact.PEER4_LEN
    if len(data) // stride > limits.MAX_TRACKER_PEERS:
        raise TrackerError(f"tracker listed more than {limits.MAX_TRACKER_PEERS} peers")
    try:
        found = compact.decode_peer_list(data, ipv6=ipv6)
    except CompactAddressError as exc:
        raise TrackerError(str(exc)) from exc
    return tuple([Peer(ip, port) for ip, port in found])


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
