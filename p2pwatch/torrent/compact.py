"""Compact peer and node addresses: the one codec for every protocol that lists endpoints as packed bytes.

* BEP 23 (compact tracker replies): a peer is 4 bytes of IPv4 address and a 2-byte big-endian port, 6 bytes;
  a list is the concatenation of such entries (``peers``; BEP 15 UDP announce replies use the same form).
* BEP 7 (IPv6 tracker extension) and BEP 32 (IPv6 DHT): the IPv6 form is 16 bytes of address and the port,
  18 bytes (``peers6``, ``values`` entries, ``added6`` of BEP 11 PEX, the BEP 42 ``ip`` of a KRPC reply).
* BEP 5 (DHT) compact node info: a 20-byte node id followed by the compact peer, 26 bytes; BEP 32's IPv6
  form is 38 bytes (``nodes`` and ``nodes6``).

The rule for IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``, docs/DECISIONS.md, branch codec): the codec is
lossless and never changes a family. An 18-byte entry always decodes to IPv6 text as ``inet_ntop`` writes it
(a mapped one as ``::ffff:a.b.c.d``), text with a ``:`` always encodes to 18 bytes, so
``encode(decode(b)) == b`` for every well-sized ``b``. A caller that compares or contacts peers by IP and wants
the mapped form to count as the IPv4 address says so with :func:`unmap` (BEP 11 PEX does, as netguard and the
BEP 42 check do); the DHT and tracker codecs keep the address as listed. :func:`unmap` and :func:`format_addr`
(the ``ip:port`` text of an endpoint) live in :mod:`p2pwatch.endpoints`, which the error tree can import too;
they are re-exported here.

Errors: a decoder given a wrong length raises :class:`~p2pwatch.errors.CompactAddressError` (a
RemoteProtocolError) and nothing else, whatever the bytes; an encoder given an invalid address, a port outside
0..65535, an id that is not 20 bytes or an address of the other family raises
:class:`~p2pwatch.errors.LocalProtocolError`. Sans-IO, no state.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from p2pwatch.endpoints import Endpoint, format_addr, unmap
from p2pwatch.errors import CompactAddressError, LocalProtocolError

__all__ = [
    "ID_LEN", "NODE4_LEN", "NODE6_LEN", "PEER4_LEN", "PEER6_LEN", "Endpoint", "decode_node_list", "decode_peer",
    "decode_peer4", "decode_peer6", "decode_peer_list", "encode_node", "encode_node_list", "encode_peer",
    "encode_peer_list", "format_addr", "unmap",
]

ID_LEN = 20
PEER4_LEN = 6
PEER6_LEN = 18
NODE4_LEN = ID_LEN + PEER4_LEN
NODE6_LEN = ID_LEN + PEER6_LEN

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_ntop = socket.inet_ntop
_pton = socket.inet_pton
_PEER4 = struct.Struct("!4sH")
_PEER6 = struct.Struct("!16sH")
_NODE4 = struct.Struct("!20s4sH")
_NODE6 = struct.Struct("!20s16sH")


def _wrong_length(what: str, size: int, allowed: str) -> CompactAddressError:
    return CompactAddressError(f"compact {what} of {size} bytes, expected {allowed}")


# ------------------------------------------------------------------------------------------------- one peer


def decode_peer4(blob: bytes) -> Endpoint:
    """One 6-byte compact IPv4 peer (BEP 23) as ``(ip, port)``."""
    if len(blob) != PEER4_LEN:
        raise _wrong_length("IPv4 peer", len(blob), "6")
    ip, port = _PEER4.unpack(blob)
    return _ntop(_AF_INET, ip), port


def decode_peer6(blob: bytes) -> Endpoint:
    """One 18-byte compact IPv6 peer (BEP 7, BEP 32) as ``(ip, port)``; a mapped address stays IPv6 text."""
    if len(blob) != PEER6_LEN:
        raise _wrong_length("IPv6 peer", len(blob), "18")
    ip, port = _PEER6.unpack(blob)
    return _ntop(_AF_INET6, ip), port


def decode_peer(blob: bytes) -> Endpoint:
    """One compact peer of either family, told apart by its length (6 or 18 bytes, as in KRPC ``values``)."""
    if len(blob) == PEER4_LEN:
        return decode_peer4(blob)
    if len(blob) == PEER6_LEN:
        return decode_peer6(blob)
    raise _wrong_length("peer", len(blob), "6 or 18")


def _packed(ip: str, ipv6: bool | None) -> bytes:
    if type(ip) is not str:
        raise LocalProtocolError(f"an IP address must be text, not {type(ip).__name__}")
    v6 = ":" in ip
    if ipv6 is not None and v6 != ipv6:
        raise LocalProtocolError(f"{ip!r} is not an {'IPv6' if ipv6 else 'IPv4'} address")
    try:
        return _pton(_AF_INET6 if v6 else _AF_INET, ip)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        raise LocalProtocolError(f"{ip!r} is not an IP address") from None


def _port(port: int) -> bytes:
    if type(port) is not int or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port {port!r} is not an integer in 0..65535")
    return port.to_bytes(2, "big")


def encode_peer(ip: str, port: int, *, ipv6: bool | None = None) -> bytes:
    """The compact form of ``(ip, port)``: 6 bytes for IPv4 text, 18 for IPv6 text (``::ffff:a.b.c.d`` too).

    ``ipv6`` set to True or False insists on that family (a list's entries all share one).
    """
    return _packed(ip, ipv6) + _port(port)


# ----------------------------------------------------------------------------------------- lists of peers


def decode_peer_list(data: bytes, *, ipv6: bool = False) -> list[Endpoint]:
    """A concatenation of 6-byte (``ipv6``: 18-byte) compact peers; the empty string is the empty list."""
    layout, family = (_PEER6, _AF_INET6) if ipv6 else (_PEER4, _AF_INET)
    if len(data) % layout.size:
        raise CompactAddressError(
            f"compact {'IPv6' if ipv6 else 'IPv4'} peer list of {len(data)} bytes is not a multiple of {layout.size}"
        )
    ntop = _ntop
    return [(ntop(family, ip), port) for ip, port in layout.iter_unpack(data)]


def encode_peer_list(endpoints: Iterable[Endpoint], *, ipv6: bool = False) -> bytes:
    """The concatenated compact form of ``endpoints``, all of one family (``ipv6`` says which)."""
    return b"".join([_packed(ip, ipv6) + _port(port) for ip, port in endpoints])


# ------------------------------------------------------------------------------------------ node info


def encode_node(node_id: bytes, ip: str, port: int) -> bytes:
    """BEP 5 compact node info: the 20-byte id and the compact peer (26 bytes, or 38 for IPv6, BEP 32)."""
    if type(node_id) is not bytes or len(node_id) != ID_LEN:
        raise LocalProtocolError("a node id must be 20 bytes")
    return node_id + encode_peer(ip, port)


def decode_node_list(data: bytes, *, ipv6: bool = False) -> list[tuple[bytes, str, int]]:
    """A ``nodes`` (26-byte entries) or ``nodes6`` (38-byte entries) string as ``(id, ip, port)`` triples."""
    layout, family = (_NODE6, _AF_INET6) if ipv6 else (_NODE4, _AF_INET)
    if len(data) % layout.size:
        raise CompactAddressError(
            f"compact {'IPv6' if ipv6 else 'IPv4'} node list of {len(data)} bytes is not a multiple of {layout.size}"
        )
    ntop = _ntop
    return [(node_id, ntop(family, ip), port) for node_id, ip, port in layout.iter_unpack(data)]


def encode_node_list(nodes: Iterable[tuple[bytes, str, int]], *, ipv6: bool = False) -> bytes:
    """The concatenated compact node infos of ``(id, ip, port)`` triples, all of one family."""
    out = []
    for node_id, ip, port in nodes:
        if type(node_id) is not bytes or len(node_id) != ID_LEN:
            raise LocalProtocolError("a node id must be 20 bytes")
        out.append(node_id + _packed(ip, ipv6) + _port(port))
    return b"".join(out)
