"""Node identities and compact encodings (BEP 5 compact node/peer info, BEP 32 IPv6 forms).

* compact peer info: 4-byte IPv4 + 2-byte port (6 bytes), or 16-byte IPv6 + port (18 bytes, BEP 32);
* compact node info: 20-byte id + compact peer info (26 bytes IPv4, 38 bytes IPv6).

The byte layouts are :mod:`p2pwatch.torrent.compact`'s; these decoders raise :class:`~p2pwatch.errors.KRPCError`
(a RemoteProtocolError) for a bad length, as the DHT code expects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from p2pwatch.errors import CompactAddressError, KRPCError
from p2pwatch.torrent import compact

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
    """Compact peer info: 6 bytes for IPv4, 18 for IPv6 (:func:`p2pwatch.torrent.compact.encode_peer`)."""
    return compact.encode_peer(ip, port)


def decode_peer(data: bytes) -> tuple[str, int]:
    """One 6- or 18-byte compact peer info; :class:`KRPCError` for any other length."""
    try:
        return compact.decode_peer(data)
    except CompactAddressError as exc:
        raise KRPCError(str(exc)) from exc


def encode_nodes(nodes: list[NodeInfo] | tuple[NodeInfo, ...]) -> bytes:
    """Concatenated compact node infos (caller keeps IPv4 and IPv6 apart: ``nodes`` vs ``nodes6``)."""
    return b"".join([compact.encode_node(n.id, n.ip, n.port) for n in nodes])


def decode_nodes(data: bytes, *, ipv6: bool = False) -> tuple[NodeInfo, ...]:
    """Parse a ``nodes`` (26-byte entries) or ``nodes6`` (38-byte entries) string."""
    try:
        entries = compact.decode_node_list(data, ipv6=ipv6)
    except CompactAddressError as exc:
        raise KRPCError(str(exc)) from exc
    return tuple([NodeInfo(node_id, ip, port) for node_id, ip, port in entries])
