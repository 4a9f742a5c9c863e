"""KRPC message encoding (BEP 5, with BEP 32 ``nodes6``/``want``, BEP 33 bloom filters, BEP 42 ``ip``,
BEP 43 ``ro`` and BEP 51 ``samples``). Sans-IO: messages in, bytes out.

Split out of :mod:`p2pwatch.dht.krpc`, which stays the public face and re-exports :func:`encode`.
Every message written here is one that :func:`p2pwatch.dht.krpc.decode` accepts back.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from p2pwatch import limits
from p2pwatch.bounded import remember
from p2pwatch.dht.krpc_messages import (
    BLOOM_FILTER_SIZE,
    AnnouncePeer,
    Error,
    FindNode,
    GetPeers,
    Message,
    Ping,
    Query,
    Response,
    SampleInfohashes,
    UnknownQuery,
)
from p2pwatch.dht.nodeinfo import CompactNodes, NodeInfo
from p2pwatch.errors import LocalProtocolError
from p2pwatch.torrent import bencoding

__all__ = ["QueryTemplate", "encode"]

_WANT_FLAGS = (b"n4", b"n6")
# The query methods krpc's decoder knows; an UnknownQuery must not use one of them.
KNOWN_METHODS = frozenset({b"ping", b"find_node", b"get_peers", b"announce_peer", b"sample_infohashes"})

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_pton = socket.inet_pton
_MAX_TID = limits.MAX_KRPC_TRANSACTION_ID
_MAX_TOKEN = limits.MAX_KRPC_TOKEN


# Packed addresses of the IPs we have put in messages (routing-table nodes and the nodes we answer): inet_pton
# is most of the cost of a compact node. Only inet_pton's own output goes in; cleared when it grows too big.
_PACKED: dict[int, dict[str, bytes]] = {_AF_INET: {}, _AF_INET6: {}}
_MAX_PACKED = 16384


def _packed_ip(family: int, ip: str) -> bytes:
    cache = _PACKED[family]
    packed = cache.get(ip)
    if packed is None:  # inet_pton raises for a malformed address: nothing is stored
        packed = remember(cache, ip, _pton(family, ip), _MAX_PACKED)
    return packed


def compact_address(ip: str, port: int) -> bytes:
    return _packed_ip(_AF_INET6 if ":" in ip else _AF_INET, ip) + port.to_bytes(2, "big")


def _need(ok: bool, text: str) -> None:
    if not ok:
        raise LocalProtocolError(text)


def _is_id(value: object) -> bool:
    return type(value) is bytes and len(value) == 20


def _is_token(value: object) -> bool:
    return type(value) is bytes and len(value) <= _MAX_TOKEN


def _query(m: Query, a: dict[bytes, Any], want: tuple[bytes, ...] = ()) -> dict[bytes, Any]:
    _need(_is_id(m.sender), "sender id must be 20 bytes")
    a[b"id"] = m.sender
    if want:
        _need(all(w in _WANT_FLAGS for w in want), "'want' may only hold b'n4' and b'n6'")
        a[b"want"] = list(want)
    msg: dict[bytes, Any] = {b"a": a, b"q": m.method, b"t": m.tid, b"y": b"q"}
    if m.read_only:
        msg[b"ro"] = 1
    return msg


def _enc_ping(m: Ping) -> dict[bytes, Any]:
    return _query(m, {})


def _enc_targeted(m: FindNode | SampleInfohashes) -> dict[bytes, Any]:
    _need(_is_id(m.target), "target must be 20 bytes")
    return _query(m, {b"target": m.target}, m.want)


def _enc_get_peers(m: GetPeers) -> dict[bytes, Any]:
    _need(_is_id(m.info_hash), "info_hash must be 20 bytes")
    a: dict[bytes, Any] = {b"info_hash": m.info_hash}
    if m.noseed:
        a[b"noseed"] = 1
    if m.scrape:
        a[b"scrape"] = 1
    return _query(m, a, m.want)


def _enc_announce_peer(m: AnnouncePeer) -> dict[bytes, Any]:
    _need(_is_id(m.info_hash), "info_hash must be 20 bytes")
    _need(_is_token(m.token), f"token must be bytes of at most {_MAX_TOKEN}")
    low = 0 if m.implied_port else 1
    _need(type(m.port) is int and low <= m.port <= 0xFFFF, "port must be 1..65535 (0 with implied_port)")
    a: dict[bytes, Any] = {b"info_hash": m.info_hash, b"port": m.port, b"token": m.token}
    if m.implied_port:
        a[b"implied_port"] = 1
    if m.seed:
        a[b"seed"] = 1
    return _query(m, a)


def _enc_unknown(m: UnknownQuery) -> dict[bytes, Any]:
    _need(type(m.method) is bytes and m.method not in KNOWN_METHODS, "UnknownQuery.method is a known one")
    _need(m.target is None or _is_id(m.target), "target must be 20 bytes")
    return _query(m, {} if m.target is None else {b"target": m.target})


_IP4_PORT = struct.Struct("!4sH").pack
_IP6_PORT = struct.Struct("!16sH").pack


def _compact_nodes(nodes: Sequence[NodeInfo], family: int, size: int) -> bytes:
    if type(nodes) is CompactNodes and nodes.ipv6 == (family == _AF_INET6):
        return nodes.blob  # a decoded reply's, as it came
    pack = _IP6_PORT if family == _AF_INET6 else _IP4_PORT  # inet_pton's output always has the packed size
    packed = _PACKED[family]
    try:  # every address seen before: one dict look-up each
        blob = b"".join([n.id + pack(packed[n.ip], n.port) for n in nodes])
    except KeyError:
        blob = b"".join([n.id + pack(_packed_ip(family, n.ip), n.port) for n in nodes])
    _need(len(blob) == size * len(nodes), "every node id must be 20 bytes")
    return blob


def encode_response_dict(m: Response) -> dict[bytes, Any]:
    _need(_is_id(m.sender), "sender id must be 20 bytes")
    r: dict[bytes, Any] = {b"id": m.sender}
    if m.nodes:
        r[b"nodes"] = _compact_nodes(m.nodes, _AF_INET, 26)
    if m.nodes6:
        r[b"nodes6"] = _compact_nodes(m.nodes6, _AF_INET6, 38)
    if m.values:
        r[b"values"] = [compact_address(ip, port) for ip, port in m.values]
    if m.token is not None:
        _need(_is_token(m.token), f"token must be bytes of at most {_MAX_TOKEN}")
        r[b"token"] = m.token
    if m.samples or m.num is not None or m.interval is not None:
        ok = len(m.samples) <= limits.MAX_SAMPLES_PER_REPLY and all(_is_id(s) for s in m.samples)
        _need(ok, "samples must be at most MAX_SAMPLES_PER_REPLY 20-byte infohashes")
        r[b"samples"] = b"".join(m.samples)
        for key, count in ((b"num", m.num), (b"interval", m.interval)):
            if count is not None:
                _need(type(count) is int and count >= 0, "num and interval must be non-negative ints")
                r[key] = count
    for key, bloom in ((b"BFsd", m.bf_seeds), (b"BFpe", m.bf_peers)):
        if bloom is not None:
            _need(type(bloom) is bytes and len(bloom) == BLOOM_FILTER_SIZE, "bloom filters are 256 bytes")
            r[key] = bloom
    msg: dict[bytes, Any] = {b"r": r, b"t": m.tid, b"y": b"r"}
    if m.external_ip is not None:
        msg[b"ip"] = compact_address(*m.external_ip)
    return msg


# b"0:" ... b"2047:", the string-length prefixes a datagram can hold, ready made
_LENGTH = tuple(b"%d:" % n for n in range(limits.MAX_DATAGRAM))
_NLENGTH = len(_LENGTH)


def _bstr(value: bytes) -> bytes:
    n = len(value)
    return (_LENGTH[n] if n < _NLENGTH else b"%d:" % n) + value


def response_bytes(m: Response, client_version: bytes | None, external_ip: tuple[str, int] | None) -> bytes:
    """A response assembled directly in bencoding's sorted key order (the DHT's hot path).

    Validates exactly like :func:`encode_response_dict`; the tests check it is byte-identical to encoding the dict.
    """
    sender, tid = m.sender, m.tid
    _need(type(sender) is bytes and len(sender) == 20, "sender id must be 20 bytes")
    _need(type(tid) is bytes and len(tid) <= _MAX_TID, "tid must be at most 16 bytes")
    ip = external_ip if external_ip is not None else m.external_ip
    if ip is not None:
        compact = compact_address(*ip)  # 6 or 18 bytes
        parts = [b"d2:ip", _LENGTH[len(compact)], compact, b"1:rd"]
    else:
        parts = [b"d1:rd"]
    if m.bf_peers is not None or m.bf_seeds is not None:
        for key, bloom in ((b"4:BFpe", m.bf_peers), (b"4:BFsd", m.bf_seeds)):
            if bloom is not None:
                _need(type(bloom) is bytes and len(bloom) == BLOOM_FILTER_SIZE, "bloom filters are 256 bytes")
                parts += (key, _bstr(bloom))
    parts += (b"2:id20:", sender)
    sampling = bool(m.samples) or m.num is not None or m.interval is not None
    if sampling:
        for count in (m.num, m.interval):
            _need(count is None or (type(count) is int and count >= 0), "num and interval must be non-negative ints")
        if m.interval is not None:
            parts += (b"8:interval", b"i%de" % m.interval)
    if m.nodes:
        parts += (b"5:nodes", _bstr(_compact_nodes(m.nodes, _AF_INET, 26)))
    if m.nodes6:
        parts += (b"6:nodes6", _bstr(_compact_nodes(m.nodes6, _AF_INET6, 38)))
    if sampling:
        if m.num is not None:
            parts += (b"3:num", b"i%de" % m.num)
        ok = len(m.samples) <= limits.MAX_SAMPLES_PER_REPLY and all(_is_id(x) for x in m.samples)
        _need(ok, "samples must be at most MAX_SAMPLES_PER_REPLY 20-byte infohashes")
        parts += (b"7:samples", _bstr(b"".join(m.samples)))
    token = m.token
    if token is not None:
        _need(_is_token(token), f"token must be bytes of at most {_MAX_TOKEN}")
        parts += (b"5:token", _LENGTH[len(token)], token)
    if m.values:
        parts.append(b"6:valuesl")
        parts += [_bstr(compact_address(vip, vport)) for vip, vport in m.values]
        parts.append(b"e")
    parts += (b"e1:t", _LENGTH[len(tid)], tid)
    if client_version is not None:
        _need(type(client_version) is bytes, "client_version must be bytes")
        parts += (b"1:v", _bstr(client_version))
    parts.append(b"1:y1:re")
    return b"".join(parts)


def _enc_error(m: Error) -> dict[bytes, Any]:
    _need(type(m.code) is int, "error code must be an int")
    return {b"e": [m.code, m.message.encode("utf-8")], b"t": m.tid, b"y": b"e"}


_ENCODERS: dict[type, Any] = {
    Ping: _enc_ping,
    FindNode: _enc_targeted,
    GetPeers: _enc_get_peers,
    AnnouncePeer: _enc_announce_peer,
    SampleInfohashes: _enc_targeted,
    UnknownQuery: _enc_unknown,
    Response: encode_response_dict,
    Error: _enc_error,
}


def encode(
    message: Message, *, client_version: bytes | None = None, external_ip: tuple[str, int] | None = None
) -> bytes:
    """Encode a message. ``client_version`` becomes ``v``; ``external_ip`` (the address we saw the
    other node at) becomes the top-level BEP 42 ``ip`` and overrides :attr:`Response.external_ip`.

    Raises :class:`LocalProtocolError` for a message that :func:`decode` would not accept back.
    """
    if type(message) is Response:
        try:
            return response_bytes(message, client_version, external_ip)
        except (OSError, ValueError, TypeError, OverflowError, AttributeError, struct.error) as exc:
            raise LocalProtocolError(f"cannot encode Response: {exc}") from exc
    return bencoding.encode(_message_dict(message, client_version, external_ip))


def _message_dict(message: Message, client_version: bytes | None,
                  external_ip: tuple[str, int] | None) -> dict[bytes, Any]:
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise LocalProtocolError(f"not a KRPC message: {type(message).__name__}")
    try:
        msg: dict[bytes, Any] = encoder(message)
        _need(type(message.tid) is bytes and len(message.tid) <= _MAX_TID, "tid must be at most 16 bytes")
        if client_version is not None:
            _need(type(client_version) is bytes, "client_version must be bytes")
            msg[b"v"] = client_version
        if external_ip is not None:
            msg[b"ip"] = compact_address(*external_ip)
    except (OSError, ValueError, TypeError, OverflowError, AttributeError, struct.error) as exc:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc
    return msg


class QueryTemplate:
    """A query that differs only in its transaction id from one node asked to the next (a lookup's step).

    Calling it gives the query for a tid; :meth:`datagram` gives its bytes, equal to :func:`encode`'s, from
    the query encoded once: bencoded keys are sorted, so ``t`` sits between the keys before it (``a``,
    ``q``, ``ro``) and those after (``v``, ``y``), and the tid is spliced in between (issue 12: a lookup's
    first datagram leaves sooner, and a crawler encodes each query once, not once per node). One made by
    :meth:`QueryShape.template` is not encoded at all: its id and target are spliced into the shape's bytes.
    """

    __slots__ = ("_head", "_make", "_shape", "_tail", "_values", "_version")

    def __init__(self, make: Callable[[bytes], Query], *, shape: QueryShape | None = None,
                 values: tuple[bytes, bytes] = (b"", b"")) -> None:
        self._make = make
        self._shape = shape
        self._values = values  # the own id and the target a shape's bytes are given
        self._version: bytes | None = None
        self._head = self._tail = b""

    def __call__(self, tid: bytes) -> Query:
        return self._make(tid)

    def parts(self, client_version: bytes | None) -> tuple[bytes, bytes]:
        """The bytes before the tid's ``1:t`` key and those after it."""
        if not self._head or client_version != self._version:
            split = self._shape.parts(client_version) if self._shape is not None else None
            if split is not None:
                before, between, after, self._tail, id_first = split
                own, target = self._values
                first, second = (own, target) if id_first else (target, own)
                self._head = b"".join((before, first, between, second, after))
            else:
                msg = _message_dict(self._make(b""), client_version, None)
                del msg[b"t"]
                self._head = bencoding.encode({k: v for k, v in msg.items() if k < b"t"})[:-1]
                self._tail = bencoding.encode({k: v for k, v in msg.items() if k > b"t"})[1:]
            self._version = client_version
        return self._head, self._tail

    def datagram(self, tid: bytes, client_version: bytes | None = None) -> bytes:
        """``encode(self(tid), client_version=client_version)``, without encoding the query again."""
        head, tail = self.parts(client_version)
        if type(tid) is not bytes or len(tid) > _MAX_TID:
            raise LocalProtocolError("tid must be at most 16 bytes")
        return b"".join((head, _LENGTHS[len(tid)], tid, tail))


class QueryShape:
    """The queries of one lookup kind: they differ only in the asking node's 20-byte id, their 20-byte target
    and their tid. The shape is encoded once (per client version) with stand-ins for the id and the target,
    and each lookup's :class:`QueryTemplate` splices its node's id and its target into those bytes (issue
    12: a lookup's first datagram is not held up by the encoder, not even a new node's first lookup; one shape
    serves every node of the process). Equal bytes to :func:`encode`'s; a shape whose stand-ins are not
    each found once before the tid leaves its templates to encode themselves."""

    __slots__ = ("_make", "_parts")

    STAND_IN_ID = b"p2pwatch-own-id-here"
    STAND_IN = b"p2pwatch-target-here"

    def __init__(self, make: Callable[[bytes, bytes, bytes], Query]) -> None:
        self._make = make  # (tid, own id, target) -> the query
        # per client version: the bytes around the two values and after the tid, and whether the id comes first
        self._parts: dict[bytes | None, tuple[bytes, bytes, bytes, bytes, bool] | None] = {}

    def template(self, own_id: bytes, target: bytes) -> QueryTemplate:
        """The template of ``own_id``'s lookup towards ``target``."""
        if type(target) is not bytes or len(target) != 20:
            raise LocalProtocolError("a query's target must be 20 bytes")
        make = self._make
        return QueryTemplate(lambda tid: make(tid, own_id, target), shape=self, values=(own_id, target))

    def parts(self, client_version: bytes | None) -> tuple[bytes, bytes, bytes, bytes, bool] | None:
        """The bytes before, between and after the id and the target, those after the tid, and whether the
        id comes first (None: see above)."""
        if client_version not in self._parts:
            ids, targets = self.STAND_IN_ID, self.STAND_IN
            head, tail = QueryTemplate(lambda tid: self._make(tid, ids, targets)).parts(client_version)
            split: tuple[bytes, bytes, bytes, bytes, bool] | None = None
            if all(head.count(x) == 1 and x not in tail for x in (ids, targets)):
                id_first = head.index(ids) < head.index(targets)
                first, second = (ids, targets) if id_first else (targets, ids)
                before, rest = head.split(first)
                between, after = rest.split(second)
                split = (before, between, after, tail, id_first)
            self._parts[client_version] = split
        return self._parts[client_version]


_LENGTHS = tuple(b"1:t%d:" % n for n in range(_MAX_TID + 1))

