"""BEP 52 ``hash request`` / ``hashes`` / ``hash reject``: fetch a v2 file's piece layer from a peer.

A torrent found on the network comes as its info dict alone (BEP 9); the v2 piece hashes of a file larger
than one piece live in the .torrent's ``piece layers``, outside the info dict, so they are not in it. A peer
hands them over on request: the piece layer is the merkle tree layer ``log2(piece length / 16 KiB)`` above
the 16 KiB leaves (the request's ``base layer``). We ask for the whole layer, in runs of at most 512 hashes
(BEP 52: "Length SHOULD NOT be greater than 512"), each run a power of two starting at a multiple of its
length, with no proof layers: the hashes are checked all together by re-computing the file's pieces root
(which is in the info dict, so covered by the infohash) from them. A layer that does not hash to the root is
refused, whatever the peer claims.

The last run is the next power of two of what is left (at least 2), reaching into the layer's padding, which
BEP 52's tree has and libtorrent serves; the padding hashes of the reply are dropped.

Departures: we never answer hash requests (we hold no content).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from p2pwatch.errors import MetainfoError, PeerTimeout, PeerWireError
from p2pwatch.probe import wire
from p2pwatch.torrent.merkle import BLOCK_SIZE
from p2pwatch.torrent.metainfo import FileEntry, Metainfo

#: Most hashes asked for in one request (BEP 52's SHOULD).
MAX_RUN = 512
HASH_SIZE = 32


def piece_layer_base(piece_length: int) -> int:
    """The ``base layer`` of the piece layer: how many layers it lies above the 16 KiB leaves."""
    return (piece_length // BLOCK_SIZE).bit_length() - 1


def layer_requests(metainfo: Metainfo, file: FileEntry) -> list[wire.HashRequest]:
    """The hash requests that together cover ``file``'s whole piece layer."""
    if file.pieces_root is None or file.length <= metainfo.piece_length:
        raise MetainfoError(f"{file.display_path!r} has no piece layer (not a v2 file larger than a piece)")
    count = -(-file.length // metainfo.piece_length)
    base = piece_layer_base(metainfo.piece_length)
    out = []
    for index in range(0, count, MAX_RUN):
        left = min(MAX_RUN, count - index)
        out.append(wire.HashRequest(file.pieces_root, base, index, max(2, 1 << (left - 1).bit_length()), 0))
    return out


def file_needing_layer(metainfo: Metainfo, pieces: Iterable[int]) -> FileEntry | None:
    """Among the files of ``pieces`` whose layer is missing, the one with the fewest pieces (the cheapest
    layer that makes one of those pieces verifiable); None when no such file."""
    best: FileEntry | None = None
    wanted = set(pieces)
    for f in metainfo.missing_layers:
        if wanted.intersection(metainfo.file_pieces(f)) and (best is None or f.length < best.length):
            best = f
    return best


class LayerFetch:
    """Collects the ``hashes`` replies to :func:`layer_requests` and checks the layer against the root."""

    def __init__(self, metainfo: Metainfo, file: FileEntry) -> None:
        self.metainfo, self.file = metainfo, file
        self.requests = layer_requests(metainfo, file)
        self.count = -(-file.length // metainfo.piece_length)
        self._runs: dict[int, bytes] = {}

    def _ours(self, event: wire.HashRequest | wire.Hashes | wire.HashReject) -> wire.HashRequest | None:
        for request in self.requests:
            if (event.pieces_root, event.base_layer, event.index, event.length) == (
                    request.pieces_root, request.base_layer, request.index, request.length):
                return request
        return None

    def feed(self, event: wire.WireEvent) -> bool:
        """Take one event; True when it answered one of our requests. Raises :class:`PeerWireError` when the
        peer rejects a request or answers with the wrong number of hashes."""
        if not isinstance(event, wire.Hashes | wire.HashReject):
            return False
        request = self._ours(event)
        if request is None:
            return False
        if isinstance(event, wire.HashReject):
            raise PeerWireError(f"the peer rejected our hash request for the piece layer of "
                                f"{self.file.display_path[:80]!r}")
        if len(event.hashes) < request.length * HASH_SIZE:
            raise PeerWireError(f"hashes reply of {len(event.hashes) // HASH_SIZE} hashes, {request.length} asked for")
        self._runs[request.index] = event.hashes[: request.length * HASH_SIZE]
        return True

    @property
    def done(self) -> bool:
        return len(self._runs) == len(self.requests)

    def layer(self) -> bytes:
        """The file's piece layer, its padding hashes dropped."""
        joined = b"".join(self._runs[r.index] for r in self.requests)
        return joined[: self.count * HASH_SIZE]

    def verified(self) -> Metainfo:
        """The metainfo with this layer added; raises :class:`MetainfoError` when the hashes do not re-compute
        the file's pieces root."""
        assert self.file.pieces_root is not None
        return self.metainfo.with_piece_layers({self.file.pieces_root: self.layer()})


@dataclass
class LayerOutcome:
    """What asking one peer for one piece layer gave: the metainfo with the layer when it verified, the
    layer itself (for the store), or why not (``flagged`` when the peer sent a layer that is wrong)."""

    metainfo: Metainfo | None = None
    layers: dict[bytes, bytes] = field(default_factory=dict)
    flagged: str | None = None
    failure: str | None = None


async def fetch_layer(metainfo: Metainfo, file: FileEntry, send: Callable[..., Awaitable[None]],
                      next_event: Callable[[], Awaitable[wire.WireEvent]],
                      note: Callable[..., None]) -> LayerOutcome:
    """Ask a peer for ``file``'s piece layer over an open connection (``send`` messages; ``next_event``
    waits for the next one, bounded by the caller; ``note`` writes the transcript). Never raises for what
    the peer does: a reject, a short reply or silence is a ``failure``, a wrong layer is ``flagged``."""
    fetch = LayerFetch(metainfo, file)
    assert file.pieces_root is not None
    try:
        await send(*fetch.requests)
        while not fetch.done:
            fetch.feed(await next_event())
        verified = fetch.verified()
    except MetainfoError as exc:
        note("piece_layer_wrong", file=file.display_path, reason=str(exc))
        return LayerOutcome(flagged=f"the piece layer it sent does not hash to the pieces root: {exc}")
    except (PeerWireError, PeerTimeout) as exc:
        note("piece_layer_failed", file=file.display_path, reason=str(exc))
        return LayerOutcome(failure=str(exc))
    layer = verified.piece_layers[file.pieces_root]
    note("piece_layer", file=file.display_path, pieces_root=file.pieces_root.hex(), hashes=len(layer) // HASH_SIZE,
         verified=True)
    return LayerOutcome(verified, {file.pieces_root: layer})
