"""KRPC messages (BEP 5, 32, 33, 42, 43, 51) as frozen dataclasses; :mod:`p2pwatch.dht.krpc` encodes and
decodes them. Queries carry ``tid`` (transaction id), ``sender`` (the 20-byte id) and BEP 43 ``read_only``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from p2pwatch.dht.nodeinfo import NodeInfo

GENERIC_ERROR = 201
SERVER_ERROR = 202
PROTOCOL_ERROR = 203
METHOD_UNKNOWN = 204

BLOOM_FILTER_SIZE = 256  # BEP 33: m = 256 * 8 bits


@dataclass(frozen=True, slots=True)
class Ping:
    method: ClassVar[bytes] = b"ping"
    tid: bytes
    sender: bytes
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class FindNode:
    method: ClassVar[bytes] = b"find_node"
    tid: bytes
    sender: bytes
    target: bytes
    want: tuple[bytes, ...] = ()
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class GetPeers:
    method: ClassVar[bytes] = b"get_peers"
    tid: bytes
    sender: bytes
    info_hash: bytes
    want: tuple[bytes, ...] = ()
    noseed: bool = False
    scrape: bool = False
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class AnnouncePeer:
    method: ClassVar[bytes] = b"announce_peer"
    tid: bytes
    sender: bytes
    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False
    seed: bool = False
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class SampleInfohashes:
    method: ClassVar[bytes] = b"sample_infohashes"
    tid: bytes
    sender: bytes
    target: bytes
    want: tuple[bytes, ...] = ()
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class UnknownQuery:
    """A query whose method we do not implement; ``target`` is its 20-byte ``target`` or ``info_hash``."""

    tid: bytes
    sender: bytes
    method: bytes
    target: bytes | None
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Response:
    """Any reply (``"y": "r"``); which fields are set depends on the query it answers.

    ``external_ip`` is the top-level BEP 42 ``ip``: our own address as the responder saw it.
    ``skipped_values`` counts malformed ``values`` entries that were dropped (diagnostic, not compared).
    """

    tid: bytes
    sender: bytes
    nodes: Sequence[NodeInfo] = ()  # a decoded reply's: CompactNodes, read when first used
    nodes6: Sequence[NodeInfo] = ()
    values: tuple[tuple[str, int], ...] = ()
    token: bytes | None = None
    samples: tuple[bytes, ...] = ()
    num: int | None = None
    interval: int | None = None
    bf_seeds: bytes | None = None
    bf_peers: bytes | None = None
    external_ip: tuple[str, int] | None = None
    skipped_values: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Error:
    tid: bytes
    code: int
    message: str


Query = Ping | FindNode | GetPeers | AnnouncePeer | SampleInfohashes | UnknownQuery
Message = Query | Response | Error
