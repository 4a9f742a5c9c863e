"""Media: content sniffing, perceptual hashes computed in memory, and the comparison primitives the matcher
uses for perceptual matches (DESIGN.md principle 5: nobody has to look).

* **Kind** by magic bytes only (:func:`sniff_kind`), never by file name.
* **Images**: the 64-bit DCT pHash of imagehash, after EXIF orientation; and PDQ (256 bits, what StopNCII and
  platforms exchange) when the optional ``pdqhash`` package is installed (``pip install p2pwatch[pdq]``).
* **Videos**: ffmpeg decodes frames to 32x32 grayscale through a pipe (no frame ever touches the disk),
  sampled at a steady rate across the whole video plus at scene changes (``select`` on the ``scene`` score,
  ``showinfo`` for the timestamps). Each sampled frame gives a :class:`FrameHash` (time, 64-bit pHash of the
  32x32 frame, the same DCT as imagehash). Nearly flat frames (black, fades) carry no identity and are
  dropped, so two unrelated videos never match on their black frames.
* **Matching**: :func:`match_image` compares hashes against a Hamming threshold; :func:`match_video` pairs
  candidate frames with registered frames within the threshold and votes over their time offsets
  (registered t - candidate t), so trimmed, re-encoded, resized and remuxed copies match at one consistent
  offset while chance collisions, scattered over offsets, do not add up.

The default thresholds come from ``scripts/bench_fingerprint.py`` (docs/fingerprint-format.md gives the
measured rates). ffmpeg runs with a protocol and demuxer allow-list, so a hostile file (say an HLS playlist
inside a torrent) cannot make it open other files or the network.
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import imagehash
import numpy as np
from PIL import Image, ImageOps

from p2pwatch import limits
from p2pwatch.errors import MediaError
from p2pwatch.match.media_match import (
    DEFAULT_FRAME_THRESHOLD,
    DEFAULT_IMAGE_PHASH_THRESHOLD,
    DEFAULT_MIN_FRAMES,
    DEFAULT_MIN_RATIO,
    DEFAULT_OFFSET_TOLERANCE,
    DEFAULT_PDQ_THRESHOLD,
    FramePair,
    ImageMatch,
    VideoMatch,
    hamming,
    match_image,
    match_video,
)
from p2pwatch.match.media_types import ContentKind, FrameHash, MediaFingerprint, VideoInfo

# the comparison primitives live in p2pwatch.match.media_match; re-exported here for existing callers
__all__ = [
    "DEFAULT_FRAME_THRESHOLD", "DEFAULT_IMAGE_PHASH_THRESHOLD", "DEFAULT_MIN_FRAMES", "DEFAULT_MIN_RATIO",
    "DEFAULT_OFFSET_TOLERANCE", "DEFAULT_PDQ_THRESHOLD", "FramePair", "ImageMatch", "VideoMatch", "hamming",
    "match_image", "match_video",
]

#: Side of the square grayscale frames ffmpeg hands us (the pHash input size of imagehash).
FRAME_SIDE = 32
#: Frames whose 32x32 grayscale standard deviation is below this are "flat" and carry no identity.
FLAT_FRAME_STD = 4.0
#: Seconds between steady samples of a candidate video (:func:`video_frame_hashes`).
DEFAULT_STEP = 1.0
#: Densest steady sampling of a registered video (:func:`hash_video_source`), and the step for a pipe.
REGISTER_MIN_STEP = 0.1
PIPE_REGISTER_STEP = 0.5
#: ffmpeg ``scene`` score above which a frame counts as a scene change.
DEFAULT_SCENE_THRESHOLD = 0.3
#: A scene-change frame is taken only this long after the previous sample (noise cannot flood us).
MIN_SAMPLE_GAP = 0.25

#: Demuxers ffmpeg may use on input we did not make (``format_whitelist``: no playlists, no concat).
VIDEO_DEMUXERS = "mov,matroska,avi,flv,mpegts,mpeg,mpegvideo,asf,ogg,h264,hevc,m4v,ivf,nut,rm,mxf,gif"
SNIFF_BYTES = 4096


_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_VIDEO_MAGIC = (b"\x1aE\xdf\xa3", b"FLV\x01", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3",
                b"0&\xb2u\x8ef\xcf\x11", b".RMF")
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}


def sniff_kind(head: bytes) -> ContentKind:
    """Image, video or other, from the first bytes of a file (:data:`SNIFF_BYTES` are plenty)."""
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": ContentKind.IMAGE, b"AVI ": ContentKind.VIDEO}.get(head[8:12], ContentKind.OTHER)
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return ContentKind.IMAGE if head[8:12] in _IMAGE_BRANDS else ContentKind.VIDEO
    if len(head) >= 8 and head[4:8] in _MP4_BOXES and int.from_bytes(head[:4], "big") >= 8:
        return ContentKind.VIDEO
    if head.startswith(_VIDEO_MAGIC):
        return ContentKind.VIDEO
    if head.startswith(b"OggS"):
        return ContentKind.VIDEO if b"theora" in head or b"\x80theora" in head else ContentKind.OTHER
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return ContentKind.VIDEO  # MPEG transport stream
    if head.startswith(_IMAGE_MAGIC):
        return ContentKind.IMAGE
    return ContentKind.OTHER


# --- images -------------------------------------------------------------------------------------------

def pdq_available() -> bool:
    """True when the optional ``pdqhash`` package (extra ``p2pwatch[pdq]``) is importable."""
    return _pdqhash() is not None


def _pdqhash() -> Any:
    try:
        return importlib.import_module("pdqhash")
    except ImportError:
        return None


def _open_image(data: bytes) -> Image.Image:
    Image.MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS
    try:
        opened = Image.open(io.BytesIO(data))
        opened.load()
        upright = ImageOps.exif_transpose(opened) or opened
        return upright.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MediaError(f"not a decodable image: {exc}") from None


def hash_image_bytes(data: bytes, *, pdq: bool = True) -> MediaFingerprint:
    """pHash (and PDQ when available and ``pdq``) of an encoded image held in memory."""
    if len(data) > limits.MAX_IMAGE_FILE:
        raise MediaError(f"image of {len(data)} bytes exceeds the {limits.MAX_IMAGE_FILE}-byte limit")
    image = _open_image(data)
    phash = int(str(imagehash.phash(image)), 16)
    pdq_bytes = None
    module = _pdqhash() if pdq else None
    if module is not None:
        vector, _quality = module.compute(np.asarray(image))
        pdq_bytes = np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes()
    return MediaFingerprint(ContentKind.IMAGE, image.width, image.height, image_phash=phash,
                            image_pdq=pdq_bytes)


def hash_image_file(path: str | os.PathLike[str]) -> MediaFingerprint:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.MAX_IMAGE_FILE + 1)
    except OSError as exc:
        raise MediaError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    return hash_image_bytes(data)


# --- ffmpeg -------------------------------------------------------------------------------------------

def ffmpeg_exe() -> str:
    """The ffmpeg binary: ``$P2PWATCH_FFMPEG``, else imageio-ffmpeg's, else one on PATH."""
    explicit = os.environ.get("P2PWATCH_FFMPEG")
    if explicit:
        return explicit
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        pass
    found = shutil.which("ffmpeg")
    if found is None:
        raise MediaError("ffmpeg not found: pip install imageio-ffmpeg, or install ffmpeg")
    return found


def ffmpeg_available() -> bool:
    try:
        exe = ffmpeg_exe()
    except MediaError:
        return False
    return os.path.isfile(exe) and os.access(exe, os.X_OK)


def _is_pipe(input_path: str) -> bool:
    return input_path in ("pipe:", "pipe:0", "-")


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _input_args(input_path: str, protocols: str, options: Sequence[str] = ()) -> list[str]:
    """ffmpeg's input arguments; ``options`` are input options (protocol or demuxer AVOptions) put before -i."""
    source = "pipe:0" if _is_pipe(input_path) else input_path
    if not _is_pipe(input_path) and not _URL.match(source):
        source = "file:" + source  # a local name with a colon is never read as a protocol
    return ["-protocol_whitelist", protocols, "-format_whitelist", VIDEO_DEMUXERS, *options, "-i", source]


@functools.cache
def protocol_options(protocol: str) -> frozenset[str]:
    """The option names this ffmpeg's ``protocol`` (``http``, ``tcp``) takes; empty when it cannot say."""
    try:
        done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-h", f"protocol={protocol}"], capture_output=True,
                              timeout=30, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired, MediaError):
        return frozenset()
    return frozenset(re.findall(r"^\s+-(\w+)\s", done.stdout.decode("utf-8", "replace"), re.MULTILINE))


def _run_ffmpeg(args: list[str], data: bytes | None, timeout: float) -> tuple[bytes, str, int]:
    command = [ffmpeg_exe(), "-hide_banner", "-nostats", *( [] if data is not None else ["-nostdin"]), *args]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout, check=False,
                              stdin=None if data is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg took longer than {timeout:.0f} s on this input") from None
    except OSError as exc:
        raise MediaError(f"cannot run ffmpeg: {exc.strerror or exc}") from None
    return done.stdout, done.stderr.decode("utf-8", "replace"), done.returncode


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+)(.*)")
_SIZE = re.compile(r"[ ,](\d{1,5})x(\d{1,5})[ ,\]]")
_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+|NOPTS)\s+pts_time:(\S+)")


def _parse_info(stderr: str) -> VideoInfo | None:
    stream = _VIDEO_STREAM.search(stderr)
    if stream is None:
        return None
    size = _SIZE.search(stream.group(2) + " ")
    duration = _DURATION.search(stderr)
    seconds = None
    if duration is not None:
        h, m, s = duration.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(s)
    width, height = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
    return VideoInfo(width, height, seconds, stream.group(1))


_ERROR_LINE = re.compile(r"(?i)error|invalid|not found|no such|denied|partial|corrupt|unsupported|refused")
_BORING = re.compile(r"(?i)^(conversion failed|frame=)|terminating thread|task finished|nothing was written")


def _last_error(stderr: str) -> str:
    """The most telling line of ffmpeg's report (the first error-like line, without its [component])."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and "showinfo" not in line]
    errors = [line for line in lines if _ERROR_LINE.search(line) and not _BORING.search(line)]
    chosen = errors[0] if errors else (lines[-1] if lines else "no output from ffmpeg")
    return re.sub(r"^\[[^\]]*\]\s*", "", chosen)


def probe_video(input_path: str, *, data: bytes | None = None, protocols: str = "file,pipe",
                timeout: float = 120.0, input_options: Sequence[str] = ()) -> VideoInfo:
    """Width, height, duration and codec of the first video stream (from ``ffmpeg -i``'s report)."""
    _, stderr, _ = _run_ffmpeg([*_input_args(input_path, protocols, input_options)], data, timeout)
    info = _parse_info(stderr)
    if info is None:
        raise MediaError(f"no video stream: {_last_error(stderr)}")
    return info


def _frame_hash(frame: bytes) -> int | None:
    pixels = np.frombuffer(frame, dtype=np.uint8)
    if float(pixels.std()) < FLAT_FRAME_STD:
        return None
    image = Image.frombuffer("L", (FRAME_SIDE, FRAME_SIDE), frame, "raw", "L", 0, 1)
    return int(str(imagehash.phash(image)), 16)


def _decode(input_path: str, *, data: bytes | None, start: float | None, duration: float | None,
            keyframes_only: bool, max_frames: int, step: float, scene_threshold: float, protocols: str,
            timeout: float) -> tuple[VideoInfo, tuple[FrameHash, ...]]:
    select = (f"isnan(prev_selected_t)+gte(t-prev_selected_t\\,{max(0.0, step - 0.002):.4f})"
              f"+gt(scene\\,{scene_threshold})*gte(t-prev_selected_t\\,{MIN_SAMPLE_GAP})")
    graph = (f"scale=128:128:flags=area,select='{select}',showinfo,"
             f"scale={FRAME_SIDE}:{FRAME_SIDE}:flags=area,format=gray")
    args: list[str] = ["-loglevel", "info"]
    if keyframes_only:
        args += ["-skip_frame", "nokey"]
    if start:
        args += ["-ss", f"{start:.3f}"]
    if duration is not None:
        args += ["-t", f"{duration:.3f}"]
    args += _input_args(input_path, protocols)
    args += ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", graph, "-fps_mode", "passthrough",
             "-frames:v", str(max_frames), "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"]
    out, stderr, returncode = _run_ffmpeg(args, data, timeout)
    info = _parse_info(stderr)
    if info is None:
        raise MediaError(f"no video stream: {_last_error(stderr)}")
    times = []
    for match in _SHOWINFO.finditer(stderr):
        try:
            times.append(float(match.group(3)))
        except ValueError:
            times.append(float("nan"))
    size = FRAME_SIDE * FRAME_SIDE
    count = min(len(times), len(out) // size)
    if count == 0 and returncode != 0:
        raise MediaError(f"no frame could be decoded: {_last_error(stderr)}")
    frames = []
    for i in range(count):
        phash = _frame_hash(out[i * size : (i + 1) * size])
        if phash is not None and times[i] == times[i]:
            frames.append(FrameHash(round((start or 0.0) + times[i], 3), phash))
    return info, tuple(frames)


def video_frame_hashes(
    input_path: str,
    *,
    data: bytes | None = None,
    start: float | None = None,
    duration: float | None = None,
    keyframes_only: bool = False,
    max_frames: int = limits.MAX_VIDEO_FRAMES,
    step: float = DEFAULT_STEP,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    protocols: str = "file,pipe",
    timeout: float = limits.MEDIA_DECODE_TIMEOUT,
) -> tuple[FrameHash, ...]:
    """Frame hashes of a video: a path (partial files are fine: ffmpeg decodes what it can), ``pipe:`` with
    the bytes in ``data``, or a URL whose protocol ``protocols`` allows (e.g. ``"http,tcp"`` for a lazy view
    served on loopback). ``start``/``duration`` limit the decoded range (times stay relative to the start of
    the file); ``keyframes_only`` decodes key frames only (fast, and what a lazy view fetches cheaply).
    Raises :class:`MediaError` when nothing could be decoded."""
    if max_frames < 1:
        raise MediaError("max_frames must be at least 1")
    return _decode(input_path, data=data, start=start, duration=duration, keyframes_only=keyframes_only,
                   max_frames=max_frames, step=step, scene_threshold=scene_threshold, protocols=protocols,
                   timeout=timeout)[1]


def hash_video_source(
    input_path: str,
    *,
    data: bytes | None = None,
    max_frames: int = limits.MAX_VIDEO_FRAMES,
    step: float | None = None,
    keyframes_only: bool = False,
    protocols: str = "file,pipe",
    timeout: float = limits.MEDIA_DECODE_TIMEOUT,
) -> MediaFingerprint:
    """The :class:`MediaFingerprint` of a whole video, to register. Registered videos are sampled densely (a
    candidate seen later through a lazy view is sampled sparsely and must land near a registered frame): by
    default up to ``max_frames / 2`` steady samples spread over the duration, at most one per
    :data:`REGISTER_MIN_STEP` (short videos: about every frame). A pipe has no duration up front and is
    sampled every :data:`PIPE_REGISTER_STEP`."""
    if step is None:
        step = PIPE_REGISTER_STEP
        if not _is_pipe(input_path):
            info = probe_video(input_path, protocols=protocols, timeout=min(timeout, 120.0))
            if info.duration:
                step = max(REGISTER_MIN_STEP, info.duration / max(1, max_frames // 2))
    info_seen, frames = _decode(input_path, data=data, start=None, duration=None,
                                keyframes_only=keyframes_only, max_frames=max_frames, step=step,
                                scene_threshold=DEFAULT_SCENE_THRESHOLD, protocols=protocols, timeout=timeout)
    duration = info_seen.duration if info_seen.duration else (frames[-1].t if frames else None)
    return MediaFingerprint(ContentKind.VIDEO, info_seen.width, info_seen.height, duration,
                            info_seen.codec, frames)


def media_fingerprint(path: str | os.PathLike[str], kind: ContentKind) -> MediaFingerprint | None:
    """Perceptual fingerprint of a local file of a sniffed ``kind`` (None for ``OTHER``)."""
    if kind is ContentKind.IMAGE:
        return hash_image_file(path)
    if kind is ContentKind.VIDEO:
        return hash_video_source(os.fspath(path))
    return None
