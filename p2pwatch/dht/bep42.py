"""BEP 42 (DHT security extension): node ids tied to the node's external IP address.

The first 21 bits of a node id must equal the first 21 bits of
``crc32c((ip & mask) | (r << 29))`` for IPv4 (``mask = 0x030f3fff``), or of
``crc32c((ip64 & 0x0103070f1f3f7fff) | (r << 61))`` for IPv6 (``ip64`` = the high 64 bits), where ``r`` is
the low 3 bits of the id's last byte. CRC32C (Castagnoli, reflected polynomial 0x82F63B78) is
computed here in pure Python from a 256-entry table: four or eight bytes per id, so speed is not a concern.

Departures and choices:

* ``node_id_for_ip(ip, rand)`` takes ``rand`` in 0..255 like the BEP's test vectors: ``r = rand & 7`` and
  the last byte of the id is ``rand`` (the BEP text says ``r`` is 0..7; a ``rand`` in 0..7 is that case).
* Exempt from the check (``is_valid_node_id`` returns True), as in the BEP: 10/8, 172.16/12, 192.168/16,
  169.254/16, 127/8; and, by analogy (libtorrent does the same), the IPv6 loopback ``::1``, link-local
  ``fe80::/10``, site-local ``fec0::/10`` and unique-local ``fc00::/7``. IPv4-mapped IPv6 addresses are
  checked as the IPv4 address they carry. Other non-global ranges (CGNAT, documentation) are not exempt.
"""

from __future__ import annotations

import os
import socket

from p2pwatch.errors import LocalProtocolError

_CASTAGNOLI = 0x82F63B78


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CASTAGNOLI if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``; pass a previous result as ``crc`` to continue it."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_V4_MASK = bytes((0x03, 0x0F, 0x3F, 0xFF))
_V6_MASK = bytes((0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF))
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def _packed(ip: str) -> bytes:
    """4 bytes for IPv4 (also for an IPv4-mapped IPv6 address), 16 for IPv6."""
    try:
        if ":" not in ip:
            return socket.inet_pton(socket.AF_INET, ip)
        packed = socket.inet_pton(socket.AF_INET6, ip)
    except (OSError, TypeError) as exc:
        raise LocalProtocolError(f"not an IP address: {ip!r}") from exc
    return packed[12:] if packed[:12] == _V4_MAPPED_PREFIX else packed


def _prefix_crc(packed: bytes, r: int) -> int:
    """The CRC32C of the masked address with ``r`` in its top 3 bits (the BEP's expression)."""
    if len(packed) == 4:
        masked = bytearray(a & m for a, m in zip(packed, _V4_MASK, strict=True))
    else:
        masked = bytearray(a & m for a, m in zip(packed[:8], _V6_MASK, strict=True))
    masked[0] |= (r & 0x7) << 5
    return crc32c(bytes(masked))


def _exempt(packed: bytes) -> bool:
    if len(packed) == 4:
        a, b = packed[0], packed[1]
        return a in (10, 127) or (a == 172 and b & 0xF0 == 16) or (a, b) in ((192, 168), (169, 254))
    return (
        packed == bytes(15) + b"\x01"  # ::1
        or packed[0] & 0xFE == 0xFC  # fc00::/7 unique local
        or (packed[0] == 0xFE and packed[1] & 0xC0 in (0x80, 0xC0))  # fe80::/10, fec0::/10
    )


def is_exempt(ip: str) -> bool:
    """True for the local addresses BEP 42 exempts from node id verification (see the module docstring)."""
    return _exempt(_packed(ip))


def node_id_for_ip(ip: str, rand: int | None = None) -> bytes:
    """A BEP 42-compliant 20-byte node id for our external ``ip``.

    ``rand`` (0..255, random when None) picks ``r = rand & 7`` and becomes the id's last byte; bytes 3..18
    and the low 3 bits of byte 2 are random.
    """
    if rand is None:
        rand = os.urandom(1)[0]
    if not 0 <= rand <= 0xFF:
        raise LocalProtocolError(f"rand must be in 0..255, not {rand}")
    crc = _prefix_crc(_packed(ip), rand)
    tail = os.urandom(17)
    return (
        bytes((crc >> 24, (crc >> 16) & 0xFF, ((crc >> 8) & 0xF8) | (tail[0] & 0x07)))
        + tail[1:]
        + bytes((rand,))
    )


def is_valid_node_id(node_id: bytes, ip: str) -> bool:
    """Whether ``node_id`` obeys BEP 42 for a node seen at ``ip``; always True for exempt local addresses.

    Raises :class:`LocalProtocolError` when ``ip`` is not an IP address (our bug, not the remote's).
    """
    if len(node_id) != 20:
        return False
    packed = _packed(ip)
    if _exempt(packed):
        return True
    crc = _prefix_crc(packed, node_id[19])
    return (
        node_id[0] == crc >> 24
        and node_id[1] == (crc >> 16) & 0xFF
        and node_id[2] & 0xF8 == (crc >> 8) & 0xF8
    )
