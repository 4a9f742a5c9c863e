"""Stage 4 of the matcher: perceptual matches of images and videos read through a lazy view.

For every non-pad file of the torrent the first bytes are fetched and sniffed (never the name). An image
is fetched whole (it is small) and hashed in memory. A video is served to ffmpeg through
:mod:`p2pwatch.lazyview`: ffmpeg reads the container index, then decodes one key frame near each of
``samples`` timestamps spread across the duration, so only the pieces it touches are fetched. The frame
hashes are matched against every registered video with :func:`p2pwatch.media.match_video`, which needs
enough frames near registered frames at one consistent time offset.

Each match's proof holds the candidate frame hashes with their times, the registered frame times they
met, the Hamming distances and the thresholds, so a verifier can recompute every distance.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import trio

from p2pwatch import media
from p2pwatch.lazyview import LazyFile, serve_lazy_file
from p2pwatch.matcher import METHOD_PERCEPTUAL, Match, PieceSource, RegisteredContent, RegistryIndex
from p2pwatch.media import ContentKind, FrameHash
from p2pwatch.metainfo import FileEntry, Metainfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerceptualSettings:
    samples: int = 10
    max_image_bytes: int = 32 * 1024 * 1024
    min_file_bytes: int = 1024
    frame_threshold: int = media.DEFAULT_FRAME_THRESHOLD
    min_frames: int = media.DEFAULT_MIN_FRAMES
    min_ratio: float = media.DEFAULT_MIN_RATIO
    image_threshold: int | None = None
    piece_timeout: float = 60.0
    decode_timeout: float = 120.0


def _lazy(f: FileEntry, metainfo: Metainfo, source: PieceSource, timeout: float) -> LazyFile:
    async def piece(index: int) -> bytes:
        got = await source.read_pieces_async([index], timeout)
        item = got[index]
        return item if isinstance(item, bytes) else bytes(item.data)

    return LazyFile(f, metainfo.piece_length, piece)


async def _read(lazy: LazyFile, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in lazy.iter_range(start, end)])


async def perceptual_matches(index: RegistryIndex, metainfo: Metainfo, source: PieceSource,
                             done: set[tuple[int, str]], settings: PerceptualSettings | None = None) -> list[Match]:
    settings = settings or PerceptualSettings()
    registered = index.media_items()
    if not registered:
        return []
    matches: list[Match] = []
    for f in metainfo.files:
        if f.pad or f.length < settings.min_file_bytes:
            continue
        wanted = [r for r in registered if (f.index, r.content_id) not in done]
        if not wanted:
            continue
        before = source.downloaded()
        lazy = _lazy(f, metainfo, source, settings.piece_timeout)
        head = await _read(lazy, 0, min(media.SNIFF_BYTES, f.length) - 1)
        kind = media.sniff_kind(head)
        try:
            if kind is ContentKind.IMAGE and f.length <= settings.max_image_bytes:
                found = await _match_image(lazy, f, metainfo, wanted, settings)
            elif kind is ContentKind.VIDEO:
                found = await _match_video(lazy, f, metainfo, wanted, settings)
            else:
                continue
        except media.MediaError as exc:
            log.info("perceptual: %s in %s: %s", f.display_path, metainfo.infohash.hex(), exc)
            continue
        cost = source.downloaded() - before
        matches += [Match(m.case, m.content_id, m.infohash, m.file_index, m.file_path, m.method,
                          {**m.proof, "pieces_touched": len(lazy.stats.pieces_touched)}, cost) for m in found]
    return matches


async def _match_image(lazy: LazyFile, f: FileEntry, metainfo: Metainfo, wanted: list[RegisteredContent],
                       settings: PerceptualSettings) -> list[Match]:
    data = await _read(lazy, 0, f.length - 1)
    candidate = await trio.to_thread.run_sync(media.hash_image_bytes, data)
    out = []
    for item in wanted:
        reg = item.fingerprint.media
        if reg is None or reg.kind is not ContentKind.IMAGE:
            continue
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


def _video_frame(pair: media.FramePair, registered: tuple[FrameHash, ...], observed: list[FrameHash]
                 ) -> dict[str, object]:
    reg = min(registered, key=lambda fr: abs(fr.t - pair.registered_t))
    obs = min(observed, key=lambda fr: abs(fr.t - pair.candidate_t))
    return {"registered_hash": f"{reg.phash:016x}", "observed_hash": f"{obs.phash:016x}", "distance": pair.distance,
            "registered_time": reg.t, "observed_time": obs.t}


async def _match_video(lazy: LazyFile, f: FileEntry, metainfo: Metainfo, wanted: list[RegisteredContent],
                       settings: PerceptualSettings) -> list[Match]:
    registered = [w for w in wanted if w.fingerprint.media is not None
                  and w.fingerprint.media.kind is ContentKind.VIDEO and w.fingerprint.media.frame_hashes]
    if not registered:
        return []
    async with serve_lazy_file(lazy) as url:
        info = await trio.to_thread.run_sync(
            lambda: media.probe_video(url, protocols="http,tcp", timeout=settings.decode_timeout))
        duration = info.duration or 0.0
        times = [duration * (i + 0.5) / settings.samples for i in range(settings.samples)] if duration else [0.0]
        frames: list[FrameHash] = []
        window = max(1.0, duration / settings.samples)
        for t in times:
            try:
                got = await trio.to_thread.run_sync(functools.partial(
                    media.video_frame_hashes, url, start=t, duration=window, keyframes_only=True,
                    max_frames=1, protocols="http,tcp", timeout=settings.decode_timeout))
            except media.MediaError as exc:
                log.info("perceptual: no frame near %.1f s: %s", t, exc)
                continue
            frames.extend(got)
    frames = sorted(set(frames), key=lambda fr: fr.t)
    out = []
    for item in registered:
        reg = item.fingerprint.media
        assert reg is not None
        result = media.match_video(reg, frames, threshold=settings.frame_threshold, min_frames=settings.min_frames,
                                   min_ratio=settings.min_ratio)
        if result.matched:
            out.append(Match(item.case, item.content_id, metainfo.infohash.hex(), f.index, f.display_path,
                             METHOD_PERCEPTUAL, {
                                 "kind": "video", "algorithm": "phash", "threshold": settings.frame_threshold,
                                 "min_frames": settings.min_frames, "matched_frames": result.matched_frames,
                                 "time_offset": result.offset, "offset_tolerance": media.DEFAULT_OFFSET_TOLERANCE,
                                 "candidate_frames": result.candidate_frames, "min_ratio": settings.min_ratio,
                                 "frames": [_video_frame(p, reg.frame_hashes, frames) for p in result.pairs],
                                 "duration": duration,
                             }, 0))
    return out
