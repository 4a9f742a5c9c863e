"""The registered-hash index answers radius queries exactly as a brute-force scan does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch.match import hash_probe
from p2pwatch.match.hash_index import HashIndex, Hit, flip_masks
from tests.conftest import require_component

#: The numpy probe always; the compiled one where numba is installed (a dependency: CI has it).
COMPILED = [False, True] if hash_probe.AVAILABLE else [False]


def brute(registered: dict[int, list[int]], query: int, r: int) -> set[tuple[int, int, int]]:
    return {(item, frame, (h ^ query).bit_count()) for item, hashes in registered.items()
            for frame, h in enumerate(hashes) if (h ^ query).bit_count() <= r}


def near(base: int, flips: list[int], bits: int) -> int:
    for b in flips:
        base ^= 1 << (b % bits)
    return base


def hashes_near(bits: int) -> st.SearchStrategy[int]:
    """Hashes clustered around a few centres, so small radii have hits (uniform hashes rarely would)."""
    centres = [0, (1 << bits) - 1, int("5a" * (bits // 8), 16), int("c3" * (bits // 8), 16)]
    return st.one_of(
        st.integers(0, (1 << bits) - 1),
        st.builds(near, st.sampled_from(centres), st.lists(st.integers(0, bits - 1), max_size=20), st.just(bits)),
    )


def operations(bits: int) -> st.SearchStrategy[list[tuple[str, int, list[int], int]]]:
    add = st.tuples(st.just("add"), st.integers(0, 30), st.lists(hashes_near(bits), min_size=1, max_size=40),
                    st.just(0))
    remove = st.tuples(st.just("remove"), st.integers(0, 30), st.just([]), st.just(0))
    query = st.tuples(st.just("query"), st.just(0), st.lists(hashes_near(bits), min_size=1, max_size=4),
                      st.one_of(st.integers(0, bits // 4), st.integers(0, bits)))  # mostly the probed radii
    return st.lists(st.one_of(add, add, remove, query), min_size=4, max_size=40)


def run_against_brute_force(bits: int, ops: list[tuple[str, int, list[int], int]], buffer_rows: int,
                            scan_factor: float, compiled: bool = False) -> None:
    index: HashIndex[int] = HashIndex(bits, buffer_rows=buffer_rows, merge_ratio=2, scan_factor=scan_factor,
                                      compiled=compiled)
    registered: dict[int, list[int]] = {}
    for op, item, hashes, r in ops:
        if op == "add":
            if item in registered:
                with pytest.raises(ValueError):
                    index.add(item, hashes)
                continue
            assert index.add(item, hashes) == len(hashes)
            registered[item] = hashes
        elif op == "remove":
            assert index.remove(item) == len(registered.pop(item, []))
        else:
            many = index.radius_many(hashes, r)
            for query, hits in zip(hashes, many, strict=True):
                expected = brute(registered, query, r)
                assert {tuple(h) for h in hits} == expected
                assert len(hits) == len(expected)  # each registered hash once
                assert [h.distance for h in hits] == sorted(h.distance for h in hits)
                assert {tuple(h) for h in index.radius(query, r)} == expected
            everything = set().union(*(brute(registered, q, r) for q in hashes))
            assert index.items_near(hashes, r) == {item for item, _, _ in everything}
            best = index.nearest_any(hashes, r)
            if everything:
                assert best is not None and best.distance == min(d for _, _, d in everything)
            else:
                assert best is None
        assert len(index) == sum(len(h) for h in registered.values())


@settings(max_examples=200, deadline=None)
@given(ops=operations(64), buffer_rows=st.sampled_from([1, 3, 8, 1000]),
       scan_factor=st.sampled_from([1.0, float("inf")]), compiled=st.sampled_from(COMPILED))
def test_phash_index_equals_brute_force(ops: list[tuple[str, int, list[int], int]], buffer_rows: int,
                                        scan_factor: float, compiled: bool) -> None:
    run_against_brute_force(64, ops, buffer_rows, scan_factor, compiled)


@settings(max_examples=100, deadline=None)
@given(ops=operations(256), buffer_rows=st.sampled_from([1, 5, 1000]),
       scan_factor=st.sampled_from([1.0, float("inf")]))
def test_pdq_index_equals_brute_force(ops: list[tuple[str, int, list[int], int]], buffer_rows: int,
                                      scan_factor: float) -> None:
    run_against_brute_force(256, ops, buffer_rows, scan_factor)


@pytest.mark.parametrize("compiled", COMPILED)
def test_large_index_matches_numpy_brute_force_at_matcher_thresholds(compiled: bool) -> None:
    rng = np.random.default_rng(13)
    codes = rng.integers(0, 2**64 - 1, 60_000, dtype=np.uint64, endpoint=True)
    index: HashIndex[int] = HashIndex(64, buffer_rows=4096, compiled=compiled)
    for item in range(0, len(codes), 100):
        index.add(item, codes[item : item + 100])
    flips = rng.integers(0, 64, (300, 6)).astype(np.uint64)
    queries = codes[rng.integers(0, len(codes), 300)]
    for k in range(6):
        queries = queries ^ (np.uint64(1) << flips[:, k])
    for r in (6, 8, 10, 12):
        qid, rows, dist = index.query_arrays(queries, r)
        got = set(zip(qid.tolist(), rows.tolist(), dist.tolist(), strict=True))
        d = np.bitwise_count(queries[:, None] ^ codes[None, :])
        q, row = np.nonzero(d <= r)
        want = set(zip(q.tolist(), row.tolist(), d[q, row].tolist(), strict=True))
        assert got == want and len(got) == len(qid)
        assert len(got) >= 250  # most queries are within 6 bits of a registered hash
    assert index._segments and all(s.probe_cost(12) < s.size for s in index._segments)  # probed, not scanned


def test_withdrawn_item_no_longer_hits_and_compaction_keeps_the_rest() -> None:
    index: HashIndex[str] = HashIndex(64, buffer_rows=2)
    index.add("a", [0x0F, 0xFF00])
    index.add("b", [0x0E])
    index.add("c", [0xFFFF_FFFF_FFFF_FFFF])
    assert {h.item_id for h in index.radius(0x0F, 1)} == {"a", "b"}
    assert index.remove("a") == 2
    assert index.remove("a") == 0
    assert index.radius(0x0F, 1) == [Hit("b", 0, 1)]
    assert "a" not in index and len(index) == 2
    index.compact()
    assert index.radius(0x0F, 1) == [Hit("b", 0, 1)]
    assert index.radius(0xFFFF_FFFF_FFFF_FFFE, 1) == [Hit("c", 0, 1)]
    index.add("a", [0x0F])  # registered again after withdrawal
    assert index.radius(0x0F, 0) == [Hit("a", 0, 0)]


def test_pdq_bytes_and_ints_are_the_same_hash() -> None:
    index: HashIndex[str] = HashIndex(256)
    value = int("ab" * 32, 16)
    index.add("img", [value.to_bytes(32, "big")])
    assert index.radius(value ^ 0b111, 3) == [Hit("img", 0, 3)]
    assert index.radius((value ^ 1).to_bytes(32, "big"), 0) == []


def test_bad_hashes_are_refused() -> None:
    index: HashIndex[str] = HashIndex(64)
    with pytest.raises(ValueError):
        index.add("x", [1 << 64])
    with pytest.raises(ValueError):
        index.add("y", [-1])
    with pytest.raises(ValueError):
        HashIndex(100)
    with pytest.raises(ValueError):
        HashIndex(256).add("z", [b"short"])
    assert len(index) == 0


def test_flip_masks_count_every_mask_once() -> None:
    masks = flip_masks(10, 2)
    assert len(masks) == 1 + 10 + 45 == len(set(masks.tolist()))
    assert max(int(m).bit_count() for m in masks) == 2


def test_the_compiled_probe_is_the_default_for_phash() -> None:
    require_component("numba", hash_probe.AVAILABLE, "pip install numba")
    assert HashIndex(64).compiled is hash_probe.AVAILABLE
    assert not HashIndex(256).compiled
