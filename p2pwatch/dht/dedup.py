"""A compact "have we seen this infohash?" set for the crawler, small at tens of millions of entries.

Each infohash is reduced to its first 8 bytes (a 64-bit key; with 10⁷ entries the chance that any two
distinct infohashes share a key is about 3·10⁻⁶). Recent keys live in a Python set; when it reaches
``flush_at`` entries they are merged into 256 shards (by the key's top byte) of sorted ``uint64`` NumPy
arrays, so steady-state memory is about 8 bytes per infohash and a merge copies only one small shard at
a time. Lookups are a set probe plus a binary search in one shard.
"""

from __future__ import annotations

import numpy as np

SHARDS = 256


class InfohashDedup:
    """``add(infohash)`` returns True the first time an infohash is seen."""

    def __init__(self, flush_at: int = 65_536) -> None:
        self._recent: set[int] = set()
        self._shards: list[np.ndarray] = [np.empty(0, dtype=np.uint64) for _ in range(SHARDS)]
        self._flush_at = flush_at
        self._count = 0

    @staticmethod
    def _key(infohash: bytes) -> int:
        return int.from_bytes(infohash[:8], "big")

    def __contains__(self, infohash: bytes) -> bool:
        key = self._key(infohash)
        return key in self._recent or self._in_shards(key)

    def _in_shards(self, key: int) -> bool:
        shard = self._shards[key >> 56]
        if not len(shard):
            return False
        i = int(np.searchsorted(shard, np.uint64(key)))
        return i < len(shard) and int(shard[i]) == key

    def add(self, infohash: bytes) -> bool:
        key = self._key(infohash)
        if key in self._recent or self._in_shards(key):
            return False
        self._recent.add(key)
        self._count += 1
        if len(self._recent) >= self._flush_at:
            self.flush()
        return True

    def flush(self) -> None:
        """Merge the recent keys into the sorted shards."""
        if not self._recent:
            return
        keys = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        self._recent = set()
        keys.sort()
        tops = (keys >> np.uint64(56)).astype(np.intp)
        bounds = np.searchsorted(tops, np.arange(SHARDS + 1))
        for top in range(SHARDS):
            lo, hi = bounds[top], bounds[top + 1]
            if lo == hi:
                continue
            merged = np.concatenate((self._shards[top], keys[lo:hi]))
            merged.sort(kind="stable")
            self._shards[top] = merged

    def __len__(self) -> int:
        return self._count

    def memory_bytes(self) -> int:
        """Bytes held by the shards plus an estimate for the recent set."""
        shard_bytes = sum(int(s.nbytes) for s in self._shards)
        return shard_bytes + len(self._recent) * 60 + 8 * len(self._recent)
