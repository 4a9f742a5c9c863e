"""Every registered frame hash, looked up at once: which registered items have a hash within ``r`` bits?

The one-keyframe screen (:mod:`p2pwatch.match.keyframe`) asks this for each key frame it hashes: among *all*
registered video frames (or image pHashes), is any within the threshold? The hashes live in the registry's
exact Hamming indexes (:class:`p2pwatch.match.matcher.RegistryIndex` ``frames`` and ``image_phashes``, built
incrementally as content is registered and withdrawn: :mod:`p2pwatch.match.hash_index`); this is a view of
them by content id. Video frame hashes and image hashes are kept apart (a key frame is compared with video
frames only). ``brute_force`` scans every registered hash with numpy instead: the reference the tests
compare the index with.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from p2pwatch.match.matcher import RegistryIndex
from p2pwatch.match.media_types import ContentKind


class FrameLookup:
    def __init__(self, index: RegistryIndex, *, brute_force: bool = False) -> None:
        self.index = index
        self.brute_force = brute_force
        self._scan: dict[ContentKind, tuple[np.ndarray, list[str]]] = {}

    @property
    def video_hashes(self) -> int:
        return len(self.index.frames)

    @property
    def image_hashes(self) -> int:
        return len(self.index.image_phashes)

    def __len__(self) -> int:
        return self.video_hashes + self.image_hashes

    def near(self, kind: ContentKind, hashes: Iterable[int], r: int) -> dict[str, int]:
        """Registered items of ``kind`` with a hash within ``r`` bits of any of ``hashes``: id -> best distance."""
        queries = list(hashes)
        if not queries:
            return {}
        if self.brute_force:
            return self._scan_near(kind, queries, r)
        table = self.index.frames if kind is ContentKind.VIDEO else self.index.image_phashes
        best: dict[str, int] = {}
        for hits in table.radius_many(queries, r):
            for hit in hits:
                content = self.index.item(hit.item_id).content_id
                best[content] = min(hit.distance, best.get(content, 64))
        return best

    def _scan_near(self, kind: ContentKind, queries: list[int], r: int) -> dict[str, int]:
        if kind not in self._scan:
            codes: list[int] = []
            owners: list[str] = []
            for item in self.index.media_items():
                media = item.fingerprint.media
                assert media is not None
                if media.kind is not kind:
                    continue
                found = [f.phash for f in media.frame_hashes] if kind is ContentKind.VIDEO else \
                    [media.image_phash] if media.image_phash is not None else []
                codes += found
                owners += [item.content_id] * len(found)
            self._scan[kind] = (np.array(codes, dtype=np.uint64), owners)
        codes_array, owners = self._scan[kind]
        best: dict[str, int] = {}
        for q in queries:
            distances = np.bitwise_count(codes_array ^ np.uint64(q))
            for i in np.nonzero(distances <= r)[0].tolist():
                best[owners[i]] = min(int(distances[i]), best.get(owners[i], 64))
        return best
