"""Self-contained helpers of the peer probe (BEP 3 wire, BEP 9/10 metadata, BEP 52 v2 pieces).

:func:`describe` turns a wire event into the JSON-able detail of a transcript entry, :func:`file_of_piece`
maps a piece to the file it belongs to, :func:`piece_digest` hashes a downloaded piece the way the
metainfo does (BEP 3 SHA-1, or the BEP 52 SHA-256 merkle piece hash for v2-only torrents), and
:func:`os_error_text` digs the real reason out of trio's connect errors. They hold no probe state;
:mod:`p2pwatch.probe.peer_probe` drives the connection and re-uses them (the choice of the piece to fetch
is :mod:`p2pwatch.probe.piece_choice`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from p2pwatch.probe import wire
from p2pwatch.torrent import merkle
from p2pwatch.torrent.metainfo import Metainfo


def describe(event: wire.WireEvent) -> dict[str, Any]:
    if isinstance(event, wire.Handshake):
        return {"infohash": event.infohash.hex(), "peer_id": event.peer_id.hex(),
                "reserved": event.reserved.hex(), "extensions": event.supports_extensions,
                "fast": event.supports_fast, "dht": event.supports_dht}
    if isinstance(event, wire.Piece):
        return {"index": event.index, "begin": event.begin, "length": len(event.block)}
    if isinstance(event, wire.Bitfield):
        return {"bytes": len(event.bits), "pieces_claimed": event.count()}
    if isinstance(event, wire.ExtendedHandshake):
        return {"m": {k.decode("latin-1"): v for k, v in event.m.items()},
                "metadata_size": event.metadata_size, "v": event.v, "reqq": event.reqq,
                "yourip": event.yourip.hex() if event.yourip else None}
    if isinstance(event, wire.MetadataData):
        return {"piece": event.piece, "total_size": event.total_size, "length": len(event.data)}
    if isinstance(event, wire.ExtendedMessage):
        return {"ext_id": event.ext_id, "length": len(event.payload)}
    if isinstance(event, wire.Hashes):
        return {"index": event.index, "length": event.length, "hashes": len(event.hashes) // 32}
    fields = getattr(event, "__dataclass_fields__", {})
    return {name: getattr(event, name) for name in fields
            if isinstance(getattr(event, name), int) and not isinstance(getattr(event, name), bool)}


def file_of_piece(mi: Metainfo, index: int) -> Any:
    for file in mi.files:
        if file.length > 0 and not file.pad and index in mi.file_pieces(file):
            return file
    return None


def piece_digest(mi: Metainfo, index: int, data: bytes) -> tuple[str, str]:
    """(hex digest, algorithm) of piece ``index`` as its metainfo hashes it: v1 SHA-1 or v2 merkle."""
    if mi.piece_hashes:
        return hashlib.sha1(data).hexdigest(), "sha1"
    file = file_of_piece(mi, index)
    assert file is not None
    single = file.length <= mi.piece_length
    return merkle.piece_hash_v2(data, mi.piece_length, single_piece_file=single).hex(), "sha256-merkle"


def os_error_text(exc: BaseException) -> str:
    """The underlying reason (trio wraps the attempts' errors in 'all attempts to connect ... failed')."""
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
