"""Which piece a peer probe downloads to prove evidence level 3 (BEP 3 claims, BEP 52 v2 piece hashes).

Sans-IO and stateless; :mod:`p2pwatch.probe.peer_probe` holds the connection and calls these once the
peer's claims (bitfield, ``have_all``, ``have`` messages, BEP 3 and BEP 6) and the metainfo are known.

* :func:`claimed_pieces`: the pieces a peer claims by its bitfield and ``have`` messages;
* :func:`candidate_pieces`: the pieces the probe may fetch, computed once per probe: the piece asked for, else
  every piece of a peer that has all, else the claimed ones (in index order);
* :func:`layer_to_fetch`: when none of the candidates can be verified from what the metainfo holds (bare v2
  metadata from BEP 9 carries no ``piece layers``), the file whose missing layer is cheapest to ask for by
  BEP 52 hash requests (:func:`p2pwatch.probe.hash_layers.file_needing_layer`);
* :func:`choose_piece`: the piece to download: the one asked for (if the peer claims it), else the smallest
  verifiable candidate, the lowest index among equals.

A candidate list taken once means a ``have`` that arrives during the BEP 52 hash request exchange is recorded
in the transcript but does not add a candidate (nor did it raise the level before: claims are read once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from p2pwatch.probe import wire
from p2pwatch.probe.hash_layers import file_needing_layer
from p2pwatch.torrent.metainfo import FileEntry, Metainfo


def claimed_pieces(haves: set[int], bitfield: wire.Bitfield | None, num_pieces: int | None) -> set[int]:
    """The piece indexes a peer claims by ``have`` messages and its bitfield (below ``num_pieces`` if known)."""
    claimed = set(haves)
    if bitfield is not None:
        bits = int.from_bytes(bitfield.bits, "big")
        width = 8 * len(bitfield.bits)
        while bits:
            low = bits & -bits
            claimed.add(width - low.bit_length())
            bits ^= low
    if num_pieces is not None:
        claimed = {i for i in claimed if i < num_pieces}
    return claimed


def candidate_pieces(requested: int | None, num_pieces: int, *, have_all: bool, claimed: set[int]) -> list[int]:
    """The pieces a probe may fetch: ``[requested]`` when one was asked for (in range or not: :func:`choose_piece`
    says what is wrong with it), else all ``num_pieces`` for a peer that has all, else ``claimed``, sorted."""
    if requested is not None:
        return [requested]
    return list(range(num_pieces)) if have_all else sorted(claimed)


def layer_to_fetch(metainfo: Metainfo, candidates: Sequence[int]) -> FileEntry | None:
    """The file whose missing v2 piece layer to ask the peer for (BEP 52), or None: none is needed when a
    candidate is verifiable already, and none helps when no candidate lies in a file whose layer is missing."""
    wanted = [i for i in candidates if 0 <= i < metainfo.num_pieces]
    if any(metainfo.piece_verifiable(i) for i in wanted):
        return None
    return file_needing_layer(metainfo, wanted)


@dataclass(frozen=True)
class PieceChoice:
    """The piece to download, or why there is none: ``error`` for the probe result (the piece asked for cannot
    be had), ``note`` for the transcript (nothing the peer claims can be verified)."""

    index: int | None
    error: str | None = None
    note: str | None = None


def choose_piece(metainfo: Metainfo, candidates: Sequence[int], *, requested: int | None,
                 claims: Callable[[int], bool]) -> PieceChoice:
    """The piece to fetch among ``candidates`` (from :func:`candidate_pieces`): ``requested`` when it is a
    piece of the torrent and ``claims(requested)``; else the smallest verifiable candidate."""
    if requested is not None:
        if not 0 <= requested < metainfo.num_pieces:
            return PieceChoice(None, error=f"piece {requested} out of range 0..{metainfo.num_pieces - 1}")
        if not claims(requested):
            return PieceChoice(None, error=f"the peer does not claim piece {requested}")
        return PieceChoice(requested)
    verifiable = [i for i in candidates if metainfo.piece_verifiable(i)]
    if not verifiable:
        return PieceChoice(None, note="no_verifiable_piece")
    return PieceChoice(min(verifiable, key=lambda i: (metainfo.piece_size(i), i)))  # lowest index among equals
