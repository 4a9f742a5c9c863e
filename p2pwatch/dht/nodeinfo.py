"""Node identities and compact encodings (BEP 5 compact node/peer info, BEP 32 IPv6 forms).

* compact peer info: 4-byte IPv4 + 2-byte port (6 bytes), or 16-byte IPv6 + port (18 bytes, BEP 32);
* compact node info: 20-byte id + compact peer info (26 bytes IPv4, 38 bytes IPv6).

All decoders check lengths first and raise :class:`~p2pwatch.errors.KRPCError` (a RemoteProtocolError).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from p2pwatch.errors import KRPCError

ID_LEN = 20
ID_BITS = 160


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node: its 20-byte id and its UDP endpoint."""

    id: bytes
    ip: str
    port: int

    @property
    def addr(self) -> tuple[str, int]:
        return (self.ip, self.port)


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two ids (BEP 5), as an integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def random_id() -> bytes:
    return os.urandom(ID_LEN)


def encode_peer(ip: str, port: int) -> bytes:
    """Compact peer info: 6 bytes for IPv4, 18 for IPv6."""
    packed = ipaddress.ip_address(ip).packed
    return packed + port.to_bytes(2, "big")


def decode_peer(data: bytes) -> tuple[str, int]:
    if len(data) == 6:
        return socket.inet_ntop(socket.AF_INET, data[:4]), int.from_bytes(data[4:], "big")
    if len(data) == 18:
        return socket.inet_ntop(socket.AF_INET6, data[:16]), int.from_bytes(data[16:], "big")
    raise KRPCError(f"compact peer info must be 6 or 18 bytes, got {len(data)}")


def encode_nodes(nodes: list[NodeInfo] | tuple[NodeInfo, ...]) -> bytes:
    """Concatenated compact node infos (caller keeps IPv4 and IPv6 apart: ``nodes`` vs ``nodes6``)."""
    return b"".join(n.id + encode_peer(n.ip, n.port) for n in nodes)


def decode_nodes(data: bytes, *, ipv6: bool = False) -> tuple[NodeInfo, ...]:
    """Parse a ``nodes`` (26-byte entries) or ``nodes6`` (38-byte entries) string."""
    size = 38 if ipv6 else 26
    if len(data) % size:
        raise KRPCError(f"compact node list length {len(data)} is not a multiple of {size}")
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    iplen = size - 22
    out = []
    for off in range(0, len(data), size):
        ip = socket.inet_ntop(family, data[off + 20 : off + 20 + iplen])
        port = int.from_bytes(data[off + size - 2 : off + size], "big")
        out.append(NodeInfo(data[off : off + 20], ip, port))
    return tuple(out)
