"""Whole and slim registered items through the one :meth:`TableCache.full`, the registry index's piece tables
read from a (synthetic, in-memory) store."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.match.matcher import RegistryIndex
from p2pwatch.match.registered import RegisteredContent, SlimFingerprint, TableCache
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint


def slim(fp: Fingerprint) -> SlimFingerprint:
    return SlimFingerprint(size=fp.size, sha256=fp.sha256, sha1=fp.sha1, kind=fp.kind, root=fp.pieces_root(),
                           media=fp.media)


class Store:
    """A synthetic store of full fingerprints by content id, counting what it is asked for."""

    def __init__(self, fingerprints: Mapping[str, Fingerprint]) -> None:
        self.fingerprints = dict(fingerprints)
        self.asked: list[list[str]] = []

    def __call__(self, content_ids: Sequence[str]) -> Mapping[str, Fingerprint]:
        self.asked.append(list(content_ids))
        return {c: self.fingerprints[c] for c in content_ids if c in self.fingerprints}


def test_an_index_of_whole_items_answers_from_the_items_and_reads_nothing() -> None:
    rng = random.Random(1)
    items = [RegisteredContent(f"c{i}", "case", synthetic_fingerprint(rng, 40_000 + i)) for i in range(3)]
    index = RegistryIndex(items)
    assert [index.full(i) for i in items] == [i.fingerprint for i in items]
    assert index.tables.loads == 0 and len(index.tables) == 0
    # a slim item in an index with no store behind it has no full fingerprint to give
    lone = RegisteredContent("s", "case", slim(synthetic_fingerprint(rng, 50_000)))
    index.add(lone)
    assert index.full(lone) is None


def test_a_slim_item_is_read_through_the_cache_and_a_whole_one_is_not() -> None:
    rng = random.Random(2)
    whole = RegisteredContent("w", "case", synthetic_fingerprint(rng, 40_000))
    stored = synthetic_fingerprint(rng, 41_000)
    item = RegisteredContent("s", "case", slim(stored))
    store = Store({"s": stored})
    index = RegistryIndex([whole, item])
    index.tables = TableCache(store)
    assert index.full(whole) is whole.fingerprint and store.asked == []
    assert index.full(item) == stored and index.full(item) == stored
    assert store.asked == [["s"]] and index.tables.loads == 1
    # withdrawn from the store (and its row id reused by other content): no full fingerprint
    store.fingerprints["s"] = synthetic_fingerprint(rng, 41_000)
    index.tables.discard("s")
    assert index.full(item) is None
