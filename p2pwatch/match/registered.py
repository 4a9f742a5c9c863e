"""Registered items as the matcher holds them: a slim entry in memory, the bulky hashes read on demand.

A fingerprint's v2 leaf hashes (32 bytes per 16 KiB block: ~2 MB for 1 GB) and its v1 piece tables (BEP 3,
one per candidate piece length) are what the exact stages compare, but only for the registered items whose
size equals a torrent file's. Held whole for every registered item they would need 100+ GB of memory for
100,000 videos, so the registry keeps a :class:`SlimFingerprint` per item (size, kind, the BEP 52 pieces root,
the media hashes of the perceptual stage) and a :class:`TableCache` reads the full fingerprint of the few
items a torrent's file sizes select, through a :data:`TableLoader` (a database read, run in a worker thread
by :meth:`TableCache.prefetch` and :meth:`TableCache.full`), keeping the most recently used ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from p2pwatch.errors import FingerprintError
from p2pwatch.match.fingerprint import Fingerprint, check_document_header
from p2pwatch.match.media_types import ContentKind, MediaFingerprint

#: content ids -> their full fingerprints (ids no longer stored are left out)
TableLoader = Callable[[Sequence[str]], Mapping[str, Fingerprint]]


@dataclass(frozen=True)
class SlimFingerprint:
    """What the registry index keeps of a stored fingerprint: everything but the leaf hashes and v1 tables."""

    size: int
    sha256: str
    sha1: str
    kind: ContentKind
    root: bytes  # BEP 52 pieces root, as stated by the document (checked when it was registered)
    media: MediaFingerprint | None = None

    @property
    def fingerprint_id(self) -> str:
        return self.sha256

    def pieces_root(self) -> bytes:
        return self.root

    @classmethod
    def from_json(cls, doc: Any) -> SlimFingerprint:
        """The slim part of a stored fingerprint document (docs/fingerprint-format.md), without inflating
        its packed hashes; raises :class:`FingerprintError` on a malformed document."""
        check_document_header(doc)
        try:
            root = bytes.fromhex(doc["v2"]["pieces_root"])
            if len(root) != 32:
                raise ValueError(f"a pieces root of {len(root)} bytes")
            media = None if doc.get("media") is None else MediaFingerprint.from_json(doc["media"])
            return cls(size=int(doc["size"]), sha256=str(doc["sha256"]), sha1=str(doc["sha1"]),
                       kind=ContentKind(doc["kind"]), root=root, media=media)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FingerprintError(f"malformed fingerprint: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class RegisteredContent:
    """One registered item as the matcher sees it: hashes only. ``fingerprint`` is the full fingerprint or,
    for items loaded from the store, its slim part (the bulky hashes come from a :class:`TableCache`)."""

    content_id: str  # the content row id (or, for in-memory registries, the fingerprint id)
    case: str
    fingerprint: Fingerprint | SlimFingerprint


class TableCache:
    """Full fingerprints of recently selected slim items: at most ``max_items`` and ``max_bytes`` of hashes,
    least recently used dropped first. Mutated only in the thread that matches (the trio thread); the store
    is read in a worker thread, by :meth:`prefetch` for a torrent's whole selection and by :meth:`full` for an
    item not held (a selection larger than the cache, or one dropped since)."""

    def __init__(self, loader: TableLoader, *, max_items: int = 512, max_bytes: int = 512 << 20) -> None:
        self.loader = loader
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._held: OrderedDict[str, Fingerprint] = OrderedDict()
        self._bytes = 0
        self.loads = 0  # items read from the store (a figure for benchmarks and tests)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, content_id: object) -> bool:
        return content_id in self._held

    def missing(self, items: Iterable[RegisteredContent]) -> list[str]:
        return list(dict.fromkeys(i.content_id for i in items
                                  if isinstance(i.fingerprint, SlimFingerprint) and i.content_id not in self._held))

    async def full(self, item: RegisteredContent) -> Fingerprint | None:
        """The item's full fingerprint: the item's own when it is held whole, else the cached one (read now,
        in a worker thread, if :meth:`prefetch` did not or it was dropped since); None when the store no
        longer has it (withdrawn since the index was read). The one place that tells a whole item from a
        slim one for the matcher (:meth:`p2pwatch.match.matcher.RegistryIndex.full` asks here)."""
        if isinstance(item.fingerprint, Fingerprint):
            return item.fingerprint
        held = self._held.get(item.content_id)
        if held is None:
            loaded = await trio.to_thread.run_sync(self.loader, [item.content_id])
            self.put(loaded)  # may drop it again at once (larger than max_bytes): the answer is what was read
            held = loaded.get(item.content_id)
        else:
            self._held.move_to_end(item.content_id)
        if held is None or (held.sha256, held.size) != (item.fingerprint.sha256, item.fingerprint.size):
            return None  # withdrawn (and its row id perhaps reused) since the index was read
        return held

    def put(self, loaded: Mapping[str, Fingerprint]) -> None:
        for content_id, fp in loaded.items():
            old = self._held.pop(content_id, None)
            if old is not None:
                self._bytes -= _weight(old)
            self._held[content_id] = fp
            self._bytes += _weight(fp)
            self.loads += 1
        while self._held and (len(self._held) > self.max_items or self._bytes > self.max_bytes):
            _, dropped = self._held.popitem(last=False)
            self._bytes -= _weight(dropped)

    def discard(self, content_id: str) -> None:
        dropped = self._held.pop(content_id, None)
        if dropped is not None:
            self._bytes -= _weight(dropped)

    async def prefetch(self, items: Iterable[RegisteredContent]) -> None:
        """Read the full fingerprints of ``items`` not held yet, in a worker thread (the store is a database)."""
        wanted = self.missing(items)
        if wanted:
            self.put(await trio.to_thread.run_sync(self.loader, wanted))


def no_tables(content_ids: Sequence[str]) -> Mapping[str, Fingerprint]:
    """The :data:`TableLoader` of a registry held whole in memory: no store, so no slim item is read."""
    return {}


def _weight(fp: Fingerprint) -> int:
    return len(fp.leaf_hashes) + sum(len(t) for t in fp.v1_piece_tables.values())
