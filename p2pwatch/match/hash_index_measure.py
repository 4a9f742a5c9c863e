"""Measure the registered-hash index (:mod:`p2pwatch.match.hash_index`) at a given size: what
scripts/bench_index.py and scripts/bench_triage.py report as ``index_hashes``, ``index_lookups_per_s`` and
``index_exact``.

The registered hashes are synthetic, shaped like frame hashes: items of ``frames_per_item`` hashes in scenes
of ten, each frame its scene's hash with a few bits flipped (frames of one scene are alike, as sampled video
frames are), every scene hash uniformly random. Half the queries are registered frames with up to ``radius``
bits flipped (a re-encoded copy: hits), half are random hashes (an unrelated video: almost always none).
Lookups are single queries through the public :meth:`HashIndex.radius` on one thread, counted per second
of the process's CPU time (``index_lookups_per_s``: one core, whatever else the machine runs) and per second
of wall-clock time (``index_lookups_per_s_wall``: what a loaded machine gave it); ``index_exact`` is true
when every query of a sample returns exactly the (item, frame) pairs a numpy brute-force scan over all
registered hashes returns.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from p2pwatch.match.hash_index import HashIndex

#: The perceptual stage's frame threshold (PerceptualSettings.frame_threshold), the radius measured.
MATCHER_RADIUS = 8
_SCENE_FRAMES = 10


def synthetic_frame_hashes(n_hashes: int, rng: np.random.Generator, *, max_flips: int = 6) -> np.ndarray:
    """``n_hashes`` frame-like 64-bit hashes: scenes of ten, each frame its scene's hash with up to
    ``max_flips`` bits flipped."""
    scenes = rng.integers(0, 2**64 - 1, -(-n_hashes // _SCENE_FRAMES), dtype=np.uint64, endpoint=True)
    codes = np.repeat(scenes, _SCENE_FRAMES)[:n_hashes]
    return flip_bits(codes, rng.integers(0, max_flips + 1, n_hashes), rng)


def flip_bits(codes: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``codes`` with ``counts[i]`` random bits of code ``i`` flipped (positions may repeat, so at most)."""
    out = codes.copy()
    for k in range(int(counts.max(initial=0))):
        bit = np.uint64(1) << rng.integers(0, 64, len(codes)).astype(np.uint64)
        out ^= np.where(counts > k, bit, np.uint64(0))
    return out


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def measure_index(n_hashes: int, *, radius: int = MATCHER_RADIUS, lookups: int = 20_000, exact_sample: int = 300,
                  frames_per_item: int = 100, seed: int = 13) -> dict[str, Any]:
    """Build an index of ``n_hashes`` synthetic frame hashes and measure it; returns the figures as a dict
    (``index_hashes``, ``index_lookups_per_s``, ``index_exact``, build times, memory, ...)."""
    rng = np.random.default_rng(seed)
    warm: HashIndex[int] = HashIndex(64, buffer_rows=1)  # loads (or compiles) the probe loop before any timing
    warm.add(0, [1, 2, 3])
    warm.radius(0, radius)
    codes = synthetic_frame_hashes(n_hashes, rng)
    rss_before = _rss_bytes()
    index: HashIndex[int] = HashIndex(64)
    start = time.perf_counter()
    for item, lo in enumerate(range(0, n_hashes, frames_per_item)):
        index.add(item, codes[lo : lo + frames_per_item])
    appended = time.perf_counter() - start
    index.radius(0, radius)  # seals the appended rows into sorted segments
    build = time.perf_counter() - start

    near = flip_bits(codes[rng.integers(0, n_hashes, lookups // 2)], rng.integers(0, radius + 1, lookups // 2), rng)
    unrelated = rng.integers(0, 2**64 - 1, lookups - len(near), dtype=np.uint64, endpoint=True)
    queries = np.concatenate([near, unrelated])
    rng.shuffle(queries)
    as_ints = [int(q) for q in queries]
    hits = 0
    start, cpu = time.perf_counter(), time.process_time()
    for q in as_ints:
        hits += len(index.radius(q, radius))
    single, single_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    index.radius_many(queries, radius)
    batch = time.perf_counter() - start

    exact = True
    sample = as_ints[:exact_sample]
    start = time.perf_counter()
    for q in sample:
        rows = np.flatnonzero(np.bitwise_count(codes ^ np.uint64(q)) <= radius)
        expected = {(int(r) // frames_per_item, int(r) % frames_per_item) for r in rows}
        got = [(h.item_id, h.frame_no) for h in index.radius(q, radius)]
        if set(got) != expected or len(got) != len(expected):
            exact = False
    brute = (time.perf_counter() - start) / max(1, len(sample))

    extra = 1000
    more = synthetic_frame_hashes(extra * frames_per_item, rng)
    start = time.perf_counter()
    for item in range(extra):
        index.add(n_hashes + item, more[item * frames_per_item : (item + 1) * frames_per_item])
        if item % 100 == 99:
            index.radius(0, radius)  # a query now and then, so sealing and merging are counted
    incremental = (time.perf_counter() - start) / extra
    start = time.perf_counter()
    for item in range(extra):
        index.remove(n_hashes + item)
    index.radius(0, radius)
    removal = (time.perf_counter() - start) / extra
    return {
        "index_hashes": n_hashes, "index_radius": radius, "index_lookups": len(as_ints),
        "index_lookups_per_s": round(len(as_ints) / single_cpu),
        "index_lookups_per_s_wall": round(len(as_ints) / single),
        "index_batch_lookups_per_s": round(len(queries) / batch),
        "index_hits_per_lookup": round(hits / len(as_ints), 2), "index_exact": exact,
        "index_exact_sample": len(sample), "brute_force_ms_per_lookup": round(brute * 1000, 2),
        "index_build_s": round(build, 2), "index_append_s": round(appended, 2),
        "index_add_item_ms": round(incremental * 1000, 3), "index_remove_item_ms": round(removal * 1000, 3),
        "index_segments": index.segment_count, "index_bytes": index.nbytes(),
        "index_bytes_per_hash": round(index.nbytes() / n_hashes, 1),
        "index_rss_growth_bytes": max(0, _rss_bytes() - rss_before),
    }
