"""Sans-IO peer-wire codec: BEP 3 messages, BEP 6 fast extension, BEP 10 extension protocol, BEP 9
ut_metadata and the BEP 52 hash request messages.

Bytes in, events out: :class:`WireParser` is fed arbitrary chunks (``feed``) and returns frozen
dataclass events; :func:`encode` turns the same dataclasses into bytes. No sockets, no clocks.

Every length is checked before the message body is buffered: a fixed-size message with another length
is rejected as soon as its 5-byte header has arrived, and variable-size messages are bounded by the named
limits in :mod:`p2pwatch.limits` (``PEER_BLOCK_SIZE`` for ``piece``, the piece count for ``bitfield``,
``MAX_EXTENDED_MESSAGE`` for BEP 10, ``MAX_HASHES_MESSAGE`` for BEP 52). Every violation raises a
subclass of :class:`~p2pwatch.errors.PeerWireError` (a ``RemoteProtocolError``).

Departures from the specs, all on the strict side, because a probe talks to untrusted peers:

* ``piece`` messages larger than 16 KiB are refused (BEP 3 leaves the block size to the requester; we
  only ever request 16 KiB).
* A bitfield must have exactly ``ceil(pieces / 8)`` bytes with clear spare bits once the piece count is
  known (:meth:`WireParser.set_num_pieces`); before that only its upper bound is checked.
* Messages of unknown type are reported as :class:`UnknownMessage` (payload dropped) up to
  ``MAX_UNKNOWN_MESSAGE`` bytes instead of being silently skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from p2pwatch import limits
from p2pwatch.errors import DecodeError, LocalProtocolError, PeerWireError
from p2pwatch.probe.wire_messages import (
    HANDSHAKE_LENGTH,
    LOCAL_EXTENSIONS,
    METADATA_PIECE,
    PROTOCOL,
    RESERVED_DHT,
    RESERVED_EXTENSIONS,
    RESERVED_FAST,
    RESERVED_V2,
    UT_METADATA,
    UT_PEX,
    AllowedFast,
    Bitfield,
    BitfieldError,
    Cancel,
    Choke,
    ExtendedHandshake,
    ExtendedMessage,
    ExtensionError,
    Handshake,
    HandshakeError,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    MalformedMessage,
    MessageLengthError,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
    UnknownMessage,
    WireEvent,
    WireMessage,
    make_reserved,
)
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.bencoding import skip_value as _bencoded_value_end  # the end of the header dict of ut_metadata

#: the message types and constants live in wire_messages; they are part of this codec's interface
__all__ = [
    'HANDSHAKE_LENGTH',
    'LOCAL_EXTENSIONS',
    'METADATA_PIECE',
    'PROTOCOL',
    'RESERVED_DHT',
    'RESERVED_EXTENSIONS',
    'RESERVED_FAST',
    'RESERVED_V2',
    'UT_METADATA',
    'UT_PEX',
    'AllowedFast',
    'Bitfield',
    'BitfieldError',
    'Cancel',
    'Choke',
    'ExtendedHandshake',
    'ExtendedMessage',
    'ExtensionError',
    'Handshake',
    'HandshakeError',
    'HashReject',
    'HashRequest',
    'Hashes',
    'Have',
    'HaveAll',
    'HaveNone',
    'Interested',
    'KeepAlive',
    'MalformedMessage',
    'MessageLengthError',
    'MetadataData',
    'MetadataReject',
    'MetadataRequest',
    'NotInterested',
    'Piece',
    'Port',
    'RejectRequest',
    'Request',
    'Suggest',
    'Unchoke',
    'UnknownMessage',
    'WireEvent',
    'WireMessage',
    'WireParser',
    'check_bitfield',
    'client_from_peer_id',
    'decode_extended_handshake',
    'decode_ut_metadata',
    'encode',
    'encode_handshake',
    'make_reserved',
    'message_name',
]


# message ids
CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = range(10)
SUGGEST, HAVE_ALL, HAVE_NONE, REJECT_REQUEST, ALLOWED_FAST = 13, 14, 15, 16, 17
EXTENDED, HASH_REQUEST, HASHES, HASH_REJECT = 20, 21, 22, 23

_EMPTY: dict[int, type[Any]] = {CHOKE: Choke, UNCHOKE: Unchoke, INTERESTED: Interested,
                                 NOT_INTERESTED: NotInterested, HAVE_ALL: HaveAll, HAVE_NONE: HaveNone}
_INDEX: dict[int, type[Any]] = {HAVE: Have, SUGGEST: Suggest, ALLOWED_FAST: AllowedFast}
_TRIPLE: dict[int, type[Any]] = {REQUEST: Request, CANCEL: Cancel, REJECT_REQUEST: RejectRequest}
_HASH_HEADER = struct.Struct(">32sIIII")
#: Exact body lengths (id byte included) of fixed-size messages.
_FIXED = {**dict.fromkeys(_EMPTY, 1), **dict.fromkeys(_INDEX, 5), **dict.fromkeys(_TRIPLE, 13),
          PORT: 3, HASH_REQUEST: 49, HASH_REJECT: 49}


# -------------------------------------------------------------------------------------------- parser


class WireParser:
    """Incremental parser of one direction of a peer-wire stream (after any MSE layer).

    ``local_extensions`` are the BEP 10 ids *we* announced: the peer addresses ut_metadata messages to
    us with our id. ``num_pieces`` tightens the bitfield and have checks once known.
    """

    def __init__(self, *, expect_handshake: bool = True,
                 local_extensions: Mapping[bytes, int] = LOCAL_EXTENSIONS,
                 num_pieces: int | None = None) -> None:
        self._buf = bytearray()
        self._need_handshake = expect_handshake
        self._ut_metadata_id = local_extensions.get(UT_METADATA, 0)
        self._num_pieces: int | None = None
        self._max_bitfield = (limits.MAX_PIECES + 7) // 8
        self._error: PeerWireError | None = None
        if num_pieces is not None:
            self.set_num_pieces(num_pieces)

    @property
    def num_pieces(self) -> int | None:
        return self._num_pieces

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)

    def set_num_pieces(self, num_pieces: int) -> None:
        if not 0 < num_pieces <= limits.MAX_PIECES:
            raise LocalProtocolError(f"piece count {num_pieces} outside 1..{limits.MAX_PIECES}")
        self._num_pieces = num_pieces
        self._max_bitfield = (num_pieces + 7) // 8

    def _max_body(self, message_id: int) -> int:
        if message_id == PIECE:
            return 9 + limits.PEER_BLOCK_SIZE
        if message_id == BITFIELD:
            return 1 + self._max_bitfield
        if message_id == EXTENDED:
            return limits.MAX_EXTENDED_MESSAGE
        if message_id == HASHES:
            return limits.MAX_HASHES_MESSAGE
        return limits.MAX_UNKNOWN_MESSAGE

    def feed(self, data: bytes) -> list[WireEvent]:
        """Add received bytes; return the complete events they finish (possibly none)."""
        if self._error is not None:
            raise self._error
        try:
            return self._parse(data)
        except PeerWireError as exc:
            self._error = exc
            raise

    def _parse(self, data: bytes) -> list[WireEvent]:
        buf = self._buf
        buf += data
        events: list[WireEvent] = []
        pos = 0
        end = len(buf)
        if self._need_handshake:
            if end == 0:
                return events
            if buf[0] != len(PROTOCOL):
                raise HandshakeError(f"handshake starts with length byte {buf[0]}, not 19")
            have = min(end, 1 + len(PROTOCOL))
            if buf[1:have] != PROTOCOL[: have - 1]:
                raise HandshakeError("handshake does not carry the 'BitTorrent protocol' string")
            if end < HANDSHAKE_LENGTH:
                return events
            events.append(Handshake(reserved=bytes(buf[20:28]), infohash=bytes(buf[28:48]),
                                    peer_id=bytes(buf[48:68])))
            pos = HANDSHAKE_LENGTH
            self._need_handshake = False
        while end - pos >= 4:
            (length,) = struct.unpack_from(">I", buf, pos)
            if length == 0:
                events.append(KeepAlive())
                pos += 4
                continue
            if end - pos < 5:
                break
            message_id = buf[pos + 4]
            fixed = _FIXED.get(message_id)
            if fixed is not None and length != fixed:
                raise MessageLengthError(f"message {message_id} has length {length}, expected {fixed}")
            if length > self._max_body(message_id):
                limit = self._max_body(message_id)
                raise MessageLengthError(f"message {message_id} of {length} bytes exceeds its limit {limit}")
            if end - pos < 4 + length:
                break
            body = bytes(buf[pos + 5 : pos + 4 + length])
            pos += 4 + length
            events.append(self._message(message_id, body))
        del buf[:pos]
        return events

    def _check_index(self, index: int) -> None:
        if self._num_pieces is not None and index >= self._num_pieces:
            raise BitfieldError(f"piece index {index} beyond the torrent's {self._num_pieces} pieces")

    def _message(self, message_id: int, body: bytes) -> WireMessage:
        if message_id in _EMPTY:
            return _EMPTY[message_id]()
        if message_id in _INDEX:
            (index,) = struct.unpack(">I", body)
            self._check_index(index)
            return _INDEX[message_id](index)
        if message_id in _TRIPLE:
            index, begin, length = struct.unpack(">III", body)
            self._check_index(index)
            return _TRIPLE[message_id](index, begin, length)
        if message_id == BITFIELD:
            self._check_bitfield(body)
            return Bitfield(body)
        if message_id == PIECE:
            if len(body) < 8:
                raise MessageLengthError(f"piece message of {len(body) + 1} bytes is too short")
            index, begin = struct.unpack_from(">II", body)
            self._check_index(index)
            return Piece(index, begin, body[8:])
        if message_id == PORT:
            return Port(struct.unpack(">H", body)[0])
        if message_id == EXTENDED:
            return self._extended(body)
        if message_id in (HASH_REQUEST, HASH_REJECT, HASHES):
            if len(body) < _HASH_HEADER.size:
                raise MessageLengthError(f"hash message of {len(body) + 1} bytes is too short")
            head = _HASH_HEADER.unpack_from(body)
            if message_id == HASH_REQUEST:
                return HashRequest(*head)
            if message_id == HASH_REJECT:
                return HashReject(*head)
            hashes = body[_HASH_HEADER.size :]
            if len(hashes) % 32:
                raise MalformedMessage(f"hashes message carries {len(hashes)} bytes, not a multiple of 32")
            root, base_layer, index, length, proof_layers = head
            return Hashes(root, base_layer, index, length, proof_layers, hashes)
        return UnknownMessage(message_id, len(body) + 1)

    def _check_bitfield(self, bits: bytes) -> None:
        if self._num_pieces is None:
            return
        check_bitfield(bits, self._num_pieces)

    def _extended(self, body: bytes) -> WireMessage:
        if not body:
            raise MessageLengthError("extended message without an extension id")
        ext_id, payload = body[0], body[1:]
        if ext_id == 0:
            return decode_extended_handshake(payload)
        if ext_id == self._ut_metadata_id:
            return decode_ut_metadata(payload)
        return ExtendedMessage(ext_id, payload)


def check_bitfield(bits: bytes, num_pieces: int) -> None:
    """Raise :class:`BitfieldError` unless ``bits`` is a valid bitfield for ``num_pieces`` pieces."""
    expected = (num_pieces + 7) // 8
    if len(bits) != expected:
        raise BitfieldError(f"bitfield of {len(bits)} bytes for {num_pieces} pieces (expected {expected})")
    spare = 8 * expected - num_pieces
    if spare and bits[-1] & ((1 << spare) - 1):
        raise BitfieldError("bitfield sets spare bits beyond the last piece")


def _int(d: Mapping[bytes, Any], key: bytes, *, minimum: int = 0) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ExtensionError(f"extended field {key.decode()!r} is not an integer >= {minimum}")
    return value


def decode_extended_handshake(payload: bytes) -> ExtendedHandshake:
    try:
        d = bencoding.decode(payload, max_size=limits.MAX_EXTENDED_MESSAGE, max_depth=limits.MAX_KRPC_DEPTH)
    except DecodeError as exc:
        raise ExtensionError(f"extended handshake is not valid bencoding: {exc}") from exc
    if not isinstance(d, dict):
        raise ExtensionError("extended handshake is not a dictionary")
    raw_m = d.get(b"m", {})
    if not isinstance(raw_m, dict):
        raise ExtensionError("extended handshake 'm' is not a dictionary")
    m: dict[bytes, int] = {}
    for name, ext_id in raw_m.items():
        if isinstance(ext_id, int) and not isinstance(ext_id, bool) and 0 <= ext_id <= 255:
            m[name] = ext_id
        else:
            raise ExtensionError(f"extended handshake gives {name!r} an invalid id")
    v = d.get(b"v")
    yourip = d.get(b"yourip")
    return ExtendedHandshake(
        m=m,
        metadata_size=_int(d, b"metadata_size"),
        v=v.decode("utf-8", "replace")[:200] if isinstance(v, bytes) else None,
        yourip=yourip if isinstance(yourip, bytes) and len(yourip) in (4, 16) else None,
        reqq=_int(d, b"reqq"),
        p=_int(d, b"p"),
    )


def decode_ut_metadata(payload: bytes) -> MetadataRequest | MetadataData | MetadataReject:
    try:
        head_end = _bencoded_value_end(payload, 0, 0, 4)
        head = bencoding.decode(payload[:head_end], max_size=1024, max_depth=4)
    except (DecodeError, ValueError) as exc:
        raise ExtensionError(f"ut_metadata header is not valid bencoding: {exc}") from exc
    if not isinstance(head, dict):
        raise ExtensionError("ut_metadata header is not a dictionary")
    msg_type, piece = _int(head, b"msg_type"), _int(head, b"piece")
    if piece is None:
        raise ExtensionError("ut_metadata message without a piece number")
    data = payload[head_end:]
    if msg_type == 1:
        total_size = _int(head, b"total_size")
        if total_size is None:
            raise ExtensionError("ut_metadata data message without total_size")
        if len(data) > METADATA_PIECE:
            raise ExtensionError(f"ut_metadata block of {len(data)} bytes exceeds 16 KiB")
        return MetadataData(piece, total_size, data)
    if data:
        raise ExtensionError("ut_metadata request or reject carries trailing data")
    if msg_type == 0:
        return MetadataRequest(piece)
    if msg_type == 2:
        return MetadataReject(piece)
    raise ExtensionError(f"unknown ut_metadata msg_type {msg_type}")


# ------------------------------------------------------------------------------------------- encoder


def encode_handshake(handshake: Handshake) -> bytes:
    if len(handshake.infohash) != 20 or len(handshake.peer_id) != 20 or len(handshake.reserved) != 8:
        raise LocalProtocolError("handshake needs a 20-byte infohash, a 20-byte peer id, 8 reserved bytes")
    return bytes([len(PROTOCOL)]) + PROTOCOL + handshake.reserved + handshake.infohash + handshake.peer_id


def _frame(message_id: int, body: bytes = b"") -> bytes:
    return struct.pack(">IB", len(body) + 1, message_id) + body


def _extended_frame(ext_id: int, payload: bytes) -> bytes:
    return struct.pack(">IBB", len(payload) + 2, EXTENDED, ext_id) + payload


def encode(message: WireEvent, *, remote_extensions: Mapping[bytes, int] | None = None) -> bytes:
    """Serialise one message. ut_metadata messages need the peer's ids (``remote_extensions``)."""
    if isinstance(message, Handshake):
        return encode_handshake(message)
    if isinstance(message, KeepAlive):
        return bytes(4)
    for table in (_EMPTY, _INDEX, _TRIPLE):
        for message_id, cls in table.items():
            if type(message) is cls:
                values = [getattr(message, f.name) for f in fields(message)]
                return _frame(message_id, struct.pack(">" + "I" * len(values), *values))
    if isinstance(message, Bitfield):
        return _frame(BITFIELD, message.bits)
    if isinstance(message, Piece):
        return _frame(PIECE, struct.pack(">II", message.index, message.begin) + message.block)
    if isinstance(message, Port):
        return _frame(PORT, struct.pack(">H", message.port))
    if isinstance(message, HashRequest | HashReject | Hashes):
        head = _HASH_HEADER.pack(message.pieces_root, message.base_layer, message.index, message.length,
                                 message.proof_layers)
        if isinstance(message, Hashes):
            return _frame(HASHES, head + message.hashes)
        return _frame(HASH_REQUEST if isinstance(message, HashRequest) else HASH_REJECT, head)
    if isinstance(message, ExtendedHandshake):
        d: dict[bytes, Any] = {b"m": dict(message.m)}
        for key, value in ((b"metadata_size", message.metadata_size), (b"reqq", message.reqq),
                           (b"p", message.p), (b"yourip", message.yourip)):
            if value is not None:
                d[key] = value
        if message.v is not None:
            d[b"v"] = message.v.encode()
        return _extended_frame(0, bencoding.encode(d))
    if isinstance(message, ExtendedMessage):
        return _extended_frame(message.ext_id, message.payload)
    if isinstance(message, MetadataRequest | MetadataData | MetadataReject):
        ext_id = (remote_extensions or {}).get(UT_METADATA, 0)
        if not ext_id:
            raise LocalProtocolError("the peer did not announce ut_metadata")
        if isinstance(message, MetadataRequest):
            return _extended_frame(ext_id, bencoding.encode({b"msg_type": 0, b"piece": message.piece}))
        if isinstance(message, MetadataReject):
            return _extended_frame(ext_id, bencoding.encode({b"msg_type": 2, b"piece": message.piece}))
        head = bencoding.encode({b"msg_type": 1, b"piece": message.piece, b"total_size": message.total_size})
        return _extended_frame(ext_id, head + message.data)
    raise LocalProtocolError(f"cannot encode {type(message).__name__}")


def message_name(message: WireEvent) -> str:
    """snake_case name of a message for transcripts (``have_all``, ``ut_metadata_data``...)."""
    names = {MetadataRequest: "ut_metadata_request", MetadataData: "ut_metadata_data",
             MetadataReject: "ut_metadata_reject", ExtendedHandshake: "extended_handshake",
             ExtendedMessage: "extended", UnknownMessage: "unknown", KeepAlive: "keep_alive"}
    name = names.get(type(message))
    if name is not None:
        return name
    cls = type(message).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in cls).lstrip("_")


# ------------------------------------------------------------------------------------------- peer ids

_AZUREUS_CLIENTS = {
    "LT": "libtorrent", "lt": "libTorrent (rakshasa)", "qB": "qBittorrent", "TR": "Transmission",
    "UT": "µTorrent", "UM": "µTorrent Mac", "UW": "µTorrent Web", "DE": "Deluge", "AZ": "Vuze",
    "BI": "BiglyBT", "BT": "BitTorrent", "KT": "KTorrent", "FD": "Free Download Manager", "XL": "Xunlei",
    "SD": "Xunlei", "TX": "Tixati", "WW": "WebTorrent", "FW": "FrostWire", "BC": "BitComet",
    "AG": "Ares", "LW": "LimeWire", "PI": "PicoTorrent", "RT": "rtorrent", "HL": "Halite",
    "BN": "Baidu Netdisk", "MG": "MediaGet", "pW": "p2pwatch",
}


def client_from_peer_id(peer_id: bytes) -> str | None:
    """Best-effort client name from an Azureus-style (``-LT2010-``) or Mainline-style peer id."""
    if len(peer_id) >= 8 and peer_id[:1] == b"-" and peer_id[7:8] == b"-":
        code = peer_id[1:3].decode("latin-1")
        version = peer_id[3:7].decode("latin-1")
        if not version.isalnum():
            return None
        name = _AZUREUS_CLIENTS.get(code, code if code.isalnum() else None)
        if name is None:
            return None
        return f"{name} {'.'.join(version)}"
    if peer_id[:1] == b"M" and b"--" in peer_id[:8]:
        version = peer_id[1:8].split(b"--")[0].decode("latin-1").replace("-", ".")
        return f"BitTorrent Mainline {version}"
    return None
