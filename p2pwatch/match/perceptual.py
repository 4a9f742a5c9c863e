"""Stage 4 of the matcher: perceptual matches of images and videos read through a lazy view.

For every non-pad file of the torrent the first bytes are fetched and sniffed (never the name). A file that
an earlier stage proved an exact copy of registered content is compared only with registered content of that
kind, and not fetched at all when there is none left to compare. An image is fetched whole (it is small)
and hashed in memory.

A video is served to ffmpeg through :mod:`p2pwatch.match.lazyview`, so only the pieces ffmpeg touches are fetched:
the container index, then at each of ``samples`` seek points spread across the duration (visited coarse to
fine: the middle, the ends, then in between) the key frame at or before the point and the frames that follow
it (``frames_per_sample``, ``frame_step`` apart). Seeking to the key frame itself (ffmpeg's
``-noaccurate_seek``) is what keeps this cheap: an accurate seek decodes, so fetches, everything from the key
frame to the point, up to a whole GOP (10 s at x264's default of 250 frames). The frames after the key frame
cost little more, since ffmpeg's demuxer reads about a dozen packets ahead of the decoder anyway. A seek point
that lands on a key frame already sampled (short clips have few key frames) is decoded accurately instead,
so short clips still give frames spread over their length.

A video matches a registered one when, at one time offset (voted by :func:`p2pwatch.media.match_video`), at
least ``min_frames`` sampled frames lie within ``frame_threshold`` bits of registered frames, and they come
from at least ``min_spread`` parts of the candidate a slot apart (the larger of the offset tolerance and half
the distance between seek points), which are at least ``min_ratio`` of the parts overlapping the registered
video at that offset. Counting parts rather than frames is what keeps precision with few frames: the frames
of one part show one scene, and one similar scene in an unrelated video must not add up to a match.
Sampling stops as soon as a registered video is matched and no other registered video is near any sampled
frame, or when half the seek points (spread over the whole candidate, being visited coarse to fine) showed no
frame near any registered one (``early_stop``). The defaults were chosen with scripts/bench_match.py (its
docstring has the figures).

The seek points are budgeted (``max_fetch_fraction`` of the file, default 3 %, or ``min_fetch_bytes`` when that
is more). Once the head and the container index are fetched, the stage plans how many seek points the rest of
the budget buys: a point costs about ``POINT_SECONDS`` of the video's average bit rate plus one piece (a read
lands across a piece boundary as often as not), and the estimate becomes the measured average once points
have been read. Before each point after the floor it checks that the next one still fits, and stops when it
does not. The floor is ``min_spread`` points: fewer can never give a match. When even the floor does not fit
(a 200 MB video in 4 MiB pieces: the head and the index alone are two pieces, 4 % of it), the stage reads the
floor anyway, says so in the log and records the overrun in the proof (``budget``: the planned points, the
budget and what was fetched), rather than miss a copy; ``strict_budget`` skips such a video instead (logged).
docs/DECISIONS.md has the reasons; scripts/bench_match.py the figures per piece length.

Each match's proof holds the observed frame hashes with their times, the registered frames they met, the
Hamming distances and the thresholds, so a verifier can recompute every distance (evidence/SPEC.md §8). Its
``time_offset`` is observed time minus registered time (the sign evidence/proofs.py checks), and only frames
within ``offset_tolerance`` of it are listed and counted.

ffmpeg runs as :func:`p2pwatch.media.video_frame_hashes` runs it (same protocol and demuxer allow-lists,
same filter graph, same hash) plus ``-noaccurate_seek`` and one decoding thread; media.py does not offer
those two options yet, hence :func:`frames_at` here. Reading the lazy view it also gets bounded range
requests and a small receive buffer (:func:`lazy_input_options`), so that pieces are fetched only as far as
it reads (p2pwatch/match/lazyview.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import trio

from p2pwatch.match import media
from p2pwatch.match.lazyview import FFMPEG_INPUT_OPTIONS, LazyFile, serve_lazy_file
from p2pwatch.match.matcher import METHOD_PERCEPTUAL, Match, PieceSource, RegisteredContent, RegistryIndex
from p2pwatch.match.media import ContentKind, FrameHash
from p2pwatch.torrent.metainfo import FileEntry, Metainfo

log = logging.getLogger(__name__)


#: Seconds of a video's average bit rate one seek point reads (the key frame, the frames after it and what the
#: demuxer reads ahead; about 1.2 s measured by scripts/bench_match.py), before rounding up to pieces.
POINT_SECONDS = 1.5


@dataclass(frozen=True)
class PerceptualSettings:
    samples: int = 10  # seek points across a candidate video, at most
    frames_per_sample: int = 3  # the key frame and the frames after it
    frame_step: float = 0.2  # seconds between those frames
    min_spread: int = 3  # distinct parts of the candidate that must match
    early_stop: bool = True
    max_image_bytes: int = 32 * 1024 * 1024
    min_file_bytes: int = 128  # smaller files are skipped unsniffed (a real image or video is larger)
    frame_threshold: int = 8  # pHash bits; media's 10 is for densely sampled candidates
    min_frames: int = media.DEFAULT_MIN_FRAMES
    min_ratio: float = media.DEFAULT_MIN_RATIO
    offset_tolerance: float = media.DEFAULT_OFFSET_TOLERANCE
    image_threshold: int | None = None
    piece_timeout: float = 60.0
    decode_timeout: float = 120.0
    max_fetch_fraction: float = 0.03  # the bytes a video may cost, as a fraction of its size ...
    min_fetch_bytes: int = 4 * 1024 * 1024  # ... or this many, when that is more (small files)
    strict_budget: bool = False  # True: skip a video whose floor of min_spread seek points does not fit


@dataclass(frozen=True)
class SampleBudget:
    """How many seek points a video gets. ``over_budget``: even the floor did not fit."""

    budget: int  # bytes
    spent_before: int  # bytes fetched before the first seek point (head, index)
    point_cost: int  # the estimated bytes of one seek point
    planned: int  # seek points spread over the video (the head point not included)
    floor: int  # seek points needed, the head point included
    over_budget: bool
    head_point: bool = False  # a first point at the start, whose bytes the probe has mostly fetched already

    def to_json(self, fetched: int, taken: int) -> dict[str, object]:
        return {"budget_bytes": self.budget, "before_samples": self.spent_before, "point_estimate": self.point_cost,
                "planned_samples": self.planned + self.head_point, "head_point": self.head_point,
                "floor": self.floor, "samples": taken, "fetched_bytes": fetched,
                "over_budget": self.over_budget or fetched > self.budget}


def plan_samples(size: int, duration: float, piece_length: int, spent: int, settings: PerceptualSettings, *,
                 head_point: bool = False) -> SampleBudget:
    """The seek points the budget buys for a video of ``size`` bytes and ``duration`` seconds in pieces of
    ``piece_length``, ``spent`` bytes having been fetched already; never fewer than the floor
    (``min_spread``, one of them the point at the start with ``head_point``), never more than ``samples``."""
    budget = max(int(settings.max_fetch_fraction * size), settings.min_fetch_bytes)
    floor = max(1, min(settings.min_spread, settings.samples))
    rate = size / duration if duration > 0 else float(size)
    cost = int(rate * POINT_SECONDS) + piece_length
    affordable = max(0, budget - spent) // max(1, cost)
    paid = max(0, floor - head_point)
    planned = max(paid, min(settings.samples, affordable))
    return SampleBudget(budget, spent, cost, planned, floor, affordable < paid, head_point)


def _lazy(f: FileEntry, metainfo: Metainfo, source: PieceSource, timeout: float) -> LazyFile:
    async def piece(index: int) -> bytes:
        got = await source.read_pieces_async([index], timeout)
        item = got[index]
        return item if isinstance(item, bytes) else bytes(item.data)

    return LazyFile(f, metainfo.piece_length, piece)


async def _read(lazy: LazyFile, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in lazy.iter_range(start, end)])


def _spent_since(source: PieceSource, before: int) -> int:
    return source.downloaded() - before


class Wanted:
    """Which registered items one file of a torrent is still compared with: every image or video not yet
    matched to it, and only those of the matched kind when an earlier stage proved it an exact copy (its
    bytes are known: no sniffing needed to tell its kind). Decided per item, never by listing the registry."""

    def __init__(self, index: RegistryIndex, file_index: int, done: set[tuple[int, str]], *,
                 only: Collection[str] | None = None) -> None:
        self.index = index
        self.excluded = {content for f, content in done if f == file_index}
        self.kinds = {index.item(seq).fingerprint.kind for content in self.excluded
                      for seq in index.seqs_of(content)} if self.excluded else None
        self.only = None if only is None else set(only)  # the screen's survivors: only these content ids

    def __call__(self, seq: int, kind: ContentKind) -> bool:
        """Is item ``seq`` wanted for a candidate of ``kind``?"""
        content = self.index.item(seq).content_id
        return (self.index.comparable(seq, kind) and content not in self.excluded
                and (self.only is None or content in self.only) and (self.kinds is None or kind in self.kinds))

    def any(self, kind: ContentKind) -> bool:
        """Is any registered item wanted for a candidate of ``kind``?"""
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.only is not None:
            return any(self(seq, kind) for content in self.only for seq in self.index.seqs_of(content))
        excluded = sum(1 for content in self.excluded for seq in self.index.seqs_of(content)
                       if self.index.comparable(seq, kind))
        return self.index.comparable_count(kind) > excluded

    def sort(self, seqs: set[int], kind: ContentKind) -> list[int]:
        """The wanted ones of ``seqs`` in registration order."""
        return sorted(seq for seq in seqs if self(seq, kind))


async def perceptual_matches(index: RegistryIndex, metainfo: Metainfo, source: PieceSource,
                             done: set[tuple[int, str]], settings: PerceptualSettings | None = None, *,
                             files: Collection[int] | None = None, items: Collection[str] | None = None
                             ) -> list[Match]:
    """Perceptual matches of the torrent's files (only ``files`` when given) with the registered media (only
    the content ids ``items`` when given: the one-keyframe screen's survivors, p2pwatch/match/keyframe.py)."""
    settings = settings or PerceptualSettings()
    if not index.has_media():
        return []
    matches: list[Match] = []
    for f in metainfo.files:
        if f.pad or f.length < settings.min_file_bytes or (files is not None and f.index not in files):
            continue
        wanted = Wanted(index, f.index, done, only=items)
        if not (wanted.any(ContentKind.IMAGE) or wanted.any(ContentKind.VIDEO)):
            continue
        before = source.downloaded()
        lazy = _lazy(f, metainfo, source, settings.piece_timeout)
        head = await _read(lazy, 0, min(media.SNIFF_BYTES, f.length) - 1)
        kind = media.sniff_kind(head)
        try:
            if kind is ContentKind.IMAGE and f.length <= settings.max_image_bytes:
                found = await _match_image(lazy, f, metainfo, wanted, settings)
            elif kind is ContentKind.VIDEO:
                found = await _match_video(lazy, f, metainfo, wanted, settings,
                                           functools.partial(_spent_since, source, before))
            else:
                continue
        except media.MediaError as exc:
            log.info("perceptual: %s in %s: %s", f.display_path, metainfo.infohash.hex(), exc)
            continue
        cost = source.downloaded() - before
        matches += [Match(m.case, m.content_id, m.infohash, m.file_index, m.file_path, m.method,
                          {**m.proof, "pieces_touched": len(lazy.stats.pieces_touched)}, cost) for m in found]
    return matches


def image_candidates(index: RegistryIndex, candidate: media.MediaFingerprint, settings: PerceptualSettings,
                     pdq_threshold: int = media.DEFAULT_PDQ_THRESHOLD) -> set[int]:
    """Registered images whose pHash or PDQ lies within its threshold of the candidate's, looked up in the
    index: a superset of what :func:`p2pwatch.media.match_image` can match (it matches on either)."""
    limit = media.DEFAULT_IMAGE_PHASH_THRESHOLD if settings.image_threshold is None else settings.image_threshold
    near: set[int] = set()
    if candidate.image_phash is not None:
        near |= index.image_phashes.items_near([candidate.image_phash], limit)
    if candidate.image_pdq is not None:
        near |= index.image_pdqs.items_near([candidate.image_pdq], pdq_threshold)
    return near


async def _match_image(lazy: LazyFile, f: FileEntry, metainfo: Metainfo, wanted: Wanted,
                       settings: PerceptualSettings) -> list[Match]:
    if not wanted.any(ContentKind.IMAGE):
        return []
    data = await _read(lazy, 0, f.length - 1)
    candidate = await trio.to_thread.run_sync(media.hash_image_bytes, data)
    out = []
    for seq in wanted.sort(image_candidates(wanted.index, candidate, settings), ContentKind.IMAGE):
        item = wanted.index.item(seq)
        reg = item.fingerprint.media
        assert reg is not None
        result = media.match_image(reg, candidate, settings.image_threshold)
        if result.matched:
            out.append(Match(item.case, item.content_id, metainfo.infohash.hex(), f.index, f.display_path,
                             METHOD_PERCEPTUAL, {
                                 "kind": "image", "algorithm": result.method, "threshold": result.threshold,
                                 "min_frames": 1, "matched_frames": 1,
                                 "frames": [_image_frame(result.method, reg, candidate, result.distance)],
                             }, 0))
    return out


def _image_frame(algorithm: str, reg: media.MediaFingerprint, cand: media.MediaFingerprint, distance: int
                 ) -> dict[str, object]:
    if algorithm == "pdq":
        assert reg.image_pdq is not None and cand.image_pdq is not None
        return {"registered_hash": reg.image_pdq.hex(), "observed_hash": cand.image_pdq.hex(), "distance": distance}
    return {"registered_hash": f"{reg.image_phash:016x}", "observed_hash": f"{cand.image_phash:016x}",
            "distance": distance}


# --- sampling a video ---------------------------------------------------------------------------------

def sample_order(count: int) -> list[int]:
    """Seek-point indices coarse to fine: the middle, then always the point farthest from those taken."""
    if count <= 0:
        return []
    order = [count // 2]
    rest = [i for i in range(count) if i != count // 2]
    while rest:
        best = max(rest, key=lambda i: (min(abs(i - j) for j in order), -i))
        order.append(best)
        rest.remove(best)
    return order


@functools.cache
def lazy_input_options() -> tuple[str, ...]:
    """The ffmpeg input options for reading a lazy view (:data:`p2pwatch.lazyview.FFMPEG_INPUT_OPTIONS`) that
    this ffmpeg has; without them it still works, reading further ahead of what it decodes."""
    out: list[str] = []
    for protocol, name, value in FFMPEG_INPUT_OPTIONS:
        if name in media.protocol_options(protocol):
            out += [f"-{name}", str(value)]
        else:
            log.info("perceptual: this ffmpeg has no %s option %s; the lazy view may fetch more", protocol, name)
    return tuple(out)


def frames_at(url: str, start: float, *, accurate: bool, frames: int, step: float, window: float,
              protocols: str = "http,tcp", timeout: float = 120.0, input_options: Sequence[str] = ()
              ) -> tuple[FrameHash, ...]:
    """Hashes of up to ``frames`` frames ``step`` apart (or at scene changes) within ``window`` seconds of
    ``start``, beginning with the first frame at or after ``start`` when ``accurate``, else with the key
    frame at or before it. Times are from the start of the file."""
    start = round(max(0.0, start), 3)
    select = (f"isnan(prev_selected_t)+gte(t-prev_selected_t\\,{max(0.0, step - 0.002):.4f})"
              f"+gt(scene\\,{media.DEFAULT_SCENE_THRESHOLD})*gte(t-prev_selected_t\\,{media.MIN_SAMPLE_GAP})")
    side = media.FRAME_SIDE
    graph = f"scale=128:128:flags=area,select='{select}',showinfo,scale={side}:{side}:flags=area,format=gray"
    args: list[str] = ["-loglevel", "info", "-threads", "1"]
    if not accurate:
        args.append("-noaccurate_seek")
    if start:
        args += ["-ss", f"{start:.3f}"]
    args += ["-t", f"{window:.3f}", *media._input_args(url, protocols, input_options)]
    args += ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", graph, "-fps_mode", "passthrough",
             "-frames:v", str(max(1, frames)), "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"]
    out, stderr, returncode = media._run_ffmpeg(args, None, timeout)
    times = []
    for found in media._SHOWINFO.finditer(stderr):
        try:
            times.append(float(found.group(3)))
        except ValueError:
            times.append(float("nan"))
    size = side * side
    count = min(len(times), len(out) // size)
    if count == 0 and returncode != 0:
        raise media.MediaError(f"no frame could be decoded: {media._last_error(stderr)}")
    hashes = []
    for i in range(count):
        phash = media._frame_hash(out[i * size : (i + 1) * size])
        if phash is not None and times[i] == times[i]:
            hashes.append(FrameHash(round(start + times[i], 3), phash))
    return tuple(hashes)


# --- deciding -----------------------------------------------------------------------------------------

def spread(times: Sequence[float], slot: float) -> int:
    """How many of ``times`` can be picked at least ``slot`` apart (greedy from the earliest is optimal)."""
    count, last = 0, 0.0
    for t in sorted(times):
        if count == 0 or t - last >= slot - 1e-9:
            count, last = count + 1, t
    return count


@dataclass(frozen=True)
class VideoDecision:
    """The verdict on one registered video. ``pairs`` are the frames within the tolerance of the voted
    ``offset`` (registered time minus observed time, as :func:`p2pwatch.media.match_video` gives it);
    ``spread`` counts the parts of the candidate (``slot`` apart) they come from, ``expected`` the parts
    whose frames overlap the registered video at that offset."""

    matched: bool
    offset: float
    pairs: tuple[media.FramePair, ...]
    spread: int
    expected: int
    slot: float


def decide_video(registered: media.MediaFingerprint, frames: Sequence[FrameHash], duration: float | None,
                 settings: PerceptualSettings, samples: int | None = None) -> VideoDecision:
    """Do the sampled ``frames`` of a candidate lasting ``duration`` seconds, taken at ``samples`` seek points
    (``settings.samples`` by default), show the registered video?"""
    tolerance = settings.offset_tolerance
    slot = max(tolerance, 0.5 * (duration or 0.0) / max(1, samples or settings.samples))
    if not frames or not registered.frame_hashes:
        return VideoDecision(False, 0.0, (), 0, 0, slot)
    result = media.match_video(registered, frames, threshold=settings.frame_threshold, min_frames=1,
                               min_ratio=0.0, offset_tolerance=tolerance)
    pairs = tuple(p for p in result.pairs if abs(p.registered_t - p.candidate_t - result.offset) <= tolerance)
    times = [fr.t for fr in registered.frame_hashes]
    lo, hi = min(times) - tolerance, max(times) + tolerance
    matched = spread([p.candidate_t for p in pairs], slot)
    expected = spread([fr.t for fr in frames if lo <= fr.t + result.offset <= hi], slot)
    ok = (len(pairs) >= settings.min_frames and matched >= settings.min_spread
          and matched >= settings.min_ratio * max(1, expected))
    return VideoDecision(ok, result.offset, pairs, matched, expected, slot)


def near_any(registered: media.MediaFingerprint, frames: Sequence[FrameHash], threshold: int) -> bool:
    """Is any of ``frames`` within ``threshold`` bits of any registered frame, at whatever time?"""
    if not frames or not registered.frame_hashes:
        return False
    reg = np.array([fr.phash for fr in registered.frame_hashes], dtype=np.uint64)
    return any(bool((np.bitwise_count(reg ^ np.uint64(fr.phash)) <= threshold).any()) for fr in frames)


def _settled(near: set[int], decisions: dict[int, VideoDecision], taken: int, count: int) -> bool:
    """Can sampling stop? Yes once a registered video matched and no other one is near any sampled frame; and
    once half the points (coarse to fine: spread over the whole candidate) showed nothing near any of them.
    ``near``: the wanted registered videos with a frame near a sampled one (looked up in the index)."""
    matched = {seq for seq, decision in decisions.items() if decision.matched}
    if matched or 2 * taken >= count:
        return near <= matched
    return False


def _video_media(item: RegisteredContent) -> media.MediaFingerprint:
    assert item.fingerprint.media is not None
    return item.fingerprint.media


async def _match_video(lazy: LazyFile, f: FileEntry, metainfo: Metainfo, wanted: Wanted,
                       settings: PerceptualSettings, spent: Callable[[], int]) -> list[Match]:
    """Sample the candidate video; after each seek point its new frames are looked up among every registered
    frame hash (the index), and only the registered videos they come near are compared in full."""
    if not wanted.any(ContentKind.VIDEO):
        return []
    index = wanted.index
    window = max(1.0, settings.frames_per_sample * settings.frame_step)
    seen: dict[float, FrameHash] = {}
    near: set[int] = set()
    decisions: dict[int, VideoDecision] = {}
    samples_taken = 0
    options = await trio.to_thread.run_sync(lazy_input_options)
    async with serve_lazy_file(lazy) as url:
        info = await trio.to_thread.run_sync(
            lambda: media.probe_video(url, protocols="http,tcp", timeout=settings.decode_timeout,
                                      input_options=options))
        duration = info.duration or 0.0
        plan = plan_samples(f.length, duration, metainfo.piece_length, spent(), settings)
        if plan.planned < settings.samples and duration > 0:  # the budget binds: take the start, fetched already
            plan = plan_samples(f.length, duration, metainfo.piece_length, spent(), settings, head_point=True)
        if plan.over_budget:
            log.info("perceptual: %s in %s: even %d seek points (about %d bytes each) exceed the budget of %d "
                     "bytes (%d spent on the head and index, %d-byte pieces): %s", f.display_path,
                     metainfo.infohash.hex(), plan.floor, plan.point_cost, plan.budget, plan.spent_before,
                     metainfo.piece_length, "skipped (strict budget)" if settings.strict_budget
                     else "reading them anyway; the proof records the overrun")
            if settings.strict_budget:
                return []
        count = plan.planned + plan.head_point if duration > 0 else 1
        key_frames: set[float] = set()
        point_costs: list[int] = []
        # the head point stands in for the first of ``count`` evenly spread points
        times = [0.0] * plan.head_point + [duration * (i + 0.5) / count for i in sample_order(count)
                                           if not (plan.head_point and i == 0)]
        for point, t in enumerate(times):
            estimate = -(-sum(point_costs) // len(point_costs)) if point_costs else plan.point_cost
            if samples_taken >= plan.floor and spent() + estimate > plan.budget:
                log.info("perceptual: %s: budget of %d bytes reached after %d seek points", f.display_path,
                         plan.budget, samples_taken)
                break
            sample = functools.partial(frames_at, url, t, frames=settings.frames_per_sample,
                                       step=settings.frame_step, window=window, timeout=settings.decode_timeout,
                                       input_options=options)
            before = spent()
            try:
                got = await trio.to_thread.run_sync(functools.partial(sample, accurate=False))
                if got and got[0].t in key_frames:  # an earlier point's key frame: decode at this point instead
                    got = await trio.to_thread.run_sync(functools.partial(sample, accurate=True))
                elif got:
                    key_frames.add(got[0].t)
            except media.MediaError as exc:
                log.info("perceptual: no frame near %.1f s: %s", t, exc)
                continue
            finally:
                if point or not plan.head_point:  # the head point's cost says nothing of the others'
                    point_costs.append(spent() - before)
            samples_taken += 1
            new = [frame for frame in got if frame.t not in seen]
            for frame in new:
                seen[frame.t] = frame
            if new:
                near.update(wanted.sort(index.frames.items_near([fr.phash for fr in new], settings.frame_threshold),
                                        ContentKind.VIDEO))
            if samples_taken < settings.min_spread:
                continue
            frames = sorted(seen.values(), key=lambda fr: fr.t)
            decisions = {seq: decide_video(_video_media(index.item(seq)), frames, info.duration, settings, count)
                         for seq in sorted(near)}
            if settings.early_stop and _settled(near, decisions, samples_taken, count):
                break
    frames = sorted(seen.values(), key=lambda fr: fr.t)
    out = []
    for seq in sorted(decisions):
        decision = decisions[seq]
        if not decision.matched:
            continue
        item = index.item(seq)
        reg = _video_media(item)
        out.append(Match(item.case, item.content_id, metainfo.infohash.hex(), f.index, f.display_path,
                         METHOD_PERCEPTUAL, {
                             "kind": "video", "algorithm": "phash", "threshold": settings.frame_threshold,
                             "min_frames": settings.min_frames, "matched_frames": len(decision.pairs),
                             "time_offset": round(-decision.offset, 3),
                             "offset_tolerance": settings.offset_tolerance,
                             "spread": decision.spread, "expected_spread": decision.expected,
                             "min_spread": settings.min_spread, "slot": round(decision.slot, 3),
                             "min_ratio": settings.min_ratio, "samples": samples_taken,
                             "candidate_frames": len(frames), "duration": info.duration,
                             "budget": plan.to_json(spent(), samples_taken),
                             "frames": [_video_frame(p, reg.frame_hashes, seen) for p in decision.pairs],
                         }, 0))
    return out


def _video_frame(pair: media.FramePair, registered: tuple[FrameHash, ...], observed: dict[float, FrameHash]
                 ) -> dict[str, object]:
    reg = min(registered, key=lambda fr: abs(fr.t - pair.registered_t))
    obs = observed[pair.candidate_t]
    return {"registered_hash": f"{reg.phash:016x}", "observed_hash": f"{obs.phash:016x}", "distance": pair.distance,
            "registered_time": reg.t, "observed_time": obs.t}
