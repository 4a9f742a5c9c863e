"""Peer-wire messages (BEP 3, 6, 9, 10, 52) as frozen dataclasses, their errors and constants;
:mod:`p2pwatch.probe.wire` parses and encodes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from p2pwatch.errors import PeerWireError

PROTOCOL = b"BitTorrent protocol"
HANDSHAKE_LENGTH = 1 + len(PROTOCOL) + 8 + 20 + 20
#: BEP 10 (byte 5, 0x10), BEP 6 fast (byte 7, 0x04), BEP 5 DHT port (byte 7, 0x01).
RESERVED_EXTENSIONS = (5, 0x10)
RESERVED_FAST = (7, 0x04)
RESERVED_DHT = (7, 0x01)
RESERVED_V2 = (7, 0x10)  # BEP 52 upgrade bit
UT_METADATA = b"ut_metadata"
UT_PEX = b"ut_pex"  # BEP 11 peer exchange (p2pwatch.probe.pex decodes it)
#: The extension ids we announce in our BEP 10 handshake (peers address us with these ids).
LOCAL_EXTENSIONS: Mapping[bytes, int] = {UT_PEX: 1, UT_METADATA: 2}
METADATA_PIECE = 16 * 1024  # BEP 9 block size


class HandshakeError(PeerWireError):
    """The 68-byte BitTorrent handshake is malformed (wrong protocol string)."""


class MessageLengthError(PeerWireError):
    """A message is longer than its limit, or a fixed-size message has the wrong length."""


class MalformedMessage(PeerWireError):
    """A message has a valid length but invalid content (bad field values, bad bencoding)."""


class BitfieldError(PeerWireError):
    """A bitfield or have message does not fit the torrent's piece count."""


class ExtensionError(PeerWireError):
    """A BEP 10 extended message (handshake or ut_metadata) is malformed."""


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Handshake:
    infohash: bytes
    peer_id: bytes
    reserved: bytes = bytes(8)

    def has_bit(self, bit: tuple[int, int]) -> bool:
        return bool(self.reserved[bit[0]] & bit[1])

    @property
    def supports_extensions(self) -> bool:
        return self.has_bit(RESERVED_EXTENSIONS)

    @property
    def supports_fast(self) -> bool:
        return self.has_bit(RESERVED_FAST)

    @property
    def supports_dht(self) -> bool:
        return self.has_bit(RESERVED_DHT)


def make_reserved(*bits: tuple[int, int]) -> bytes:
    out = bytearray(8)
    for byte, mask in bits:
        out[byte] |= mask
    return bytes(out)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass

@dataclass(frozen=True, slots=True)
class Choke:
    pass

@dataclass(frozen=True, slots=True)
class Unchoke:
    pass

@dataclass(frozen=True, slots=True)
class Interested:
    pass

@dataclass(frozen=True, slots=True)
class NotInterested:
    pass

@dataclass(frozen=True, slots=True)
class HaveAll:
    pass

@dataclass(frozen=True, slots=True)
class HaveNone:
    pass


@dataclass(frozen=True, slots=True)
class _PieceIndex:
    index: int

@dataclass(frozen=True, slots=True)
class Have(_PieceIndex):
    pass

@dataclass(frozen=True, slots=True)
class Suggest(_PieceIndex):
    pass

@dataclass(frozen=True, slots=True)
class AllowedFast(_PieceIndex):
    pass


@dataclass(frozen=True, slots=True)
class _BlockRef:
    index: int
    begin: int
    length: int

@dataclass(frozen=True, slots=True)
class Request(_BlockRef):
    pass

@dataclass(frozen=True, slots=True)
class Cancel(_BlockRef):
    pass

@dataclass(frozen=True, slots=True)
class RejectRequest(_BlockRef):
    pass


@dataclass(frozen=True, slots=True)
class Bitfield:
    bits: bytes

    def has(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self.bits) and bool(self.bits[byte] & (0x80 >> (index & 7)))

    def count(self) -> int:
        return int.from_bytes(self.bits, "big").bit_count()


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    begin: int
    block: bytes


@dataclass(frozen=True, slots=True)
class Port:
    port: int


@dataclass(frozen=True, slots=True)
class ExtendedHandshake:
    """BEP 10 handshake (extended message id 0). ``m`` maps extension names to the sender's ids."""

    m: Mapping[bytes, int] = field(default_factory=dict)
    metadata_size: int | None = None
    v: str | None = None
    yourip: bytes | None = None
    reqq: int | None = None
    p: int | None = None


@dataclass(frozen=True, slots=True)
class ExtendedMessage:
    """A BEP 10 message for an extension we do not decode (payload kept, bounded)."""

    ext_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    piece: int

@dataclass(frozen=True, slots=True)
class MetadataReject:
    piece: int

@dataclass(frozen=True, slots=True)
class MetadataData:
    piece: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _HashFields:
    """BEP 52 hash request / reject / hashes share these fields."""

    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int

@dataclass(frozen=True, slots=True)
class HashRequest(_HashFields):
    pass

@dataclass(frozen=True, slots=True)
class HashReject(_HashFields):
    pass

@dataclass(frozen=True, slots=True)
class Hashes(_HashFields):
    hashes: bytes


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    message_id: int
    length: int


WireMessage = (
    KeepAlive | Choke | Unchoke | Interested | NotInterested | Have | Bitfield | Request | Piece | Cancel
    | Port | Suggest | HaveAll | HaveNone | RejectRequest | AllowedFast | ExtendedHandshake
    | ExtendedMessage | MetadataRequest | MetadataData | MetadataReject | HashRequest | Hashes
    | HashReject | UnknownMessage
)
WireEvent = Handshake | WireMessage
