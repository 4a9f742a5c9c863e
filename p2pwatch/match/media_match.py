"""Comparison primitives for perceptual matches (re-exported by :mod:`p2pwatch.match.media`).

:func:`match_image` compares image hashes against a Hamming threshold; :func:`match_video` pairs candidate
frames with registered frames within the threshold and votes over their time offsets (registered t -
candidate t), so trimmed, re-encoded, resized and remuxed copies match at one consistent offset while chance
collisions, scattered over offsets, do not add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from p2pwatch.errors import MediaError
from p2pwatch.match.media_types import FrameHash, MediaFingerprint

__all__ = [
    "DEFAULT_FRAME_THRESHOLD",
    "DEFAULT_IMAGE_PHASH_THRESHOLD",
    "DEFAULT_MIN_FRAMES",
    "DEFAULT_MIN_RATIO",
    "DEFAULT_OFFSET_TOLERANCE",
    "DEFAULT_PDQ_THRESHOLD",
    "FramePair",
    "ImageMatch",
    "VideoMatch",
    "hamming",
    "match_image",
    "match_video",
]


#: Defaults measured by scripts/bench_fingerprint.py (see docs/fingerprint-format.md).
DEFAULT_FRAME_THRESHOLD = 10
DEFAULT_MIN_FRAMES = 3
DEFAULT_MIN_RATIO = 0.5
DEFAULT_OFFSET_TOLERANCE = 1.0
DEFAULT_IMAGE_PHASH_THRESHOLD = 6
DEFAULT_PDQ_THRESHOLD = 31
#: Registered frames kept per candidate frame when voting (bounds the work on static videos).
_MAX_PAIRS_PER_FRAME = 64


def hamming(a: int | bytes, b: int | bytes) -> int:
    """Bits that differ between two hashes (ints, or byte strings of equal length)."""
    if isinstance(a, bytes | bytearray) and isinstance(b, bytes | bytearray):
        if len(a) != len(b):
            raise ValueError("hashes of different lengths")
        return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()
    if isinstance(a, int) and isinstance(b, int):
        return (a ^ b).bit_count()
    raise TypeError("hamming() compares two ints or two byte strings")


@dataclass(frozen=True)
class ImageMatch:
    """``method`` is the hash that decided (``pdq`` or ``phash``), ``distance`` its distance."""

    matched: bool
    distance: int
    method: str
    threshold: int
    phash_distance: int | None = None
    pdq_distance: int | None = None


def match_image(registered: MediaFingerprint, candidate: MediaFingerprint, threshold: int | None = None, *,
                pdq_threshold: int = DEFAULT_PDQ_THRESHOLD) -> ImageMatch:
    """Images match when their pHashes are within ``threshold`` (default 6 of 64 bits) *or*, when both
    sides have PDQ, their PDQ hashes are within ``pdq_threshold`` (31 of 256): on the benchmark corpus each
    alone had no false match, and together they miss less than either."""
    limit = DEFAULT_IMAGE_PHASH_THRESHOLD if threshold is None else threshold
    phash = pdq = None
    if registered.image_phash is not None and candidate.image_phash is not None:
        phash = hamming(registered.image_phash, candidate.image_phash)
    if registered.image_pdq is not None and candidate.image_pdq is not None:
        pdq = hamming(registered.image_pdq, candidate.image_pdq)
    if pdq is not None and (phash is None or pdq <= pdq_threshold):
        return ImageMatch(pdq <= pdq_threshold, pdq, "pdq", pdq_threshold, phash, pdq)
    if phash is None:
        raise MediaError("both fingerprints need an image hash to compare images")
    return ImageMatch(phash <= limit, phash, "phash", limit, phash, pdq)


@dataclass(frozen=True)
class FramePair:
    """A candidate frame and the registered frame it matched at the voted offset."""

    candidate_t: float
    registered_t: float
    distance: int


@dataclass(frozen=True)
class VideoMatch:
    """Outcome of :func:`match_video`; ``offset`` is registered time minus candidate time."""

    matched: bool
    offset: float
    matched_frames: int
    expected_frames: int
    candidate_frames: int
    pairs: tuple[FramePair, ...]

    @property
    def distances(self) -> tuple[int, ...]:
        return tuple(p.distance for p in self.pairs)


def _hash_array(values: Sequence[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def match_video(
    registered: MediaFingerprint,
    candidate_frames: Sequence[FrameHash],
    *,
    threshold: int = DEFAULT_FRAME_THRESHOLD,
    min_frames: int = DEFAULT_MIN_FRAMES,
    offset_tolerance: float = DEFAULT_OFFSET_TOLERANCE,
    min_ratio: float = DEFAULT_MIN_RATIO,
) -> VideoMatch:
    """Do ``candidate_frames`` show the registered video (or a part of it)?

    Every candidate frame within ``threshold`` bits of a registered frame votes for the offset between the
    two; offsets fall into windows ``2 * offset_tolerance`` wide and the window with the most distinct
    candidate frames wins. It is a match when at least ``min_frames`` frames agree there and they are at
    least ``min_ratio`` of the candidate frames whose shifted time falls inside the registered video.
    """
    reg = [f for f in registered.frame_hashes]
    none = VideoMatch(False, 0.0, 0, 0, len(candidate_frames), ())
    if not reg or not candidate_frames or offset_tolerance <= 0:
        return none
    rt = np.array([f.t for f in reg], dtype=np.float64)
    rh = _hash_array([f.phash for f in reg])
    ct = np.array([f.t for f in candidate_frames], dtype=np.float64)
    ch = _hash_array([f.phash for f in candidate_frames])
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    dists: list[np.ndarray] = []
    keep = min(_MAX_PAIRS_PER_FRAME, len(reg))
    for lo in range(0, len(ch), 256):
        block = np.bitwise_count(ch[lo : lo + 256, None] ^ rh[None, :]).astype(np.int16)
        nearest = np.argpartition(block, keep - 1, axis=1)[:, :keep] if keep < len(reg) else \
            np.broadcast_to(np.arange(len(reg)), block.shape)
        near_d = np.take_along_axis(block, nearest, axis=1)
        r, k = np.nonzero(near_d <= threshold)
        rows.append(r + lo)
        cols.append(nearest[r, k])
        dists.append(near_d[r, k])
    ci, ri, di = np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)
    if ci.size == 0:
        return none
    offsets = rt[ri] - ct[ci]
    bins = np.floor(offsets / offset_tolerance).astype(np.int64)
    # each pair votes for the two windows its offset bin belongs to; a frame counts once per window, with
    # the weight of its closest pair there, so near-identical frames outvote merely similar ones
    w_all, c_all, d_all = np.concatenate([bins - 1, bins]), np.concatenate([ci, ci]), np.concatenate([di, di])
    order = np.lexsort((d_all, c_all, w_all))
    w_s, c_s, d_s = w_all[order], c_all[order], d_all[order]
    head = np.concatenate([[True], (w_s[1:] != w_s[:-1]) | (c_s[1:] != c_s[:-1])])
    windows, inverse = np.unique(w_s[head], return_inverse=True)
    scores = np.bincount(inverse, weights=(threshold + 1 - d_s[head]).astype(np.float64))
    best = windows[int(np.argmax(scores))]
    inside = (bins == best) | (bins == best + 1)
    order = np.lexsort((di[inside], ci[inside]))
    sel_c, sel_r, sel_d = ci[inside][order], ri[inside][order], di[inside][order]
    first = np.concatenate([[True], sel_c[1:] != sel_c[:-1]])
    sel_c, sel_r, sel_d = sel_c[first], sel_r[first], sel_d[first]
    offset = float(np.median(rt[sel_r] - ct[sel_c]))
    shifted = ct + offset
    expected = int(np.count_nonzero((shifted >= rt.min() - offset_tolerance)
                                    & (shifted <= rt.max() + offset_tolerance)))
    matched_frames = int(sel_c.size)
    pairs = tuple(FramePair(float(ct[c]), float(rt[r]), int(d)) for c, r, d in zip(sel_c, sel_r, sel_d,
                                                                                    strict=True))
    ok = matched_frames >= min_frames and matched_frames >= min_ratio * max(expected, 1)
    return VideoMatch(ok, round(offset, 3), matched_frames, expected, len(candidate_frames), pairs)
