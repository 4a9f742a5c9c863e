"""KRPC message codec (BEP 5) and the DHT extensions met in the wild. Sans-IO: bytes in, messages out.

Covered: BEP 5 (ping, find_node, get_peers, announce_peer, errors), BEP 32 (``nodes6``, ``want``, mixed
IPv4/IPv6 ``values``), BEP 33 (``scrape``/``noseed``/``seed``, ``BFsd``/``BFpe``), BEP 42 (the top-level
``ip`` of a reply), BEP 43 (top-level ``ro``), BEP 51 (``sample_infohashes``; ``samples``, ``num``,
``interval``).
Unknown keys are ignored (forward compatibility); the client version ``v`` is read past.

Where this codec departs from the letter of the BEPs, on purpose:

* An unknown query method is not an error here: it decodes to :class:`UnknownQuery`, keeping a 20-byte
  ``target`` (or else ``info_hash``) so the driver can answer it like ``find_node`` as libtorrent does;
  the driver answers 204 when there is no target.
* ``values`` entries that are not 6- or 18-byte strings are skipped and counted in
  :attr:`Response.skipped_values` (as libtorrent skips them) instead of failing the whole reply; this
  includes the obsolete single-string "mainline" form. Every other malformed known field fails the message.
* ``want`` keeps only the flags ``n4``/``n6``, in that order; other entries are ignored (BEP 32 says so).
* A ``nodes``/``nodes6`` string whose length is not a multiple of 26/38 fails the message (libtorrent
  silently drops the tail); node and peer ports are not checked (0 is kept for the caller to filter).
* announce_peer with ``implied_port`` may omit ``port`` or send one outside 1..65535: ``port`` is then 0.
* A malformed top-level ``ip`` is ignored, like libtorrent, since it is advisory.
* Only a datagram that bencode-decodes to a dict with a readable ``t`` yields a KRPCError with a
  ``transaction_id``; undecodable datagrams are dropped without reply (libtorrent does the same).
* Datagrams are bencode-decoded by :mod:`~p2pwatch.dht.krpc_bdecode`, which is stricter than BEP 3 readers
  such as bencode.py in one respect: non-canonical numbers (``i+1e``, ``i 1e``, ``1_0:``, signed key
  lengths) make a datagram undecodable.
* ``samples`` is always written when ``num`` or ``interval`` is set, even when empty (BEP 51 asks for it
  so an indexer can tell a sampling node from one that merely answers unknown queries).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from p2pwatch import limits
from p2pwatch.dht import krpc_bdecode
from p2pwatch.dht.krpc_encode import (
    KNOWN_METHODS,
    QueryShape,
    QueryTemplate,
    compact_address,
    encode,
    encode_response_dict,
    response_bytes,
)
from p2pwatch.dht.krpc_messages import (
    BLOOM_FILTER_SIZE,
    GENERIC_ERROR,
    METHOD_UNKNOWN,
    PROTOCOL_ERROR,
    SERVER_ERROR,
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
from p2pwatch.errors import CompactAddressError, DecodeError, KRPCError
from p2pwatch.torrent import compact

__all__ = [
    "BLOOM_FILTER_SIZE",
    "GENERIC_ERROR",
    "METHOD_UNKNOWN",
    "PROTOCOL_ERROR",
    "SERVER_ERROR",
    "AnnouncePeer",
    "Error",
    "FindNode",
    "GetPeers",
    "Message",
    "Ping",
    "Query",
    "QueryShape",
    "QueryTemplate",
    "Response",
    "SampleInfohashes",
    "UnknownQuery",
    "compact_address",
    "decode",
    "encode",
    "encode_response_dict",
    "error_reply",
    "response_bytes",
]

_WANT_FLAGS = (b"n4", b"n6")

_MAX_TID = limits.MAX_KRPC_TRANSACTION_ID
_MAX_TOKEN = limits.MAX_KRPC_TOKEN
_MAX_SAMPLES_LEN = limits.MAX_SAMPLES_PER_REPLY * 20


# --------------------------------------------------------------------------------------------- messages




# --------------------------------------------------------------------------------------------- decoding


def _bad(text: str, tid: bytes | None, query: bool) -> KRPCError:
    return KRPCError(text, PROTOCOL_ERROR, tid, from_query=query)


def _id20(d: dict[bytes, Any], key: bytes, what: str, tid: bytes, query: bool) -> bytes:
    value = d.get(key)
    if type(value) is not bytes or len(value) != 20:
        raise _bad(f"{what} '{key.decode()}' must be a 20-byte string", tid, query)
    return value


def _flag(d: dict[bytes, Any], key: bytes, tid: bytes) -> bool:
    value = d.get(key)
    if value is None:
        return False
    if type(value) is not int:
        raise _bad(f"'{key.decode()}' must be an integer", tid, True)
    return value != 0


def _want(a: dict[bytes, Any], tid: bytes) -> tuple[bytes, ...]:
    want = a.get(b"want")
    if want is None:
        return ()
    if type(want) is not list:
        raise _bad("'want' must be a list", tid, True)
    return tuple([flag for flag in _WANT_FLAGS if flag in want])


def _ping(a: dict[bytes, Any], tid: bytes, sender: bytes, ro: bool) -> Ping:
    return Ping(tid, sender, ro)


def _find_node(a: dict[bytes, Any], tid: bytes, sender: bytes, ro: bool) -> FindNode:
    return FindNode(tid, sender, _id20(a, b"target", "find_node", tid, True), _want(a, tid), ro)


def _sample_infohashes(a: dict[bytes, Any], tid: bytes, sender: bytes, ro: bool) -> SampleInfohashes:
    target = _id20(a, b"target", "sample_infohashes", tid, True)
    return SampleInfohashes(tid, sender, target, _want(a, tid), ro)


def _get_peers(a: dict[bytes, Any], tid: bytes, sender: bytes, ro: bool) -> GetPeers:
    info_hash = _id20(a, b"info_hash", "get_peers", tid, True)
    return GetPeers(
        tid, sender, info_hash, _want(a, tid), _flag(a, b"noseed", tid), _flag(a, b"scrape", tid), ro
    )


def _announce_peer(a: dict[bytes, Any], tid: bytes, sender: bytes, ro: bool) -> AnnouncePeer:
    info_hash = _id20(a, b"info_hash", "announce_peer", tid, True)
    token = a.get(b"token")
    if type(token) is not bytes or len(token) > _MAX_TOKEN:
        raise _bad(f"announce_peer 'token' must be a string of at most {_MAX_TOKEN} bytes", tid, True)
    implied = _flag(a, b"implied_port", tid)
    port = a.get(b"port")
    if implied:
        if type(port) is not int or not 0 <= port <= 0xFFFF:
            port = 0
    elif type(port) is not int or not 0 < port <= 0xFFFF:
        raise _bad("announce_peer 'port' must be an integer in 1..65535", tid, True)
    return AnnouncePeer(tid, sender, info_hash, port, token, implied, _flag(a, b"seed", tid), ro)


_QUERY_DECODERS: dict[bytes, Callable[[dict[bytes, Any], bytes, bytes, bool], Query]] = {
    b"ping": _ping,
    b"find_node": _find_node,
    b"get_peers": _get_peers,
    b"announce_peer": _announce_peer,
    b"sample_infohashes": _sample_infohashes,
}


def _decode_query(msg: dict[bytes, Any], tid: bytes) -> Query:
    method = msg.get(b"q")
    if type(method) is not bytes:
        raise _bad("query without a string 'q'", tid, True)
    a = msg.get(b"a")
    if type(a) is not dict:
        raise _bad("query without an 'a' dict", tid, True)
    sender = _id20(a, b"id", "query", tid, True)
    read_only = _flag(msg, b"ro", tid)
    decoder = _QUERY_DECODERS.get(method)
    if decoder is not None:
        return decoder(a, tid, sender, read_only)
    target = a.get(b"target")
    if type(target) is not bytes or len(target) != 20:
        target = a.get(b"info_hash")
        if type(target) is not bytes or len(target) != 20:
            target = None
    return UnknownQuery(tid, sender, method, target, read_only)


def _nodes(blob: Any, tid: bytes, v6: bool) -> CompactNodes:
    try:
        if type(blob) is not bytes:
            raise CompactAddressError("not a string")
        return CompactNodes(blob, ipv6=v6)  # read into NodeInfos when first used
    except CompactAddressError:
        size = compact.NODE6_LEN if v6 else compact.NODE4_LEN
        raise _bad(f"'{'nodes6' if v6 else 'nodes'}' must be a string of {size}-byte entries", tid, False) from None


# BEP 5/32 compact peers (``values`` entries, the BEP 42 ``ip``) by length: p2pwatch.torrent.compact's decoders
_PEER_DECODERS = {compact.PEER4_LEN: compact.decode_peer4, compact.PEER6_LEN: compact.decode_peer6}


def _values(values: Any, tid: bytes) -> tuple[tuple[tuple[str, int], ...], int]:
    if type(values) is not list:
        raise _bad("'values' must be a list", tid, False)
    decoders = _PEER_DECODERS
    out = [decoders[len(v)](v) for v in values if type(v) is bytes and len(v) in decoders]
    return tuple(out), len(values) - len(out)


def _optional(r: dict[bytes, Any], key: bytes, tid: bytes) -> Any:
    """``num``/``interval`` (non-negative ints) or ``BFsd``/``BFpe`` (256-byte bloom filters), or None."""
    value = r.get(key)
    if value is None:
        return None
    if (type(value) is int and value >= 0 and key in (b"num", b"interval")) or (
        type(value) is bytes and len(value) == BLOOM_FILTER_SIZE and key in (b"BFsd", b"BFpe")
    ):
        return value
    raise _bad(f"malformed '{key.decode()}' (a count or a {BLOOM_FILTER_SIZE}-byte bloom filter)", tid, False)


def _decode_response(msg: dict[bytes, Any], tid: bytes) -> Response:
    r = msg.get(b"r")
    if type(r) is not dict:
        raise _bad("response without an 'r' dict", tid, False)
    sender = _id20(r, b"id", "response", tid, False)
    get = r.get
    blob = get(b"nodes")
    nodes: Sequence[NodeInfo] = () if blob is None else _nodes(blob, tid, False)
    blob = get(b"nodes6")
    nodes6: Sequence[NodeInfo] = () if blob is None else _nodes(blob, tid, True)
    raw_values = get(b"values")
    if raw_values is None:
        values: tuple[tuple[str, int], ...] = ()
        skipped = 0
    else:
        values, skipped = _values(raw_values, tid)
    token = get(b"token")
    if token is not None and (type(token) is not bytes or len(token) > _MAX_TOKEN):
        raise _bad(f"'token' must be a string of at most {_MAX_TOKEN} bytes", tid, False)
    blob = get(b"samples")
    if blob is None:
        samples: tuple[bytes, ...] = ()
    elif type(blob) is not bytes or len(blob) % 20 or len(blob) > _MAX_SAMPLES_LEN:
        raise _bad("'samples' must be at most MAX_SAMPLES_PER_REPLY 20-byte infohashes", tid, False)
    else:
        samples = tuple([blob[i : i + 20] for i in range(0, len(blob), 20)])
    ip = msg.get(b"ip")
    external_ip = _PEER_DECODERS[len(ip)](ip) if type(ip) is bytes and len(ip) in _PEER_DECODERS else None
    optional = _optional
    return Response(
        tid,
        sender,
        nodes,
        nodes6,
        values,
        token,
        samples,
        optional(r, b"num", tid),
        optional(r, b"interval", tid),
        optional(r, b"BFsd", tid),
        optional(r, b"BFpe", tid),
        external_ip,
        skipped,
    )


def _decode_error(msg: dict[bytes, Any], tid: bytes) -> Error:
    e = msg.get(b"e")
    if type(e) is not list or not e or type(e[0]) is not int:
        raise _bad("error without an 'e' list starting with an integer code", tid, False)
    text = e[1] if len(e) > 1 and type(e[1]) is bytes else b""
    return Error(tid, e[0], text.decode("utf-8", "replace"))


def _decode(data: bytes) -> Message:
    try:
        msg = krpc_bdecode.decode(data)  # bencoding.decode's limits and answers, several times faster
    except DecodeError as exc:
        raise KRPCError(f"not a KRPC message: {exc}") from exc
    if type(msg) is not dict:
        raise KRPCError("a KRPC message must be a bencoded dict")
    tid = msg.get(b"t")
    if type(tid) is not bytes or len(tid) > _MAX_TID:
        raise KRPCError(f"missing 't' or longer than {_MAX_TID} bytes")
    kind = msg.get(b"y")
    if kind == b"q":
        return _decode_query(msg, tid)
    if kind == b"r":
        return _decode_response(msg, tid)
    if kind == b"e":
        return _decode_error(msg, tid)
    raise _bad("'y' must be 'q', 'r' or 'e'", tid, False)


def decode(data: bytes) -> Message:
    """Decode one KRPC datagram. Raises :class:`KRPCError` (code 203) and nothing else.

    The error carries ``transaction_id`` when the message had a readable ``t`` and ``from_query`` when
    it was a query; :func:`error_reply` turns it into the reply to send, if any.
    """
    try:
        return _decode(data)
    except KRPCError:
        raise
    except Exception as exc:  # pragma: no cover - a bug in this module; never let it kill the driver
        raise KRPCError(f"internal KRPC decoder error: {exc!r}", SERVER_ERROR) from exc


def error_reply(exc: KRPCError) -> bytes | None:
    """The encoded error to send back for a malformed query that had a transaction id, else None."""
    if not exc.from_query or exc.transaction_id is None:
        return None
    return encode(Error(exc.transaction_id, exc.code, str(exc)))


assert frozenset(_QUERY_DECODERS) == KNOWN_METHODS, "krpc_encode.KNOWN_METHODS is out of step with the decoder"
