"""Kademlia's join targets (p2pwatch.dht.join): one random id per range farther than the nearest neighbour."""

from __future__ import annotations

import os
import random

import pytest

from p2pwatch.dht.join import far_targets
from p2pwatch.errors import LocalProtocolError


def shared_bits(a: bytes, b: bytes) -> int:
    return 160 - (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_length()


def test_each_target_shares_exactly_its_depth_with_our_id() -> None:
    rng = random.Random(7)
    for _ in range(200):
        own = rng.randbytes(20)
        nearest = bytearray(own)
        flip = rng.randrange(160)  # the neighbour shares ``flip`` leading bits with us
        nearest[flip // 8] ^= 0x80 >> (flip % 8)
        targets = far_targets(own, bytes(nearest), 8, rng)
        assert len(targets) == min(flip, 8)
        assert [shared_bits(own, t) for t in targets] == list(range(len(targets)))


def test_no_neighbour_means_every_range_and_limit_bounds_it() -> None:
    own = os.urandom(20)
    assert [shared_bits(own, t) for t in far_targets(own, None, 5)] == [0, 1, 2, 3, 4]
    assert far_targets(own, None, 0) == []


def test_bad_ids_are_typed_errors() -> None:
    with pytest.raises(LocalProtocolError):
        far_targets(b"short", None, 8)
    with pytest.raises(LocalProtocolError):
        far_targets(bytes(20), b"x", 8)
