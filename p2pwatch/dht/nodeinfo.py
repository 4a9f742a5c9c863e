"""Node identities and compact encodings (BEP 5 compact node/peer info, BEP 32 IPv6 forms).

* compact peer info: 4-byte IPv4 + 2-byte port (6 bytes), or 16-byte IPv6 + port (18 bytes, BEP 32);
* compact node info: 20-byte id + compact peer info (26 bytes IPv4, 38 bytes IPv6).

The byte layouts are :mod:`p2pwatch.torrent.compact`'s; these decoders raise :class:`~p2pwatch.errors.KRPCError`
(a RemoteProtocolError) for a bad length, as the DHT code expects.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

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


def random_id(rng: random.Random | None = None) -> bytes:
    """A random node id or target: from ``rng`` when given (a seeded simulation), else ``os.urandom``."""
    return os.urandom(ID_LEN) if rng is None else rng.randbytes(ID_LEN)
