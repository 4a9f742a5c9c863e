"""Node identities and compact encodings (BEP 5 compact node/peer info, BEP 32 IPv6 forms).

* compact peer info: 4-byte IPv4 + 2-byte port (6 bytes), or 16-byte IPv6 + port (18 bytes, BEP 32);
* compact node info: 20-byte id + compact peer info (26 bytes IPv4, 38 bytes IPv6).

The byte layouts are :mod:`p2pwatch.torrent.compact`'s; these decoders raise :class:`~p2pwatch.errors.KRPCError`
(a RemoteProtocolError) for a bad length, as the DHT code expects.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from p2pwatch.errors import CompactAddressError
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


def random_id(rng: random.Random | None = None) -> bytes:
    """A random node id or target: from ``rng`` when given (a seeded simulation), else ``os.urandom``."""
    return os.urandom(ID_LEN) if rng is None else rng.randbytes(ID_LEN)


class CompactNodes(Sequence[NodeInfo]):
    """A reply's ``nodes`` or ``nodes6`` string (BEP 5 compact node infos, BEP 32 for IPv6), read into
    :class:`NodeInfo` s the first time they are used (issue 12: a reply whose peers go to the consumer at once
    does not make its 8 nodes first). The length is checked here, so the later reading cannot fail. Equal to
    (and hashes as) the tuple of its nodes."""

    __slots__ = ("_blob", "_ipv6", "_nodes")

    def __init__(self, blob: bytes, *, ipv6: bool) -> None:
        size = compact.NODE6_LEN if ipv6 else compact.NODE4_LEN
        if len(blob) % size:
            raise CompactAddressError(f"a compact node list of {len(blob)} bytes is not a multiple of {size}")
        self._blob = blob
        self._ipv6 = ipv6
        self._nodes: tuple[NodeInfo, ...] | None = None

    @property
    def blob(self) -> bytes:
        """The compact string as received."""
        return self._blob

    @property
    def ipv6(self) -> bool:
        """Entries of 38 bytes (``nodes6``, BEP 32), else 26."""
        return self._ipv6

    def _read(self) -> tuple[NodeInfo, ...]:
        nodes = self._nodes
        if nodes is None:
            listed = compact.decode_node_list(self._blob, ipv6=self._ipv6)
            nodes = self._nodes = tuple([NodeInfo(node_id, ip, port) for node_id, ip, port in listed])
        return nodes

    def __len__(self) -> int:
        return len(self._blob) // (compact.NODE6_LEN if self._ipv6 else compact.NODE4_LEN)

    @overload
    def __getitem__(self, index: int) -> NodeInfo: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[NodeInfo, ...]: ...

    def __getitem__(self, index: int | slice) -> NodeInfo | tuple[NodeInfo, ...]:
        return self._read()[index]

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self._read())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CompactNodes):
            return self._read() == other._read()
        if isinstance(other, tuple):
            return self._read() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._read())

    def __repr__(self) -> str:
        return f"CompactNodes({self._read()!r})"
