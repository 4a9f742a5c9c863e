"""The one-keyframe screen (issue 13): rule a video or image out with one or two pieces, before any sampling.

For a queued video the lazy view (:mod:`p2pwatch.match.lazyview`) serves ffmpeg the file; ffmpeg reads the
head and the container index and decodes *one* key frame (the first one, decoded with the few packets after it
that B-frame reordering needs; when that frame is flat, black say, the key frame before the middle, then before
a quarter and three quarters of the duration, up to ``attempts`` in all), hashed exactly as registration
hashes frames (:func:`p2pwatch.match.media._decode`: 128x128 area scale, 32x32 gray, the DCT pHash).
The hash is looked up among *all* registered frame hashes (:class:`~p2pwatch.match.frame_lookup.FrameLookup`);
with none within ``threshold`` bits the file is rejected there. Registration samples every frame of a short
video and at least every ``duration / 4000`` s of a long one (:func:`p2pwatch.match.media.hash_video_source`),
so the key frame of a re-encoded, resized or trimmed copy (a trimmed copy's first key frame is any frame of
the original) lands near a registered frame. A key frame near registered frames is corroborated by a second
one from elsewhere in the video (``corroborate``; one or two pieces more, paid only by the few that get this
far): unless it too is near one of the same registered videos, the file is rejected. A survivor goes on to
the sampled confirmation of :mod:`p2pwatch.match.perceptual`, compared only with the items both came near.

An image is read up to ``preview_pieces`` pieces: when that is the whole file it is hashed (pHash, as
registration does) and looked up among the registered image hashes; a larger image survives (the
confirmation reads it whole: a truncated decode would not hash like the original).

The threshold (10 bits) is looser than the confirmation's 8 (a rejection must not miss a copy; a survivor costs
only the sampled confirmation); scripts/bench_triage.py sweeps it, measuring the false rejections of copies
per alteration against the decoys that survive.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from p2pwatch.match import media
from p2pwatch.match.content_budget import BudgetExhausted
from p2pwatch.match.frame_lookup import FrameLookup
from p2pwatch.match.lazyview import LazyFile, PieceWithheld, serve_lazy_file
from p2pwatch.match.matcher import PieceSource
from p2pwatch.match.media_types import ContentKind, FrameHash, VideoInfo
from p2pwatch.match.perceptual import lazy_input_options
from p2pwatch.torrent.metainfo import FileEntry, Metainfo

log = logging.getLogger(__name__)

#: Where the key frame is looked for (fractions of the duration) after a flat first one.
FLAT_RETRY_POINTS = (0.5, 0.25, 0.75)


@dataclass(frozen=True)
class KeyframeSettings:
    threshold: int = 10  # pHash bits to the nearest registered video frame
    image_threshold: int = 10  # pHash bits to the nearest registered image
    preview_pieces: int = 2  # pieces of an image read for the screen
    attempts: int = 3  # key frames tried when the first ones are flat (black, fades)
    corroborate: bool = True  # a first key frame near registered frames is checked against a second one
    new_pieces: int = 1  # pieces one key frame decode may fetch beyond those fetched already ...
    first_extra_pieces: int = 1  # ... and this many more the first time (the head and the container index)
    piece_timeout: float = 60.0
    decode_timeout: float = 60.0


@dataclass(frozen=True)
class ScreenResult:
    """The verdict of the screen on one file. ``near``: registered items within the threshold (id -> bits)."""

    file_index: int
    path: str
    kind: ContentKind
    survived: bool
    reason: str
    near: dict[str, int]
    hashes: tuple[FrameHash, ...]
    pieces: int  # distinct pieces of the torrent this file's screen touched


def _keyframe_args(url: str, start: float | None, input_options: Sequence[str]) -> list[str]:
    side = media.FRAME_SIDE
    args = ["-loglevel", "info", "-threads", "1"]
    if start:
        args += ["-noaccurate_seek", "-ss", f"{start:.3f}"]
    args += media._input_args(url, "http,tcp", input_options)
    graph = f"scale=128:128:flags=area,showinfo,scale={side}:{side}:flags=area,format=gray"
    return [*args, "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", graph, "-fps_mode", "passthrough",
            "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"]


def keyframe_hash(url: str, start: float | None = None, *, timeout: float = 60.0,
                  input_options: Sequence[str] = ()) -> tuple[VideoInfo | None, FrameHash | None]:
    """The first key frame at or after ``start`` (the file's first one for None): what ffmpeg says of the
    video, and the frame's hash (None when flat or undecodable)."""
    out, stderr, _ = media._run_ffmpeg(_keyframe_args(url, start, input_options), None, timeout)
    info = media._parse_info(stderr)
    found = media._SHOWINFO.search(stderr)
    size = media.FRAME_SIDE * media.FRAME_SIDE
    if info is None or found is None or len(out) < size:
        return info, None
    try:
        t = float(found.group(3))
    except ValueError:
        return info, None
    phash = media._frame_hash(out[:size])
    if phash is None or t != t:
        return info, None
    return info, FrameHash(round((start or 0.0) + t, 3), phash)


class PieceGate:
    """The pieces one decode may fetch: those fetched already plus at most ``allow`` more (None: any).

    ffmpeg's demuxer reads a dozen packets or more ahead of the decoder, and the decoder holds frames back for
    B-frame reordering: left alone it reads seconds of video for one key frame. Withheld pieces end its input
    as the end of the file would, so the decoder flushes and the key frame comes out."""

    def __init__(self) -> None:
        self.fetched: set[int] = set()
        self.limit: int | None = None
        self.withheld = 0

    def allow(self, more: int | None) -> None:
        self.limit = None if more is None else len(self.fetched) + more

    def check(self, index: int) -> None:
        if index not in self.fetched and self.limit is not None and len(self.fetched) >= self.limit:
            self.withheld += 1
            raise PieceWithheld(f"piece {index} withheld from the key frame decode")


def _lazy(f: FileEntry, metainfo: Metainfo, source: PieceSource, timeout: float, refusals: list[BudgetExhausted],
          gate: PieceGate) -> LazyFile:
    async def piece(index: int) -> bytes:
        gate.check(index)
        try:
            item = (await source.read_pieces_async([index], timeout))[index]
        except BudgetExhausted as exc:  # the lazy view turns errors into short reads: remember this one
            refusals.append(exc)
            raise
        gate.fetched.add(index)
        return item if isinstance(item, bytes) else bytes(item.data)

    return LazyFile(f, metainfo.piece_length, piece)


async def _read(lazy: LazyFile, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in lazy.iter_range(start, end)])


async def screen_file(f: FileEntry, metainfo: Metainfo, source: PieceSource, lookup: FrameLookup,
                      settings: KeyframeSettings | None = None) -> ScreenResult:
    """Screen one file (see the module docstring). Raises what the piece source raises (a fetch timeout;
    :class:`BudgetExhausted`, also when ffmpeg met it as a short read); a file ffmpeg or Pillow cannot
    decode survives (the confirmation decides)."""
    settings = settings or KeyframeSettings()
    refusals: list[BudgetExhausted] = []
    gate = PieceGate()
    lazy = _lazy(f, metainfo, source, settings.piece_timeout, refusals, gate)
    head = await _read(lazy, 0, min(media.SNIFF_BYTES, f.length) - 1)
    kind = media.sniff_kind(head)

    def result(survived: bool, reason: str, near: dict[str, int] | None = None,
               hashes: tuple[FrameHash, ...] = ()) -> ScreenResult:
        return ScreenResult(f.index, f.display_path, kind, survived, reason, near or {}, hashes,
                            len(lazy.stats.pieces_touched))

    if kind is ContentKind.IMAGE:
        return await _screen_image(lazy, f, metainfo, lookup, settings, result)
    if kind is not ContentKind.VIDEO:
        return result(False, "neither an image nor a video (magic bytes)")
    if not lookup.video_hashes:
        return result(False, "no registered video frames")
    options = await trio.to_thread.run_sync(lazy_input_options)
    try:
        async with serve_lazy_file(lazy) as url:
            verdict = await _screen_video(url, lookup, settings, options, gate)
    except media.MediaError as exc:
        if refusals:
            raise refusals[0] from None
        return result(True, f"key frame not decodable ({exc}): left to the confirmation")
    if refusals:  # ffmpeg saw a short read where the budget refused a piece: no verdict either way
        raise refusals[0]
    return result(*verdict)


async def _screen_video(url: str, lookup: FrameLookup, settings: KeyframeSettings, options: Sequence[str],
                        gate: PieceGate) -> tuple[bool, str, dict[str, int], tuple[FrameHash, ...]]:
    """(survived, reason, near, hashes) for the video served at ``url``."""

    async def decode(start: float | None, more: int | None) -> tuple[VideoInfo | None, FrameHash | None]:
        gate.allow(more)
        try:
            return await trio.to_thread.run_sync(functools.partial(
                keyframe_hash, url, start, timeout=settings.decode_timeout, input_options=options))
        finally:
            gate.allow(None)

    async def at(start: float | None) -> tuple[VideoInfo | None, FrameHash | None]:
        """The key frame at ``start`` with at most ``new_pieces`` more pieces (the head and the index too, the
        first time); when that withheld a piece and gave no frame, once more with twice as many."""
        more = settings.new_pieces + (settings.first_extra_pieces if start is None else 0)
        withheld = gate.withheld
        info, frame = await decode(start, more)
        if frame is None and gate.withheld > withheld:
            info2, frame = await decode(start, 2 * more)
            info = info or info2
        return info, frame

    info, frame = await at(None)
    duration = info.duration if info is not None else None
    points = [duration * p for p in FLAT_RETRY_POINTS] if duration else []
    tried = 1
    while frame is None and points and tried < settings.attempts:
        _, frame = await at(points.pop(0))
        tried += 1
    if frame is None:
        return True, "no key frame with content decoded: left to the confirmation", {}, ()
    near = lookup.near(ContentKind.VIDEO, [frame.phash], settings.threshold)
    if not near:
        return (False, f"key frame at {frame.t:g} s is more than {settings.threshold} bits from every registered "
                       "frame", {}, (frame,))
    reason = f"key frame at {frame.t:g} s within {min(near.values())} bits of {len(near)} registered video(s)"
    if not settings.corroborate:
        return True, reason, near, (frame,)
    second: FrameHash | None = None
    for start in points[:2]:  # another key frame, elsewhere in the video (not the same one again)
        _, second = await at(start)
        if second is not None and second.t != frame.t:
            break
        second = None
    if second is None:
        return True, reason + "; no second key frame to corroborate it", near, (frame,)
    again = lookup.near(ContentKind.VIDEO, [second.phash], settings.threshold)
    common = {item: max(d, again[item]) for item, d in near.items() if item in again}
    if not common:
        return (False, f"{reason}, but the key frame at {second.t:g} s is within {settings.threshold} bits of none "
                       "of them", {}, (frame, second))
    return True, f"{reason}; so is the key frame at {second.t:g} s", common, (frame, second)


async def _screen_image(lazy: LazyFile, f: FileEntry, metainfo: Metainfo, lookup: FrameLookup,
                        settings: KeyframeSettings, result: Callable[..., ScreenResult]) -> ScreenResult:
    if not lookup.image_hashes:
        return result(False, "no registered images")
    first_piece = f.offset // metainfo.piece_length
    limit = (first_piece + settings.preview_pieces) * metainfo.piece_length - f.offset
    if f.length > limit:
        return result(True, f"image larger than {settings.preview_pieces} pieces: left to the confirmation")
    data = await _read(lazy, 0, f.length - 1)
    try:
        fingerprint = await trio.to_thread.run_sync(lambda: media.hash_image_bytes(data, pdq=False))
    except media.MediaError as exc:
        return result(True, f"image not decodable ({exc}): left to the confirmation")
    assert fingerprint.image_phash is not None
    near = lookup.near(ContentKind.IMAGE, [fingerprint.image_phash], settings.image_threshold)
    frame = FrameHash(0.0, fingerprint.image_phash)
    if not near:
        return result(False, f"image more than {settings.image_threshold} bits from every registered image",
                      hashes=(frame,))
    return result(True, f"image within {min(near.values())} bits of {len(near)} registered image(s)", near,
                  (frame,))
