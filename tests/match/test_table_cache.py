"""Whole and slim registered items through the one :meth:`TableCache.full`; a slim index's piece tables read
from a (synthetic, in-memory) store in a worker thread, also when a torrent selects more items than the cache
holds (the overflow path)."""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from p2pwatch.match.fingerprint import Fingerprint, fingerprint_file
from p2pwatch.match.matcher import METHOD_EXACT_METADATA, RegistryIndex, exact_metadata_matches, match_torrent
from p2pwatch.match.registered import RegisteredContent, SlimFingerprint, TableCache
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent


def slim(fp: Fingerprint) -> SlimFingerprint:
    return SlimFingerprint(size=fp.size, sha256=fp.sha256, sha1=fp.sha1, kind=fp.kind, root=fp.pieces_root(),
                           media=fp.media)


class Store:
    """A synthetic store of full fingerprints by content id, counting what it is asked for."""

    def __init__(self, fingerprints: Mapping[str, Fingerprint]) -> None:
        self.fingerprints = dict(fingerprints)
        self.asked: list[list[str]] = []

        self.threads: set[bool] = set()  # True: a call in the main (trio) thread

    def __call__(self, content_ids: Sequence[str]) -> Mapping[str, Fingerprint]:
        self.asked.append(list(content_ids))
        self.threads.add(threading.current_thread() is threading.main_thread())
        return {c: self.fingerprints[c] for c in content_ids if c in self.fingerprints}


async def test_an_index_of_whole_items_answers_from_the_items_and_reads_nothing() -> None:
    rng = random.Random(1)
    items = [RegisteredContent(f"c{i}", "case", synthetic_fingerprint(rng, 40_000 + i)) for i in range(3)]
    index = RegistryIndex(items)
    assert [await index.full(i) for i in items] == [i.fingerprint for i in items]
    assert index.tables.loads == 0 and len(index.tables) == 0
    # a slim item in an index with no store behind it has no full fingerprint to give
    lone = RegisteredContent("s", "case", slim(synthetic_fingerprint(rng, 50_000)))
    index.add(lone)
    assert await index.full(lone) is None


async def test_a_slim_item_is_read_through_the_cache_and_a_whole_one_is_not() -> None:
    rng = random.Random(2)
    whole = RegisteredContent("w", "case", synthetic_fingerprint(rng, 40_000))
    stored = synthetic_fingerprint(rng, 41_000)
    item = RegisteredContent("s", "case", slim(stored))
    store = Store({"s": stored})
    index = RegistryIndex([whole, item])
    index.tables = TableCache(store)
    assert await index.full(whole) is whole.fingerprint and store.asked == []
    assert await index.full(item) == stored and await index.full(item) == stored
    assert store.asked == [["s"]] and index.tables.loads == 1
    # withdrawn from the store (and its row id reused by other content): no full fingerprint
    store.fingerprints["s"] = synthetic_fingerprint(rng, 41_000)
    index.tables.discard("s")
    assert await index.full(item) is None


def _crowded(tmp_path: Path, others: int) -> tuple[Metainfo, str, RegistryIndex, Store]:
    """A slim registry of ``others`` synthetic items and one real file, all of one size, behind a store; a v1
    torrent of the real file (so its one file size selects every item)."""
    rng = random.Random(3)
    real = tmp_path / "real.bin"
    real.write_bytes(rng.randbytes(40_000))
    fps = {f"x{i:04}": synthetic_fingerprint(rng, 40_000) for i in range(others)}
    fps["real"] = fingerprint_file(real, media=False)
    store = Store(fps)
    index = RegistryIndex([RegisteredContent(c, "case", slim(fp)) for c, fp in fps.items()])
    index.tables = TableCache(store)  # the default bounds: 512 items
    meta = parse_torrent(make_v1_torrent("t", [("copy.bin", real)], piece_length=16384))
    return meta, "real", index, store


async def test_a_selection_larger_than_the_cache_matches_and_reads_only_in_worker_threads(tmp_path: Path) -> None:
    meta, real, index, store = _crowded(tmp_path, others=600)
    assert len(index.by_size[40_000]) == 601 > index.tables.max_items
    found = await exact_metadata_matches(index, meta)
    assert [(m.content_id, m.method) for m in found] == [(real, METHOD_EXACT_METADATA)]
    assert store.threads == {False}  # never in the trio thread
    # the items the cache could not keep were read one by one (the overflow path), all of them compared
    assert len(index.tables) == index.tables.max_items
    assert sum(len(ids) for ids in store.asked) == index.tables.loads >= 601
    # and so through the whole matcher, prefetch first (one read of the selection, then the overflow)
    store.asked.clear()
    report = await match_torrent(index, meta, None)
    assert [(m.content_id, m.method) for m in report.matches] == [(real, METHOD_EXACT_METADATA)]
    assert len(store.asked[0]) > 1 and store.threads == {False}


async def test_a_selection_the_cache_holds_is_read_once(tmp_path: Path) -> None:
    meta, real, index, store = _crowded(tmp_path, others=20)
    for _ in range(2):
        report = await match_torrent(index, meta, None)
        assert [m.content_id for m in report.matches] == [real]
    assert len(store.asked) == 1 and len(store.asked[0]) == 21 and store.threads == {False}


async def test_an_item_larger_than_the_cache_is_still_compared(tmp_path: Path) -> None:
    """A fingerprint heavier than ``max_bytes`` is dropped as soon as it is read; the read is still used."""
    meta, real, index, store = _crowded(tmp_path, others=2)
    index.tables = TableCache(store, max_bytes=1)
    found = await exact_metadata_matches(index, meta)
    assert [m.content_id for m in found] == [real] and len(index.tables) == 0
