"""The peer probe's choice of a piece (p2pwatch.probe.piece_choice, BEP 3 claims, BEP 52 layers), sans-IO, and the
probe taking its candidate pieces once (branch cleanup-a)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from p2pwatch.probe import peer_probe, wire
from p2pwatch.probe.piece_choice import (
    PieceChoice,
    candidate_pieces,
    choose_piece,
    claimed_pieces,
    layer_to_fetch,
)
from p2pwatch.torrent import bencoding, merkle
from p2pwatch.torrent.metainfo import Metainfo, parse_info
from tests.hostile_peers import PeerScript, synthetic_v1_torrent
from tests.probe.test_peer_probe import run_probe, sent

PIECE = 32768


def v2_info(pieces: int) -> tuple[Metainfo, bytes]:
    """A bare v2 info dict: ``big.bin`` of ``pieces`` pieces (its layer made up, returned) and a 1-byte file."""
    layer = [hashlib.sha256(b"piece %d" % i).digest() for i in range(pieces)]
    info = {b"meta version": 2, b"name": b"pack", b"piece length": PIECE, b"file tree": {
        b"big.bin": {b"": {b"length": (pieces - 1) * PIECE + 5,
                           b"pieces root": merkle.root_from_piece_layer(layer, PIECE)}},
        b"small.txt": {b"": {b"length": 1, b"pieces root": merkle.pieces_root([hashlib.sha256(b"s").digest()])}}}}
    return parse_info(bencoding.encode(info)), b"".join(layer)


def test_claimed_pieces_from_bitfield_and_haves() -> None:
    bits = wire.Bitfield(bytes([0b1010_0000, 0b0000_0001]))
    assert claimed_pieces({3}, bits, None) == {0, 2, 3, 15}
    assert claimed_pieces({3, 12}, bits, 10) == {0, 2, 3}  # beyond the torrent's pieces: not claims
    assert claimed_pieces(set(), None, 10) == set()


def test_candidates() -> None:
    assert candidate_pieces(7, 4, have_all=True, claimed={1}) == [7]  # asked for: only it, even out of range
    assert candidate_pieces(None, 4, have_all=True, claimed=set()) == [0, 1, 2, 3]
    assert candidate_pieces(None, 4, have_all=False, claimed={3, 0, 2}) == [0, 2, 3]


def test_the_smallest_verifiable_piece_lowest_index_first() -> None:
    meta = parse_info(synthetic_v1_torrent(size=100_000, piece_length=PIECE).info_bytes)  # last piece 1,696 bytes
    every = candidate_pieces(None, meta.num_pieces, have_all=True, claimed=set())
    assert choose_piece(meta, every, requested=None, claims=lambda i: True) == PieceChoice(3)
    assert choose_piece(meta, [2, 1], requested=None, claims=lambda i: True) == PieceChoice(1)  # equal sizes
    nothing = PieceChoice(None, note="no_verifiable_piece")
    assert choose_piece(meta, [], requested=None, claims=lambda i: True) == nothing


def test_a_requested_piece() -> None:
    meta = parse_info(synthetic_v1_torrent(size=100_000, piece_length=PIECE).info_bytes)
    assert choose_piece(meta, [1], requested=1, claims={1}.__contains__) == PieceChoice(1)
    assert choose_piece(meta, [2], requested=2, claims={1}.__contains__) == PieceChoice(
        None, error="the peer does not claim piece 2")
    assert choose_piece(meta, [9], requested=9, claims=lambda i: True) == PieceChoice(
        None, error="piece 9 out of range 0..3")


def test_a_layer_only_when_no_candidate_is_verifiable() -> None:
    meta, layer = v2_info(5)
    big = meta.files[0]
    assert layer_to_fetch(meta, [0, 1]) == big
    assert layer_to_fetch(meta, [0, 5]) is None  # small.txt's piece is verifiable: no layer needed
    assert layer_to_fetch(meta, [9, -1]) is None  # nothing in range
    assert choose_piece(meta, [0, 1], requested=None, claims=lambda i: True).note == "no_verifiable_piece"
    assert big.pieces_root is not None
    full = meta.with_piece_layers({big.pieces_root: layer})
    assert layer_to_fetch(full, [0, 1]) is None
    assert choose_piece(full, [0, 1, 4], requested=None, claims=lambda i: True) == PieceChoice(4)  # 5 bytes
    assert choose_piece(full, [0, 1, 4, 5], requested=None, claims=lambda i: True) == PieceChoice(5)  # small.txt


@pytest.mark.parametrize("advertise", ["bitfield", "have_all"])
async def test_the_probe_takes_its_candidates_once(monkeypatch: pytest.MonkeyPatch, advertise: str) -> None:
    calls: list[tuple[Any, ...]] = []
    real = peer_probe.candidate_pieces

    def counting(*args: Any, **kwargs: Any) -> list[int]:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(peer_probe, "candidate_pieces", counting)
    torrent = synthetic_v1_torrent(size=100_000, piece_length=PIECE)
    result = await run_probe(PeerScript(torrent=torrent, advertise=advertise), encryption="off")
    assert result.error is None and result.level == 3 and result.piece_verified == 3
    assert [d["index"] for d in sent(result, "request")] == [3]
    assert calls == [(None, 4)]
