"""Triage: which torrents deserve content bytes at all, decided from the metainfo alone (issue 13).

Zero content bytes are read here. Every non-pad file of a torrent (BEP 3 ``info.files``, BEP 52 ``file tree``)
is scored against the registered items from what the metainfo says about it:

* **size against a registered size**: the exact stages (:mod:`p2pwatch.match.matcher`) prove or refute such
  a file with at most one piece, so it is always examined;
* **type**: the extension is only a prior (the perceptual stage sniffs magic bytes, never the name), but a
  ``.nfo``, ``.txt`` or ``.exe`` is not worth a piece unless a keyword names the torrent;
* **size against a registered video**: a copy of a video of ``D`` seconds, re-encoded at any plausible bit
  rate (``min_video_kbps`` .. ``max_video_kbps``), lasts at most ``D × duration_slack`` and, trimmed, at least
  ``min_clip_seconds``; a file outside every registered video's byte range cannot be one of them;
* **size against the registered images**: between ``min_image_bytes`` and ``max_image_bytes``;
* **keyword candidates** (:mod:`p2pwatch.match.keywords`, stage 1) and files of unknown type raise or lower
  the priority rather than decide.

The result is a :class:`TriageDecision`: ``skip`` (with the reason) or ``queue`` with a priority score,
the files worth reading and an estimate of the bytes the content stages will cost (what the budget of
:mod:`p2pwatch.match.content_budget` reserves).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, KeysView, Sequence
from dataclasses import dataclass, field

from p2pwatch.match.matcher import RegistryIndex, name_candidates
from p2pwatch.match.media_types import ContentKind
from p2pwatch.match.registered import RegisteredContent
from p2pwatch.torrent.metainfo import FileEntry, Metainfo


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


VIDEO_EXTENSIONS = _words(
    ".mp4 .m4v .mkv .webm .avi .mov .wmv .asf .flv .f4v .mpg .mpeg .m2v .ts .m2ts .mts .vob .3gp .3g2 .ogv .rm "
    ".rmvb .divx .xvid .mxf .264 .h264 .hevc .265")
IMAGE_EXTENSIONS = _words(".jpg .jpeg .jpe .jfif .png .gif .bmp .webp .tif .tiff .heic .heif .avif")
#: Extensions that are never an image or a video (a keyword hit still lets such a file be sniffed). Archives
#: are here too: the perceptual stage cannot look inside them (the exact stages still see a registered size).
NON_MEDIA_EXTENSIONS = _words(
    ".txt .nfo .srt .ass .ssa .sub .idx .vtt .sfv .md5 .sha1 .sha256 .par2 .url .lnk .htm .html .xml .json .ini "
    ".log .pdf .doc .docx .epub .mobi .exe .msi .dll .apk .dmg .bat .sh .torrent .mp3 .flac .wav .aac .ogg .opus "
    ".m4a .wma .ape .cue .db .ds_store .zip .rar .7z .tar .gz .bz2 .xz .iso .cab")

DECISION_SKIP = "skip"
DECISION_QUEUE = "queue"


@dataclass(frozen=True)
class TriageRules:
    """Plausible ranges for copies of registered media (see the module docstring)."""

    min_video_kbps: float = 16.0  # synthetic clips re-encoded at CRF 32 reach 20 kbit/s; small files are cheap
    max_video_kbps: float = 20_000.0  # a high-quality 1080p re-encode
    min_clip_seconds: float = 4.0  # trimmed copies shorter than this are not looked for
    duration_slack: float = 1.25  # a copy may be longer than the original (intro, outro, slow-down)
    min_image_bytes: int = 128  # a 240x180 WebP of a smooth picture is 300 bytes
    max_image_bytes: int = 32 * 1024 * 1024
    max_files: int = 8  # files of one torrent examined, highest score first
    keyword_bonus: float = 50.0


@dataclass(frozen=True)
class FileScore:
    """Why one file is (or is not) worth content bytes."""

    file_index: int
    path: str
    length: int
    kind: ContentKind  # by extension: a prior only
    score: float
    reason: str


@dataclass(frozen=True)
class TriageDecision:
    """``action`` is :data:`DECISION_SKIP` or :data:`DECISION_QUEUE`; ``files`` the file indices to examine."""

    infohash: str
    action: str
    score: float
    reason: str
    files: tuple[int, ...] = ()
    estimate_bytes: int = 0
    scores: tuple[FileScore, ...] = field(default=(), repr=False)

    @property
    def queued(self) -> bool:
        return self.action == DECISION_QUEUE


def kind_by_extension(path: str) -> ContentKind | None:
    """VIDEO or IMAGE by extension, OTHER for a known non-media extension, None when the name does not say."""
    ext = os.path.splitext(path.lower())[1]
    if ext in VIDEO_EXTENSIONS:
        return ContentKind.VIDEO
    if ext in IMAGE_EXTENSIONS:
        return ContentKind.IMAGE
    if ext in NON_MEDIA_EXTENSIONS:
        return ContentKind.OTHER
    return None


class RegistryProfile:
    """What triage needs of the registry: sizes, and the byte ranges of plausible copies of its media.

    Kept incrementally: :meth:`add` and :meth:`remove` cost the item's own entry, never a pass over the
    registry. Every video of a known duration contributes the range ``(low, high)`` of its plausible copies;
    ranges are grouped by ``low`` (which depends only on ``min(duration, min_clip_seconds)``, so nearly every
    video shares one), and within a group the range of the highest ``high`` contains all others. The merged
    ranges are therefore the merge of one range per group, recomputed (over the groups only) when a group's
    highest ``high`` changes."""

    def __init__(self, settings: TriageRules) -> None:
        self.settings = settings
        self._sizes: dict[int, int] = {}  # registered size -> items of that size
        self._groups: dict[int, _Group] = {}  # low -> the highs of the videos with that low
        self._merged: tuple[tuple[int, int], ...] | None = ()
        self._images = self._videos = self._unknown = 0

    @classmethod
    def build(cls, index: RegistryIndex, settings: TriageRules) -> RegistryProfile:
        """From scratch: O(registry); :meth:`add`/:meth:`remove` follow the changes after that."""
        profile = cls(settings)
        for size, items in index.by_size.items():
            profile._sizes[size] = len(items)
        highs: dict[int, dict[int, int]] = {}
        for item in index.media_items():
            kind = item.fingerprint.media.kind if item.fingerprint.media is not None else None
            if kind is ContentKind.IMAGE:
                profile._images += 1
            elif kind is ContentKind.VIDEO:
                profile._videos += 1
                span = profile.video_range(item)
                if span is None:
                    profile._unknown += 1
                else:
                    group = highs.setdefault(span[0], {})
                    group[span[1]] = group.get(span[1], 0) + 1
        profile._groups = {low: _Group(counts) for low, counts in highs.items()}
        profile._merged = None
        return profile

    # --- following the registry ---

    def add(self, item: RegisteredContent) -> None:
        if item.fingerprint.size > 0:
            self._sizes[item.fingerprint.size] = self._sizes.get(item.fingerprint.size, 0) + 1
        if item.fingerprint.media is not None:
            self._add_media(item, +1)

    def remove(self, item: RegisteredContent) -> None:
        """Forget an item :meth:`add` (or :meth:`build`) took in."""
        size = item.fingerprint.size
        if size > 0:
            left = self._sizes.get(size, 0) - 1
            if left > 0:
                self._sizes[size] = left
            else:
                self._sizes.pop(size, None)
        if item.fingerprint.media is not None:
            self._add_media(item, -1)

    def video_range(self, item: RegisteredContent) -> tuple[int, int] | None:
        """The byte range of plausible copies of a registered video (None: duration unknown)."""
        media = item.fingerprint.media
        if media is None or not media.duration or media.duration <= 0:
            return None
        settings = self.settings
        shortest = min(media.duration, settings.min_clip_seconds)
        low = int(settings.min_video_kbps * 125 * shortest)
        high = int(settings.max_video_kbps * 125 * media.duration * settings.duration_slack)
        return low, max(high, item.fingerprint.size)

    def _add_media(self, item: RegisteredContent, step: int) -> None:
        media = item.fingerprint.media
        assert media is not None
        if media.kind is ContentKind.IMAGE:
            self._images += step
            return
        if media.kind is not ContentKind.VIDEO:
            return
        self._videos += step
        span = self.video_range(item)
        if span is None:
            self._unknown += step
            return
        low, high = span
        group = self._groups.get(low)
        if group is None:
            group = self._groups[low] = _Group()
        before = group.top()
        group.change(high, step)
        if group.empty():
            del self._groups[low]
        if group.top() != before:
            self._merged = None

    # --- reading ---

    @property
    def sizes(self) -> KeysView[int]:
        return self._sizes.keys()

    @property
    def video_ranges(self) -> tuple[tuple[int, int], ...]:
        """Merged, sorted (low, high) byte ranges."""
        if self._merged is None:
            self._merged = tuple(_merge([(low, group.top()) for low, group in self._groups.items()]))
        return self._merged

    @property
    def has_images(self) -> bool:
        return self._images > 0

    @property
    def has_videos(self) -> bool:
        return self._videos > 0

    @property
    def videos_without_duration(self) -> bool:
        """A registered video of unknown duration: any size is plausible."""
        return self._unknown > 0

    def snapshot(self) -> tuple[frozenset[int], tuple[tuple[int, int], ...], bool, bool, bool]:
        """Everything a decision reads, to compare two profiles."""
        return (frozenset(self.sizes), self.video_ranges, self.has_images, self.has_videos,
                self.videos_without_duration)

    def plausible_video(self, length: int) -> bool:
        if self.videos_without_duration:
            return True
        return any(low <= length <= high for low, high in self.video_ranges)


class _Group:
    """The ``high`` ends of the ranges sharing one ``low``, counted, with the highest found in O(log n)
    amortized: a max-heap whose entries of a count gone to zero are dropped when they reach the top."""

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = counts or {}
        self.heap: list[int] = [-h for h in self.counts]  # negated highs; may hold stale entries below the top
        heapq.heapify(self.heap)

    def change(self, high: int, step: int) -> None:
        count = self.counts.get(high, 0) + step
        if count > 0:
            if high not in self.counts:
                heapq.heappush(self.heap, -high)
            self.counts[high] = count
        else:
            self.counts.pop(high, None)
        while self.heap and -self.heap[0] not in self.counts:
            heapq.heappop(self.heap)
        if len(self.heap) > 2 * len(self.counts) + 16:  # many stale entries: compact
            self.heap = [-h for h in self.counts]
            heapq.heapify(self.heap)

    def empty(self) -> bool:
        return not self.counts

    def top(self) -> int:
        return -self.heap[0] if self.heap else -1


def _merge(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def score_file(f: FileEntry, profile: RegistryProfile, settings: TriageRules, *, named: bool) -> FileScore:
    """One file's score (0: not worth a byte) and the reason; ``named``: a keyword hit names the torrent."""
    path = f.display_path
    kind = kind_by_extension(path)
    if f.length in profile.sizes:
        return FileScore(f.index, path, f.length, kind or ContentKind.OTHER, 100.0, "registered size")
    if kind is ContentKind.OTHER and not named:
        return FileScore(f.index, path, f.length, kind, 0.0, "not a media type")
    video_ok = profile.has_videos and profile.plausible_video(f.length)
    image_ok = profile.has_images and settings.min_image_bytes <= f.length <= settings.max_image_bytes
    if kind is ContentKind.VIDEO or (kind is None and video_ok):
        if video_ok:
            return FileScore(f.index, path, f.length, ContentKind.VIDEO, 20.0 if kind else 8.0,
                             "video of a plausible size" if kind else "unknown type, plausible video size")
        if kind is ContentKind.VIDEO:
            return FileScore(f.index, path, f.length, kind, 0.0,
                             "video of a size no registered video's copy can have" if profile.has_videos
                             else "video, but no video is registered")
    if kind is ContentKind.IMAGE or (kind is None and image_ok):
        if image_ok:
            return FileScore(f.index, path, f.length, ContentKind.IMAGE, 10.0 if kind else 4.0,
                             "image of a plausible size" if kind else "unknown type, plausible image size")
        return FileScore(f.index, path, f.length, kind or ContentKind.OTHER, 0.0,
                         "image, but no image is registered" if not profile.has_images
                         else "image of an implausible size")
    if named and (video_ok or image_ok):
        return FileScore(f.index, path, f.length, ContentKind.OTHER, 2.0, "named by a keyword")
    return FileScore(f.index, path, f.length, kind or ContentKind.OTHER, 0.0, "no plausible media")


def estimate_bytes(scores: Sequence[FileScore], piece_length: int, preview_pieces: int = 2) -> int:
    """Bytes the first content stage reads for these files: the exact-piece stage's one piece for a file of a
    registered size, else the head, the container index and a key frame (``preview_pieces`` plus one)."""
    total = 0
    for s in scores:
        pieces = 1 if s.reason == "registered size" else preview_pieces + 1
        total += min(s.length + piece_length, pieces * piece_length)
    return total


class Triage:
    """Triage of torrents against one registry; when the registry changes in place, :meth:`apply` the items
    added and removed (or build a new one)."""

    def __init__(self, index: RegistryIndex, settings: TriageRules | None = None, *, preview_pieces: int = 2
                 ) -> None:
        self.index = index
        self.settings = settings or TriageRules()
        self.preview_pieces = preview_pieces
        self.profile = RegistryProfile.build(index, self.settings)

    def apply(self, added: Iterable[RegisteredContent] = (), removed: Iterable[RegisteredContent] = ()) -> None:
        """Follow a change of the index: the items it lost and gained (each costs its own entry)."""
        for item in removed:
            self.profile.remove(item)
        for item in added:
            self.profile.add(item)

    def decide(self, metainfo: Metainfo) -> TriageDecision:
        infohash = metainfo.infohash.hex()
        if not len(self.index):
            return TriageDecision(infohash, DECISION_SKIP, 0.0, "nothing registered")
        named = bool(self.index.keywords) and bool(name_candidates(self.index, metainfo))
        scores = [score_file(f, self.profile, self.settings, named=named) for f in metainfo.files
                  if not f.pad and f.length > 0]
        wanted = sorted((s for s in scores if s.score > 0), key=lambda s: (-s.score, s.file_index))
        if not wanted:
            reasons = sorted({s.reason for s in scores}) or ["no file"]
            return TriageDecision(infohash, DECISION_SKIP, 0.0, "; ".join(reasons), scores=tuple(scores))
        chosen = wanted[: self.settings.max_files]
        score = max(s.score for s in chosen) + (self.settings.keyword_bonus if named else 0.0)
        reason = chosen[0].reason + (", keyword candidate" if named else "")
        if len(wanted) > len(chosen):
            reason += f" ({len(wanted) - len(chosen)} more files not examined)"
        return TriageDecision(infohash, DECISION_QUEUE, score, reason, tuple(s.file_index for s in chosen),
                              estimate_bytes(chosen, metainfo.piece_length, self.preview_pieces), tuple(scores))
