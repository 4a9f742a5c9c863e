"""BEP 52 merkle trees: literals, a naive reference implementation, and libtorrent's own trees."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch.errors import LocalProtocolError
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.merkle import (
    BLOCK_SIZE,
    ZERO_HASH,
    LeafHasher,
    block_hashes,
    iter_leaf_hashes,
    merkle_root,
    pad_piece_hash,
    piece_hash_v2,
    piece_layer,
    pieces_root,
    root_from_piece_layer,
    split_hashes,
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_root(leaves: list[bytes], width: int) -> bytes:
    """Materialise every padding leaf and hash pairs up: the textbook definition."""
    layer = list(leaves) + [bytes(32)] * (width - len(leaves))
    while len(layer) > 1:
        layer = [sha(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def leaf(n: int) -> bytes:
    return sha(n.to_bytes(4, "big"))


# --- literals ------------------------------------------------------------------------------------------


def test_block_hashes_cut_16k_blocks_with_short_tail() -> None:
    data = bytes(range(256)) * 200  # 51200 bytes: 3 full blocks and 2048 bytes
    hashes = block_hashes(data)
    assert len(hashes) == 4
    assert hashes[0] == sha(data[:BLOCK_SIZE])
    assert hashes[3] == sha(data[3 * BLOCK_SIZE :])
    assert block_hashes(b"") == []
    assert block_hashes(b"x") == [sha(b"x")]
    assert block_hashes(bytes(BLOCK_SIZE)) == [sha(bytes(BLOCK_SIZE))]


def test_merkle_root_small_trees() -> None:
    a, b, c = leaf(1), leaf(2), leaf(3)
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == sha(a + b)
    assert merkle_root([a, b, c]) == sha(sha(a + b) + sha(c + ZERO_HASH))
    assert merkle_root([a], pad_leaves_to=2) == sha(a + ZERO_HASH)
    assert merkle_root([a, b], pad_leaves_to=4) == sha(sha(a + b) + sha(ZERO_HASH + ZERO_HASH))


def test_padding_uses_zero_hashes_not_hash_of_zeros() -> None:
    a = leaf(7)
    assert merkle_root([a, a, a]) != merkle_root([a, a, a, sha(bytes(BLOCK_SIZE))])
    assert merkle_root([a, a, a]) == merkle_root([a, a, a, ZERO_HASH])


@pytest.mark.parametrize(
    ("leaves", "kwargs"),
    [
        ([], {}),
        ([b"short"], {}),
        ([leaf(1)] * 3, {"pad_leaves_to": 2}),
        ([leaf(1)] * 3, {"pad_leaves_to": 6}),
        ([leaf(1)], {"pad_leaves_to": 0}),
    ],
)
def test_merkle_root_refuses_misuse(leaves: list[bytes], kwargs: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        merkle_root(leaves, **kwargs)


def test_pad_piece_hash() -> None:
    assert pad_piece_hash(16384) == ZERO_HASH
    assert pad_piece_hash(32768) == sha(ZERO_HASH * 2)
    assert pad_piece_hash(65536) == sha(sha(ZERO_HASH * 2) * 2)
    for bad in (0, 8192, 16385, 3 * 16384):
        with pytest.raises(LocalProtocolError):
            pad_piece_hash(bad)


def test_single_piece_file_is_padded_to_its_own_power_of_two() -> None:
    data = os.urandom(3 * BLOCK_SIZE - 5)  # 3 leaves, piece of 8 leaves
    leaves = block_hashes(data)
    root = pieces_root(leaves)
    assert root == naive_root(leaves, 4)
    assert piece_layer(leaves, 8 * BLOCK_SIZE) == [root]
    assert piece_hash_v2(data, 8 * BLOCK_SIZE, single_piece_file=True) == root
    # as the last piece of a longer file, the same bytes pad to a whole piece: a different hash
    assert piece_hash_v2(data, 8 * BLOCK_SIZE) == naive_root(leaves, 8) != root


def test_multi_piece_layer_and_root() -> None:
    data = os.urandom(5 * BLOCK_SIZE + 100)  # 6 leaves; pieces of 2 leaves -> 3 pieces
    leaves = block_hashes(data)
    layer = piece_layer(leaves, 2 * BLOCK_SIZE)
    assert layer == [sha(leaves[0] + leaves[1]), sha(leaves[2] + leaves[3]), sha(leaves[4] + leaves[5])]
    assert [piece_hash_v2(data[i : i + 2 * BLOCK_SIZE], 2 * BLOCK_SIZE) for i in (0, 32768, 65536)] == layer
    pad = pad_piece_hash(2 * BLOCK_SIZE)
    assert root_from_piece_layer(layer, 2 * BLOCK_SIZE) == sha(sha(layer[0] + layer[1]) + sha(layer[2] + pad))
    assert root_from_piece_layer(layer, 2 * BLOCK_SIZE) == pieces_root(leaves) == naive_root(leaves, 8)


def test_piece_layer_edge_cases() -> None:
    assert piece_layer([], 16384) == []
    with pytest.raises(LocalProtocolError):
        piece_layer([leaf(1)], 20000)
    with pytest.raises(LocalProtocolError):
        root_from_piece_layer([], 16384)
    with pytest.raises(LocalProtocolError):
        pieces_root([])
    for bad in (b"", bytes(16385)):
        with pytest.raises(LocalProtocolError):
            piece_hash_v2(bad, 16384)


def test_split_hashes() -> None:
    assert split_hashes(leaf(1) + leaf(2)) == [leaf(1), leaf(2)]
    assert split_hashes(b"") == []
    with pytest.raises(LocalProtocolError):
        split_hashes(bytes(33))


def test_leaf_hasher_streams_and_refuses_misuse() -> None:
    data = os.urandom(3 * BLOCK_SIZE + 10)
    hasher = LeafHasher()
    assert hasher.update(data[:100]) == []
    got = hasher.update(data[100 : BLOCK_SIZE + 1])
    assert got == [sha(data[:BLOCK_SIZE])]
    got += hasher.update(data[BLOCK_SIZE + 1 :])
    got += hasher.finish()
    assert got == block_hashes(data)
    assert hasher.length == len(data)
    assert hasher.leaf_count == 4
    with pytest.raises(LocalProtocolError):
        hasher.update(b"more")
    with pytest.raises(LocalProtocolError):
        hasher.finish()
    empty = LeafHasher()
    assert empty.finish() == []
    assert list(iter_leaf_hashes([data[:5], b"", data[5:]])) == block_hashes(data)


# --- properties ----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(0, 3))
def test_merkle_root_matches_naive_definition(count: int, extra_levels: int) -> None:
    leaves = [leaf(i) for i in range(count)]
    width = 1 << ((count - 1).bit_length() + extra_levels)
    assert merkle_root(leaves, pad_leaves_to=width) == naive_root(leaves, width)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.sampled_from([16384, 32768, 65536, 262144]))
def test_piece_layer_root_equals_pieces_root(count: int, piece_length: int) -> None:
    """BEP 52: padding the piece layer with zero-subtree roots is padding the leaves with zero hashes."""
    leaves = [leaf(i) for i in range(count)]
    layer = piece_layer(leaves, piece_length)
    per_piece = piece_length // BLOCK_SIZE
    assert len(layer) == -(-count // per_piece)
    if count > per_piece:
        assert root_from_piece_layer(layer, piece_length) == pieces_root(leaves)
    else:
        assert layer == [pieces_root(leaves)]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=4 * BLOCK_SIZE + 50), st.lists(st.integers(0, 3 * BLOCK_SIZE), max_size=6))
def test_leaf_hasher_any_chunking(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(iter_leaf_hashes(chunks)) == block_hashes(data)


# --- libtorrent's trees --------------------------------------------------------------------------------


def lt_v2_torrent(
    tmp_path: Path, sizes: list[int], piece_length: int
) -> tuple[dict[bytes, Any], list[bytes]]:
    rng = random.Random(sum(sizes) + piece_length)
    root = tmp_path / "content"
    root.mkdir()
    blobs = []
    for i, size in enumerate(sizes):
        blob = rng.randbytes(size)
        (root / f"f{i:02d}").write_bytes(blob)
        blobs.append(blob)
    ct = lt.create_torrent(lt.list_files(str(root)), piece_length, lt.create_torrent.v2_only)
    lt.set_piece_hashes(ct, str(tmp_path))
    return bencoding.decode(lt.bencode(ct.generate())), blobs


@pytest.mark.parametrize("piece_length", [16384, 65536])
def test_roots_and_layers_equal_libtorrents(tmp_path: Path, piece_length: int) -> None:
    per = piece_length
    sizes = [1, BLOCK_SIZE, 3 * BLOCK_SIZE - 1, per, per + 1, 5 * per + 7, 8 * per]
    torrent, blobs = lt_v2_torrent(tmp_path, sizes, piece_length)
    tree = torrent[b"info"][b"file tree"]
    layers = torrent[b"piece layers"]
    for i, blob in enumerate(blobs):
        entry = tree[f"f{i:02d}".encode()][b""]
        leaves = block_hashes(blob)
        assert entry[b"pieces root"] == pieces_root(leaves), sizes[i]
        if len(blob) > piece_length:
            assert split_hashes(layers[entry[b"pieces root"]]) == piece_layer(leaves, piece_length)
            first = blob[:piece_length]
            assert piece_hash_v2(first, piece_length) == layers[entry[b"pieces root"]][:32]
        else:
            assert entry[b"pieces root"] not in layers
            assert piece_hash_v2(blob, piece_length, single_piece_file=True) == entry[b"pieces root"]
