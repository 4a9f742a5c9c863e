"""BEP 52 hash requests for a piece layer, sans-IO: the runs asked for, the replies assembled and checked
against the pieces root, and what a rejecting, short, silent or lying peer gives (never an exception)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import trio

from p2pwatch.errors import PeerTimeout, PeerWireError
from p2pwatch.probe import wire
from p2pwatch.probe.hash_layers import LayerFetch, fetch_layer, file_needing_layer, layer_requests, piece_layer_base
from p2pwatch.torrent import bencoding, merkle
from p2pwatch.torrent.metainfo import Metainfo, parse_info

PIECE = 32768


def _v2(pieces: int) -> tuple[Metainfo, list[bytes]]:
    """A v2 info dict of one file of ``pieces`` pieces and a small one; the big file's layer is made up."""
    layer = [hashlib.sha256(b"piece %d" % i).digest() for i in range(pieces)]
    root = merkle.root_from_piece_layer(layer, PIECE)
    small_root = merkle.pieces_root([hashlib.sha256(b"s").digest()])
    info = {b"meta version": 2, b"name": b"pack", b"piece length": PIECE, b"file tree": {
        b"big.bin": {b"": {b"length": (pieces - 1) * PIECE + 5, b"pieces root": root}},
        b"small.txt": {b"": {b"length": 1, b"pieces root": small_root}}}}
    return parse_info(bencoding.encode(info)), layer


def test_requests_cover_the_layer_in_runs_of_at_most_512() -> None:
    meta, _ = _v2(1300)
    big = meta.files[0]
    runs = [(r.index, r.length, r.base_layer, r.proof_layers) for r in layer_requests(meta, big)]
    assert runs == [(0, 512, 1, 0), (512, 512, 1, 0), (1024, 512, 1, 0)]  # 276 left: next power of two
    small, _ = _v2(3)
    assert [(r.index, r.length) for r in layer_requests(small, small.files[0])] == [(0, 4)]
    assert piece_layer_base(16384) == 0 and piece_layer_base(4 << 20) == 8
    with pytest.raises(Exception, match="has no piece layer"):
        layer_requests(small, small.files[1])


def test_the_cheapest_missing_layer_among_claimed_pieces() -> None:
    meta, layer = _v2(5)
    big = meta.files[0]
    assert file_needing_layer(meta, [0, 1]) == big
    assert file_needing_layer(meta, [5]) is None  # small.txt: its pieces root is its piece hash
    assert not meta.piece_verifiable(2) and meta.piece_verifiable(5)
    assert file_needing_layer(meta.with_piece_layers({big.pieces_root: b"".join(layer)}), [0]) is None  # type: ignore[dict-item]


def _reply(request: wire.HashRequest, hashes: list[bytes]) -> wire.Hashes:
    padded = hashes + [merkle.pad_piece_hash(PIECE)] * (request.index + request.length - len(hashes))
    chunk = padded[request.index : request.index + request.length]
    return wire.Hashes(request.pieces_root, request.base_layer, request.index, request.length, 0, b"".join(chunk))


def test_assembled_replies_give_the_verified_layer() -> None:
    meta, layer = _v2(700)
    fetch = LayerFetch(meta, meta.files[0])
    assert not fetch.feed(wire.Have(1))
    for request in reversed(fetch.requests):  # any order
        assert fetch.feed(_reply(request, layer))
    assert fetch.done and fetch.layer() == b"".join(layer)
    assert fetch.verified().piece_verifiable(3)


def _peer(events: list[wire.WireEvent | Exception]) -> tuple[list[wire.WireEvent], object, object]:
    sent: list[wire.WireEvent] = []
    queue: Iterator[wire.WireEvent | Exception] = iter(events)

    async def send(*messages: wire.WireEvent) -> None:
        sent.extend(messages)

    async def next_event() -> wire.WireEvent:
        item = next(queue)
        if isinstance(item, Exception):
            raise item
        return item

    return sent, send, next_event


@pytest.mark.parametrize("behaviour", ["honest", "lying", "reject", "short", "silent", "closed"])
async def test_fetch_layer_never_raises_for_what_the_peer_does(behaviour: str) -> None:
    meta, layer = _v2(6)
    request = layer_requests(meta, meta.files[0])[0]
    good = _reply(request, layer)
    events: list[wire.WireEvent | Exception] = {
        "honest": [wire.Unchoke(), good],
        "lying": [_reply(request, [hashlib.sha256(b"x").digest()] * 6)],
        "reject": [wire.HashReject(request.pieces_root, request.base_layer, request.index, request.length, 0)],
        "short": [wire.Hashes(request.pieces_root, request.base_layer, 0, request.length, 0, good.hashes[:64])],
        "silent": [PeerTimeout("no answer during a hash request")],
        "closed": [PeerWireError("peer closed the connection during a hash request")],
    }[behaviour]
    sent, send, next_event = _peer(events)
    notes: list[tuple[str, dict[str, object]]] = []
    with trio.fail_after(5):
        got = await fetch_layer(meta, meta.files[0], send, next_event,  # type: ignore[arg-type]
                                lambda what, **kw: notes.append((what, kw)))
    assert sent == [request]
    if behaviour == "honest":
        assert got.metainfo is not None and got.layers == {request.pieces_root: b"".join(layer)}
        assert got.flagged is None and notes[-1][0] == "piece_layer"
    elif behaviour == "lying":
        assert got.metainfo is None and got.flagged and "does not hash to the pieces root" in got.flagged
    else:
        assert got.metainfo is None and got.flagged is None and got.failure and notes[-1][0] == "piece_layer_failed"
