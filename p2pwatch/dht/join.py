"""Kademlia's join (Maymounkov & Mazières, section 2.3), used after the BEP 5 own-id bootstrap lookup.

A new node looks up its own id, then "refreshes all k-buckets further away than its closest neighbor": one
lookup towards a random id in each range of the id space that shares fewer leading bits with our id than our
nearest neighbour does. The own-id walk passes through those ranges only on its first hops, so without this
a new node knows almost nobody in the far half of the id space, where half of all targets lie (issue 12).
Sans-IO: ids in, ids out.
"""

from __future__ import annotations

import random

from p2pwatch.dht.nodeinfo import ID_BITS
from p2pwatch.dht.routing_entries import common_prefix_length
from p2pwatch.errors import LocalProtocolError

__all__ = ["far_targets"]


def far_targets(own_id: bytes, nearest: bytes | None, limit: int, rng: random.Random | None = None) -> list[bytes]:
    """Random ids, farthest range first: the ``d``-th shares exactly ``d`` leading bits with ``own_id``, for
    every ``d`` below the prefix ``own_id`` shares with ``nearest`` (our closest known node; None: all 160),
    at most ``limit`` of them."""
    if len(own_id) != 20 or (nearest is not None and len(nearest) != 20):
        raise LocalProtocolError("node ids are 20 bytes")
    pick = rng or random.Random()
    own = int.from_bytes(own_id, "big")
    shared = ID_BITS if nearest is None else common_prefix_length(own, int.from_bytes(nearest, "big"))
    targets = []
    for depth in range(min(shared, max(limit, 0))):
        free = ID_BITS - depth - 1
        prefix = (own >> free) ^ 1  # our first ``depth`` bits, then the other value of the next one
        targets.append(((prefix << free) | pick.getrandbits(free)).to_bytes(20, "big"))
    return targets
