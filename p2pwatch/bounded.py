"""Bounded memo dictionaries for hot paths (DESIGN.md: named limits, memory stays bounded).

A cache of pure answers (a policy's verdict for an address, a packed address, a token under the current
secret) that simply starts over when it reaches its limit: no eviction order to maintain on the hot path,
and a hostile peer sending from many addresses costs at most ``limit`` entries.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key`` (clearing ``cache`` first when it holds ``limit`` entries); return it."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
