"""SHA-256 merkle trees of BitTorrent v2 (BEP 52): leaf hashes, pieces roots and piece layers.

A file's tree is built from the SHA-256 hashes of its 16 KiB blocks (the last block may be short). The leaf
layer is padded with zero hashes (32 zero bytes, *not* the hash of a zero block) up to a power of two and
hashed pairwise up to the ``pieces root``. The layer whose hashes each cover ``piece length`` bytes is the
file's *piece layer*; BEP 52 stores it in the .torrent's ``piece layers`` only for files larger than one
piece, and omits the hashes that would cover nothing but padding.

Padding rules, as BEP 52 and its reference creator apply them:

* the last piece of a multi-piece file is padded with zero leaves up to ``piece_length / 16 KiB`` leaves;
* the piece layer is padded up to a power of two with the root of a subtree of ``piece_length / 16 KiB``
  zero leaves (which is what padding the leaf layer with zeros amounts to);
* a file no larger than one piece is padded only up to the next power of two of its own leaf count, so its
  pieces root is *not* the root of a piece-sized subtree. Such a file has no stored piece layer; its one
  "piece hash" is its pieces root (``piece_layer`` returns ``[pieces_root]``).

Departure from the spec: none in the hashing. Empty files have no tree (BEP 52 gives them no pieces root);
asking for the root of nothing is an API misuse and raises :class:`~p2pwatch.errors.LocalProtocolError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

from p2pwatch.errors import LocalProtocolError

#: Size of a merkle leaf block (BEP 52).
BLOCK_SIZE = 16384
#: Size of a SHA-256 digest, and of every node of the tree.
HASH_SIZE = 32
#: The hash used to pad the leaf layer.
ZERO_HASH = bytes(HASH_SIZE)


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _next_power_of_two(value: int) -> int:
    return 1 if value <= 1 else 1 << (value - 1).bit_length()


def _pair(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(left + right).digest()


def _reduce(layer: Sequence[bytes], pad: bytes, height: int) -> bytes:
    """Hash ``layer`` (padded with ``pad``, the root of an all-padding subtree of its level) up ``height``
    levels; the caller guarantees ``len(layer) <= 2 ** height``. Padding is never materialised beyond one
    hash per level, so a tree over a few leaves with a large ``pad_leaves_to`` stays cheap."""
    nodes = list(layer)
    for _ in range(height):
        if len(nodes) % 2:
            nodes.append(pad)
        nodes = [_pair(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
        pad = _pair(pad, pad)
    return nodes[0]


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    for item in hashes:
        if not isinstance(item, bytes | bytearray) or len(item) != HASH_SIZE:
            raise LocalProtocolError(f"{what} must be {HASH_SIZE}-byte hashes")


def _blocks_per_piece(piece_length: int) -> int:
    if not _is_power_of_two(piece_length) or piece_length < BLOCK_SIZE:
        raise LocalProtocolError(
            f"v2 piece length must be a power of two of at least {BLOCK_SIZE}, not {piece_length}"
        )
    return piece_length // BLOCK_SIZE


def block_hashes(data: bytes) -> list[bytes]:
    """SHA-256 of each 16 KiB block of ``data`` (the last block may be short); no hashes for empty data."""
    view = memoryview(data)
    return [hashlib.sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


def merkle_root(leaves: Sequence[bytes], *, pad_leaves_to: int | None = None) -> bytes:
    """Root of the tree over ``leaves``, padded with zero hashes to the next power of two (or to
    ``pad_leaves_to``, a power of two at least ``len(leaves)``)."""
    if not leaves:
        raise LocalProtocolError("a merkle tree needs at least one leaf")
    _check_hashes(leaves, "merkle leaves")
    width = _next_power_of_two(len(leaves)) if pad_leaves_to is None else pad_leaves_to
    if not _is_power_of_two(width) or width < len(leaves):
        raise LocalProtocolError(f"cannot pad {len(leaves)} leaves to {width}: need a power of two >= it")
    return _reduce(leaves, ZERO_HASH, width.bit_length() - 1)


def pieces_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The ``pieces root`` of a non-empty file from its block hashes (:func:`block_hashes`)."""
    return merkle_root(leaf_hashes)


def pad_piece_hash(piece_length: int) -> bytes:
    """Root of a piece-sized subtree of zero leaves: the padding of a piece layer."""
    height = _blocks_per_piece(piece_length).bit_length() - 1
    return _reduce([ZERO_HASH], ZERO_HASH, height)


def piece_layer(leaf_hashes: Sequence[bytes], piece_length: int) -> list[bytes]:
    """The hashes that each cover one piece of a file, from the file's block hashes.

    Pieces hashes cover ``piece_length / 16 KiB`` leaves, the last one padded with zero leaves. Hashes that
    would cover only padding are omitted (as in the ``piece layers`` field). A file of at most one piece has
    no piece layer in its tree; for it this returns ``[pieces_root]``, the hash a v2 peer checks that piece
    against. An empty file gives ``[]``.
    """
    per_piece = _blocks_per_piece(piece_length)
    if not leaf_hashes:
        return []
    if len(leaf_hashes) <= per_piece:
        return [merkle_root(leaf_hashes)]
    return [
        merkle_root(leaf_hashes[i : i + per_piece], pad_leaves_to=per_piece)
        for i in range(0, len(leaf_hashes), per_piece)
    ]


def root_from_piece_layer(layer: Sequence[bytes], piece_length: int) -> bytes:
    """The pieces root implied by a file's piece layer (padded with :func:`pad_piece_hash`)."""
    if not layer:
        raise LocalProtocolError("a piece layer needs at least one hash")
    _check_hashes(layer, "piece layer entries")
    width = _next_power_of_two(len(layer))
    return _reduce(layer, pad_piece_hash(piece_length), width.bit_length() - 1)


def split_hashes(blob: bytes) -> list[bytes]:
    """Split concatenated 32-byte hashes (a ``piece layers`` value); the length must be a multiple of 32."""
    if len(blob) % HASH_SIZE:
        raise LocalProtocolError(f"{len(blob)} bytes is not a whole number of {HASH_SIZE}-byte hashes")
    return [bytes(blob[i : i + HASH_SIZE]) for i in range(0, len(blob), HASH_SIZE)]


def piece_hash_v2(data: bytes, piece_length: int, *, single_piece_file: bool = False) -> bytes:
    """Root of one piece's subtree, from the piece's file bytes (at most ``piece_length``, at least one).

    The piece is padded with zero leaves to a full piece, as every piece of a multi-piece file is. With
    ``single_piece_file=True`` the data is a whole file of at most one piece, and the result is its pieces
    root (leaves padded only to the next power of two).
    """
    per_piece = _blocks_per_piece(piece_length)
    if not 0 < len(data) <= piece_length:
        raise LocalProtocolError(f"a v2 piece holds 1 to {piece_length} bytes, not {len(data)}")
    leaves = block_hashes(data)
    if single_piece_file:
        return merkle_root(leaves)
    return merkle_root(leaves, pad_leaves_to=per_piece)


class LeafHasher:
    """Incremental block hashing of one file: feed data in chunks of any size, get leaf hashes as each
    16 KiB block completes; :meth:`finish` hashes the short last block.

    >>> hasher = LeafHasher()
    >>> leaves = hasher.update(b"x" * 20000) + hasher.finish()
    >>> leaves == block_hashes(b"x" * 20000)
    True
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._length = 0
        self._finished = False
        self._count = 0

    @property
    def length(self) -> int:
        """Bytes fed so far."""
        return self._length

    @property
    def leaf_count(self) -> int:
        """Leaf hashes produced so far."""
        return self._count

    def update(self, data: bytes) -> list[bytes]:
        """Feed ``data``; return the hashes of the blocks it completed (possibly none)."""
        if self._finished:
            raise LocalProtocolError("LeafHasher.update() after finish()")
        self._length += len(data)
        view = memoryview(data)
        out: list[bytes] = []
        if self._pending:
            take = min(BLOCK_SIZE - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < BLOCK_SIZE:
                return out
            out.append(hashlib.sha256(self._pending).digest())
            self._pending.clear()
        whole = len(view) - len(view) % BLOCK_SIZE
        out.extend(hashlib.sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, whole, BLOCK_SIZE))
        self._pending += view[whole:]
        self._count += len(out)
        return out

    def finish(self) -> list[bytes]:
        """End of file: return the hash of the short last block, if any. No more data may follow."""
        if self._finished:
            raise LocalProtocolError("LeafHasher.finish() called twice")
        self._finished = True
        if not self._pending:
            return []
        leaf = hashlib.sha256(self._pending).digest()
        self._pending.clear()
        self._count += 1
        return [leaf]


def iter_leaf_hashes(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the leaf hashes of the file whose bytes are the concatenation of ``chunks``."""
    hasher = LeafHasher()
    for chunk in chunks:
        yield from hasher.update(chunk)
    yield from hasher.finish()
