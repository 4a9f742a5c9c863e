"""Routing tables of the simulated remote nodes, built lazily and kept in a bounded LRU cache (BEP 5).

What node ``i``'s table holds is what it would have learnt in a long-running network: for each prefix depth
``b`` of its own id, up to ``k`` random nodes among those sharing exactly ``b`` leading bits with it, down to
the depth where nobody else shares its prefix (so it knows its whole neighbourhood). The picks ignore
liveness: dead contacts sit in tables in the proportion they have in the population (half by default,
mldht's measurement), and churn does not clean them out.

A table is an ``int32`` array of node numbers, rebuilt identically from a per-node seed whenever the LRU has
dropped it, so memory stays bounded at any population size. Answers use only the ids' top 64 bits, which are
unique in the population (so their XOR order is the full ids' XOR order).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from p2pwatch.sim.population import U64, Population


class RemoteTables:
    """``closest(i, target)``: the ``k`` entries of node ``i``'s table closest to ``target``."""

    def __init__(self, pop: Population, *, cache: int = 20_000) -> None:
        self.pop = pop
        self.cache = cache
        self._tables: OrderedDict[int, np.ndarray] = OrderedDict()
        self.built = 0

    def table(self, i: int) -> np.ndarray:
        t = self._tables.get(i)
        if t is not None:
            self._tables.move_to_end(i)
            return t
        t = self._build(i)
        self.built += 1
        self._tables[i] = t
        if len(self._tables) > self.cache:
            self._tables.popitem(last=False)
        return t

    def _build(self, i: int) -> np.ndarray:
        pop = self.pop
        rng = np.random.default_rng((pop.settings.seed, 7, i))
        own = int(pop.hi[i])
        k = pop.k
        depths = np.arange(64, dtype=np.uint64)
        shifts = U64(63) - depths  # sibling of depth b: top b+1 bits of own with the last one flipped
        sib = ((U64(own) >> shifts) ^ U64(1)) << shifts
        width = U64(1) << shifts
        starts = np.searchsorted(pop.hi, sib)
        ends_raw = sib + width  # wraps to 0 when the sibling range runs to the top of the keyspace
        ends = np.where(ends_raw == 0, len(pop.hi), np.searchsorted(pop.hi, ends_raw))
        own_starts = np.searchsorted(pop.hi, (U64(own) >> shifts) << shifts)
        own_ends_raw = ((U64(own) >> shifts) << shifts) + width
        own_ends = np.where(own_ends_raw == 0, len(pop.hi), np.searchsorted(pop.hi, own_ends_raw))
        parts = []
        for b in range(64):
            lo, hi = int(starts[b]), int(ends[b])
            count = hi - lo
            if count > k:
                parts.append(lo + rng.choice(count, size=k, replace=False))
            elif count > 0:
                parts.append(np.arange(lo, hi))
            if own_ends[b] - own_starts[b] <= 1:  # nobody else shares b + 1 bits with us: complete
                break
        return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, dtype=np.int32)

    def closest(self, i: int, target_hi: int, count: int | None = None) -> np.ndarray:
        count = count or self.pop.k
        t = self.table(i)
        if len(t) <= count:
            return t[np.argsort(self.pop.hi[t] ^ U64(target_hi))]
        dist = self.pop.hi[t] ^ U64(target_hi)
        part = np.argpartition(dist, count - 1)[:count]
        return t[part[np.argsort(dist[part])]]
