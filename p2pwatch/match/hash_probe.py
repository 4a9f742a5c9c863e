"""The inner loop of :mod:`p2pwatch.match.hash_index` for 64-bit hashes, compiled with numba.

For each query and each bucket of its probe plan (a part's key with some bits flipped), read the bucket's
entries, keep those within the radius, and drop an entry that an earlier part's probe already found (it is
found there exactly when its distance in that part's table bits is within that part's probe radius), so
every registered hash is reported once without sorting. numpy does the same with whole-array operations
(``_Segment.query``); this loop does it without intermediate arrays, which is what makes a lookup in ten
million hashes cost microseconds rather than a hundred of them. When numba is not installed the index uses
the numpy path (same answers; the tests run both).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

#: numba is a dependency; the numpy path remains for a platform without it.
AVAILABLE = importlib.util.find_spec("numba") is not None

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


def _popcount64_py(x: Any) -> Any:
    """Bits set in a uint64 (SWAR; numba has no popcount intrinsic for numpy integers)."""
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


def _probe(queries: Any, shifts: Any, masks: Any, radii: Any, part_of: Any, flips: Any, offsets: Any,
           positions: Any, sorted_codes: Any, radius: int, start: int) -> tuple[Any, Any, Any]:
    capacity = 256
    out_q = np.empty(capacity, np.int64)
    out_r = np.empty(capacity, np.int64)
    out_d = np.empty(capacity, np.int64)
    count = 0
    limit = np.uint64(radius)
    probes = flips.shape[0]
    los = np.empty(probes, np.int64)
    his = np.empty(probes, np.int64)
    for qi in range(queries.shape[0]):
        q = queries[qi]
        # first every bucket's bounds: independent loads the processor overlaps (most miss the cache)
        for k in range(probes):
            j = part_of[k]
            bucket = ((q >> shifts[j]) & masks[j]) ^ flips[k]
            los[k] = offsets[bucket]
            his[k] = offsets[bucket + np.uint64(1)]
        for k in range(probes):
            j = part_of[k]
            for e in range(los[k], his[k]):
                diff = q ^ sorted_codes[e]
                d = _popcount64(diff)
                if d > limit:
                    continue
                seen = False
                for jj in range(j):
                    if radii[jj] >= 0 and _popcount64((diff >> shifts[jj]) & masks[jj]) <= np.uint64(radii[jj]):
                        seen = True
                        break
                if seen:
                    continue
                if count == capacity:
                    capacity *= 2
                    out_q = _grow(out_q, capacity)
                    out_r = _grow(out_r, capacity)
                    out_d = _grow(out_d, capacity)
                out_q[count] = qi
                out_r[count] = positions[e] + start
                out_d[count] = d
                count += 1
    return out_q[:count], out_r[:count], out_d[:count]


def _grow_py(array: Any, capacity: int) -> Any:
    bigger = np.empty(capacity, array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


# what _probe calls by name: the compiled versions once _kernel has run (numba resolves them when it compiles)
_popcount64: Any = _popcount64_py
_grow: Any = _grow_py
_compiled_probe: Any = None


def _kernel() -> Any:
    """The compiled _probe, built on the first lookup: importing numba costs ~0.2 s, which every command that
    imports the matcher (lookup, register, web) would otherwise pay at start-up."""
    global _popcount64, _grow, _compiled_probe
    if _compiled_probe is None:
        from numba import njit

        _popcount64 = njit(cache=True, nogil=True, inline="always")(_popcount64_py)
        _grow = njit(cache=True, nogil=True)(_grow_py)
        _compiled_probe = njit(cache=True, nogil=True)(_probe)
    return _compiled_probe


def probe(queries: np.ndarray, shifts: np.ndarray, masks: np.ndarray, radii: np.ndarray, part_of: np.ndarray,
          flips: np.ndarray, offsets: np.ndarray, positions: np.ndarray, sorted_codes: np.ndarray, radius: int,
          start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query number, row, distance) of every entry within ``radius`` of 1-D uint64 ``queries``, each once."""
    result: tuple[np.ndarray, np.ndarray, np.ndarray] = _kernel()(queries, shifts, masks, radii, part_of, flips,
                                                                  offsets, positions, sorted_codes, radius, start)
    return result
