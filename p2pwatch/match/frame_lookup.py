"""Every registered frame hash, looked up at once: which registered items have a hash within ``r`` bits?

The one-keyframe screen (:mod:`p2pwatch.match.keyframe`) asks this for each keyframe it hashes: among *all*
registered video frames (or image hashes), is any within the threshold? Video frame pHashes and image
pHashes are kept apart (a video keyframe is compared with video frames only).

The lookup goes through one small interface, :class:`HashLookup` (``add`` / ``remove`` / ``radius``), so the
backend can be exchanged: the exact multi-index hashing of :mod:`p2pwatch.match.hash_index` (issue 13, item 3;
:class:`IndexedHashes`) by default, :class:`BruteForceHashes` (numpy, exact, linear) as the reference the
tests compare it with.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from p2pwatch.match.matcher import RegistryIndex
from p2pwatch.match.media_types import ContentKind


class HashLookup(Protocol):
    def add(self, item_id: str, hashes: Sequence[int]) -> None: ...

    def remove(self, item_id: str) -> None: ...

    def radius(self, h: int, r: int) -> list[tuple[str, int]]: ...

    def __len__(self) -> int: ...


class BruteForceHashes:
    """64-bit hashes in one numpy array, scanned with popcount: exact, and fast enough for small registries."""

    def __init__(self) -> None:
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._owners = np.zeros(0, dtype=np.int64)
        self._ids: list[str] = []
        self._slot: dict[str, int] = {}
        self._pending: list[tuple[int, Sequence[int]]] = []

    def __len__(self) -> int:
        self._flush()
        return int(self._hashes.size)

    def add(self, item_id: str, hashes: Sequence[int]) -> None:
        slot = self._slot.get(item_id)
        if slot is None:
            slot = self._slot[item_id] = len(self._ids)
            self._ids.append(item_id)
        self._pending.append((slot, hashes))

    def remove(self, item_id: str) -> None:
        self._flush()
        slot = self._slot.pop(item_id, None)
        if slot is not None:
            keep = self._owners != slot
            self._hashes, self._owners = self._hashes[keep], self._owners[keep]

    def _flush(self) -> None:
        if not self._pending:
            return
        hashes = [np.asarray(list(h), dtype=np.uint64) for _, h in self._pending]
        owners = [np.full(len(h), slot, dtype=np.int64) for (slot, _), h in zip(self._pending, hashes, strict=True)]
        self._hashes = np.concatenate([self._hashes, *hashes])
        self._owners = np.concatenate([self._owners, *owners])
        self._pending.clear()

    def radius(self, h: int, r: int) -> list[tuple[str, int]]:
        self._flush()
        if not self._hashes.size:
            return []
        distances = np.bitwise_count(self._hashes ^ np.uint64(h))
        hits = np.nonzero(distances <= r)[0]
        best: dict[str, int] = {}
        for owner, d in zip(self._owners[hits].tolist(), distances[hits].tolist(), strict=True):
            item = self._ids[owner]
            best[item] = min(d, best.get(item, 64))
        return sorted(best.items())


class IndexedHashes:
    """:class:`p2pwatch.match.hash_index.HashIndex` (exact multi-index hashing) behind :class:`HashLookup`."""

    def __init__(self) -> None:
        from p2pwatch.match.hash_index import HashIndex

        self.index: HashIndex[str] = HashIndex(64)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, item_id: str, hashes: Sequence[int]) -> None:
        if item_id not in self.index:
            self.index.add(item_id, list(hashes))

    def remove(self, item_id: str) -> None:
        self.index.remove(item_id)

    def radius(self, h: int, r: int) -> list[tuple[str, int]]:
        best: dict[str, int] = {}
        for hit in self.index.radius(h, r):
            best[hit.item_id] = min(hit.distance, best.get(hit.item_id, 64))
        return sorted(best.items())


def default_backend() -> Callable[[], HashLookup]:
    """The exact index of :mod:`p2pwatch.match.hash_index` when present, else :class:`BruteForceHashes`."""
    try:
        importlib.import_module("p2pwatch.match.hash_index")
    except ImportError:
        return BruteForceHashes
    return IndexedHashes


class FrameLookup:
    """The registered video frame hashes and image hashes of a :class:`RegistryIndex`, by content id."""

    def __init__(self, index: RegistryIndex | None = None, backend: Callable[[], HashLookup] | None = None) -> None:
        make = backend or default_backend()
        self.videos: HashLookup = make()
        self.images: HashLookup = make()
        self.items: dict[str, ContentKind] = {}
        if index is not None:
            self.add_all(index)

    def add_all(self, index: RegistryIndex) -> None:
        for item in index.media_items():
            media = item.fingerprint.media
            assert media is not None
            if item.content_id in self.items:
                continue
            if media.kind is ContentKind.VIDEO and media.frame_hashes:
                self.videos.add(item.content_id, [f.phash for f in media.frame_hashes])
                self.items[item.content_id] = ContentKind.VIDEO
            elif media.kind is ContentKind.IMAGE and media.image_phash is not None:
                self.images.add(item.content_id, [media.image_phash])
                self.items[item.content_id] = ContentKind.IMAGE

    def remove(self, content_id: str) -> None:
        kind = self.items.pop(content_id, None)
        if kind is ContentKind.VIDEO:
            self.videos.remove(content_id)
        elif kind is ContentKind.IMAGE:
            self.images.remove(content_id)

    def near(self, kind: ContentKind, hashes: Iterable[int], r: int) -> dict[str, int]:
        """Registered items of ``kind`` with a hash within ``r`` bits of any of ``hashes``: id -> best distance."""
        table = self.videos if kind is ContentKind.VIDEO else self.images
        best: dict[str, int] = {}
        for h in hashes:
            for item, d in table.radius(h, r):
                best[item] = min(d, best.get(item, 64))
        return best

    def __len__(self) -> int:
        return len(self.videos) + len(self.images)
