"""An exact Hamming-radius index of registered perceptual hashes (64-bit pHash, 256-bit PDQ).

Multi-index hashing (Norouzi, Punjani and Fleet, "Fast Exact Search in Hamming Space with Multi-Index
Hashing", IEEE TPAMI 2014) over numpy: every hash is cut into ``m`` disjoint parts (64 bits: three parts of
21, 21 and 22 bits; 256 bits: sixteen of 16). Two hashes within ``r`` bits differ in at least one part by at
most ``r // m`` bits (pigeonhole), so probing, in one table per part, every bucket within ``r // m`` bits of the
query's part finds every hit; each candidate is then checked with its full Hamming distance. Hits are
therefore exactly those of a brute-force scan — never an approximation. When a radius is so large that
probing would cost more than a scan, the index scans instead (same answer).

Built incrementally: :meth:`HashIndex.add` appends to an unsorted buffer that is scanned directly; once it
holds ``buffer_rows`` hashes it is sealed into a sorted segment, and a segment is merged with the one before
it while that one is less than ``merge_ratio`` times larger (a logarithmic method: each hash is re-sorted
O(log n) times and a query visits O(log n) segments). :meth:`HashIndex.remove` marks rows dead; once dead rows
outnumber live ones the index is rebuilt from the live rows. Adding is O(1) amortised, never a rebuild of
the whole index per registered item.

Each table is a bucket array addressed directly by the part's low ``t`` bits (``t`` = the part width, or
fewer for a small segment so that the table stays about as large as the segment), holding the positions and
a copy of the hashes in bucket order so that a probe reads contiguous memory. docs/DECISIONS.md (issue 13)
has the measurements that chose this over faiss's binary indexes.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from p2pwatch.match import hash_probe

K = TypeVar("K", bound=Hashable)

#: Hashes kept unsorted (scanned directly) before they are sealed into a sorted segment.
DEFAULT_BUFFER_ROWS = 8192
#: A segment is merged into the one before it while that one is less than this many times larger.
DEFAULT_MERGE_RATIO = 8
#: Queries probed together in one vectorised pass (more only grows the intermediate arrays).
QUERY_BLOCK = 256


class Hit(NamedTuple, Generic[K]):
    """A registered hash within the radius: its item, its position in the item's hashes, its distance."""

    item_id: K
    frame_no: int
    distance: int


@functools.cache
def flip_masks(width: int, radius: int) -> np.ndarray:
    """Every ``width``-bit mask with at most ``radius`` bits set (``radius`` capped at ``width``)."""
    out = [0]
    for k in range(1, min(radius, width) + 1):
        out += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), k)]
    masks = np.array(out, dtype=np.uint64)
    masks.flags.writeable = False
    return masks


def _popcount(x: np.ndarray) -> np.ndarray:
    """Bits set per row of a (n,) or (n, words) uint64 array."""
    counts = np.bitwise_count(x)
    return counts.astype(np.int32) if counts.ndim == 1 else counts.sum(axis=1, dtype=np.int32)


@dataclass(frozen=True)
class _Part:
    word: int
    shift: int
    width: int


def _parts(words: int, per_word: int) -> tuple[_Part, ...]:
    """``per_word`` parts of each 64-bit word, as equal as they can be (narrower first)."""
    widths = [64 // per_word + (1 if k >= per_word - 64 % per_word else 0) for k in range(per_word)]
    shifts = [sum(widths[:k]) for k in range(per_word)]
    return tuple(_Part(w, shift, width) for w in range(words) for shift, width in zip(shifts, widths, strict=True))


@functools.cache
def _comb_sum(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


class _Segment:
    """Rows ``start`` to ``end`` of the index, sorted into one bucket table per part."""

    def __init__(self, codes: np.ndarray, start: int, end: int, parts: Sequence[_Part]) -> None:
        self.start, self.end = start, end
        n = end - start
        block = codes[start:end]
        self.table_bits = [min(p.width, max(1, math.ceil(math.log2(max(2, n))))) for p in parts]
        self.parts = tuple(parts)
        # table j's bucket offsets start at j * 2**T (T: the widest table), so a bucket's number in the
        # concatenation is its key XOR that base; the gap after a narrower table repeats its end, and each
        # table's end is the next one's start
        stride = 1 << max(self.table_bits)
        offsets = np.empty(len(parts) * stride + 1, dtype=np.int64)
        offsets[-1] = len(parts) * n
        orders = []
        self.table_base: list[int] = []
        for j, (part, bits) in enumerate(zip(parts, self.table_bits, strict=True)):
            keys = self._keys(block, part, bits)
            order = np.argsort(keys, kind="stable")
            counts = np.bincount(keys.astype(np.intp), minlength=1 << bits)
            base = j * stride
            offsets[base] = j * n
            np.cumsum(counts, out=offsets[base + 1 : base + 1 + (1 << bits)])
            offsets[base + 1 : base + 1 + (1 << bits)] += j * n
            offsets[base + 1 + (1 << bits) : base + stride] = (j + 1) * n
            orders.append(order)
            self.table_base.append(base)
        index_type = np.int32 if len(parts) * n < 2**31 else np.int64
        self.offsets = offsets.astype(index_type)
        self.positions = np.concatenate(orders).astype(index_type)  # local row of each bucket entry
        self.sorted_codes = block[self.positions]
        self.words = np.array([p.word for p in parts], dtype=np.intp)
        self.shifts = np.array([p.shift for p in parts], dtype=np.uint64)
        self.masks = np.array([(1 << bits) - 1 for bits in self.table_bits], dtype=np.uint64)
        self._plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._radii: dict[int, np.ndarray] = {}

    @staticmethod
    def _keys(codes: np.ndarray, part: _Part, bits: int) -> np.ndarray:
        column = codes if codes.ndim == 1 else codes[:, part.word]
        return (column >> np.uint64(part.shift)) & np.uint64((1 << bits) - 1)

    @property
    def size(self) -> int:
        return self.end - self.start

    def radii(self, radius: int) -> list[int]:
        """The probe radius of each part for a query radius: with ``r = m * rho + a`` (``a < m``) a hash within
        ``r`` bits is within ``rho`` bits in one of the first ``a + 1`` parts or within ``rho - 1`` in one
        of the others (else the distance would be at least ``m * rho + a + 1``); -1 means no probe."""
        m = len(self.parts)
        rho, extra = divmod(radius, m)
        return [rho if j <= extra else rho - 1 for j in range(m)]

    def probe_cost(self, radius: int) -> float:
        """Expected entries a probe reads per query (buckets visited plus their contents)."""
        n = self.size
        return float(sum(_comb_sum(bits, rho) * (1 + n / (1 << bits))
                         for bits, rho in zip(self.table_bits, self.radii(radius), strict=True) if rho >= 0))

    def _plan(self, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """For each bucket a query visits: the part it belongs to, and the bits flipped XOR the table's base."""
        plan = self._plans.get(radius)
        if plan is None:
            part_of, flips = [], []
            for j, (bits, rho, base) in enumerate(zip(self.table_bits, self.radii(radius), self.table_base,
                                                      strict=True)):
                if rho < 0:
                    continue
                masks = flip_masks(bits, rho)
                part_of.append(np.full(len(masks), j, dtype=np.intp))
                flips.append(masks ^ np.uint64(base))  # base has no bit below the table's width
            plan = (np.concatenate(part_of), np.concatenate(flips))
            self._plans[radius] = plan
        return plan

    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.positions.nbytes + self.sorted_codes.nbytes)

    def query_compiled(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`query` through the compiled loop (:mod:`p2pwatch.match.hash_probe`; 64-bit hashes): each
        row once."""
        part_of, flips = self._plan(radius)
        radii = self._radii.get(radius)
        if radii is None:
            radii = self._radii[radius] = np.array(self.radii(radius), dtype=np.int64)
        return hash_probe.probe(queries, self.shifts, self.masks, radii, part_of, flips, self.offsets,
                                self.positions, self.sorted_codes, radius, self.start)

    def query(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query number, row, distance) of every entry within ``radius``; a row may come more than once."""
        part_of, flips = self._plan(radius)
        words = queries[:, None] if queries.ndim == 1 else queries[:, self.words]
        keys = (words >> self.shifts) & self.masks  # (queries, parts)
        index = (keys[:, part_of] ^ flips).view(np.int64).ravel()
        starts = self.offsets[index]
        stops = self.offsets[index + 1]
        lengths = stops - starts
        ends = np.cumsum(lengths)
        total = int(ends[-1])
        if total == 0:
            return _EMPTY, _EMPTY, _EMPTY
        entry = np.repeat(stops - ends, lengths) + np.arange(total)
        if len(queries) == 1:
            dist = _popcount(self.sorted_codes[entry] ^ queries[0])
            near = dist <= radius
            return np.zeros(int(near.sum()), dtype=np.int64), self.positions[entry[near]] + self.start, dist[near]
        qid = np.repeat(np.arange(len(queries)), lengths.reshape(len(queries), -1).sum(axis=1))
        dist = _popcount(self.sorted_codes[entry] ^ queries[qid])
        near = dist <= radius
        return qid[near], self.positions[entry[near]].astype(np.int64) + self.start, dist[near]


_EMPTY = np.empty(0, dtype=np.int64)


class HashIndex(Generic[K]):
    """Registered hashes of ``bits`` bits (64: pHash, 256: PDQ), grouped by item, queried by Hamming radius.

    ``add(item, hashes)`` registers an item's hashes (``frame_no`` is a hash's position in ``hashes``);
    ``remove(item)`` withdraws them; ``radius`` and ``radius_many`` return every registered hash within ``r``
    bits (inclusive), exactly as a brute-force scan would. Hashes are ints (or, for more than 64 bits, also
    big-endian bytes). A segment is scanned instead of probed when a probe would read more than
    ``scan_factor`` times its size (the tests set it to infinity to probe at every radius). ``compiled``:
    probe through :mod:`p2pwatch.match.hash_probe` (default for 64-bit hashes when numba is installed)
    rather than with whole-array numpy operations; the answers are the same.
    """

    def __init__(self, bits: int = 64, *, buffer_rows: int = DEFAULT_BUFFER_ROWS,
                 merge_ratio: int = DEFAULT_MERGE_RATIO, scan_factor: float = 1.0,
                 parts_per_word: int | None = None, compiled: bool | None = None) -> None:
        if bits <= 0 or bits % 64:
            raise ValueError(f"hash width must be a positive multiple of 64 bits, not {bits}")
        self.bits = bits
        self.words = bits // 64
        self.buffer_rows = max(1, buffer_rows)
        self.merge_ratio = max(2, merge_ratio)
        self.scan_factor = scan_factor  # probe a segment while that reads fewer entries than this x its size
        self._parts = _parts(self.words, parts_per_word or (3 if self.words == 1 else 4))
        self.compiled = hash_probe.AVAILABLE and self.words == 1 if compiled is None else compiled
        shape: tuple[int, ...] = (1024,) if self.words == 1 else (1024, self.words)
        self._codes = np.zeros(shape, dtype=np.uint64)
        self._owner = np.zeros(1024, dtype=np.int32)  # item slot of each row
        self._frame = np.zeros(1024, dtype=np.int32)  # position of the row's hash in its item's hashes
        self._alive = np.zeros(1024, dtype=bool)
        self._rows = 0  # rows used
        self._live = 0
        self._items: dict[K, tuple[int, int, int]] = {}  # item -> (slot, first row, rows)
        self._slot_items: list[K | None] = []
        self._segments: list[_Segment] = []

    # --- registering -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Live (registered, not withdrawn) hashes."""
        return self._live

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    @property
    def item_count(self) -> int:
        return len(self._items)

    @property
    def segment_count(self) -> int:
        """Sorted segments (the unsorted buffer not counted)."""
        return len(self._segments)

    def add(self, item_id: K, hashes: Iterable[int | bytes] | np.ndarray) -> int:
        """Register ``item_id``'s hashes; returns how many. An item already registered is refused
        (``remove`` it first): its frame numbers would be ambiguous."""
        if item_id in self._items:
            raise ValueError(f"item {item_id!r} is already in the index")
        codes = self._to_codes(hashes)
        count = len(codes)
        self._reserve(self._rows + count)
        slot = len(self._slot_items)
        first = self._rows
        self._codes[first : first + count] = codes
        self._owner[first : first + count] = slot
        self._frame[first : first + count] = np.arange(count, dtype=np.int32)
        self._alive[first : first + count] = True
        self._rows += count
        self._live += count
        self._items[item_id] = (slot, first, count)
        self._slot_items.append(item_id)
        return count

    def remove(self, item_id: K) -> int:
        """Withdraw ``item_id``'s hashes; returns how many were removed (0 for an unknown item)."""
        entry = self._items.pop(item_id, None)
        if entry is None:
            return 0
        slot, first, count = entry
        self._alive[first : first + count] = False
        self._slot_items[slot] = None
        self._live -= count
        return count

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._owner):
            return
        capacity = max(rows, 2 * len(self._owner))
        grow = capacity - len(self._owner)
        pad = (grow,) if self.words == 1 else (grow, self.words)
        self._codes = np.concatenate([self._codes, np.zeros(pad, dtype=np.uint64)])
        self._owner = np.concatenate([self._owner, np.zeros(grow, dtype=np.int32)])
        self._frame = np.concatenate([self._frame, np.zeros(grow, dtype=np.int32)])
        self._alive = np.concatenate([self._alive, np.zeros(grow, dtype=bool)])

    def _to_codes(self, hashes: Iterable[int | bytes] | np.ndarray) -> np.ndarray:
        if isinstance(hashes, np.ndarray):
            codes = hashes.astype(np.uint64, copy=False)
            expected = 1 if self.words == 1 else 2
            if codes.ndim != expected or (self.words > 1 and codes.shape[1] != self.words):
                raise ValueError(f"expected an array of {self.bits}-bit hashes as {self.words} uint64 words")
            return codes
        values = list(hashes)
        if self.words == 1:
            for v in values:
                if not isinstance(v, int) or not 0 <= v < 1 << 64:
                    raise ValueError(f"not a 64-bit hash: {v!r}")
            return np.array(values, dtype=np.uint64)
        raw = b"".join(self._hash_bytes(v) for v in values)
        return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, self.words)

    def _hash_bytes(self, value: int | bytes) -> bytes:
        size = self.bits // 8
        if isinstance(value, bytes | bytearray) and len(value) == size:
            return bytes(value)
        if isinstance(value, int) and 0 <= value < 1 << self.bits:
            return value.to_bytes(size, "big")
        raise ValueError(f"not a {self.bits}-bit hash: {value!r}")

    # --- maintaining the segments ----------------------------------------------------------------------

    def _sealed(self) -> int:
        return self._segments[-1].end if self._segments else 0

    def _prepare(self) -> None:
        """Compact when dead rows outnumber live ones; seal a full buffer and merge segments."""
        dead = self._rows - self._live
        if dead > max(self._live, self.buffer_rows):
            self.compact()
            return
        if self._rows - self._sealed() < self.buffer_rows:
            return
        self._segments.append(_Segment(self._codes, self._sealed(), self._rows, self._parts))
        while len(self._segments) >= 2 and self._segments[-2].size < self.merge_ratio * self._segments[-1].size:
            newer = self._segments.pop()
            older = self._segments.pop()
            self._segments.append(_Segment(self._codes, older.start, newer.end, self._parts))

    def prepare(self) -> None:
        """Do now the sealing, merging or compaction the next query would do (e.g. after a bulk load, in a
        thread of its own before the index is shared)."""
        self._prepare()

    def compact(self) -> None:
        """Drop withdrawn rows and sort everything into one segment (also a bulk load's last step)."""
        alive = np.flatnonzero(self._alive[: self._rows])
        old_first = {item: first for item, (_, first, _) in self._items.items()}
        self._codes = self._codes[alive].copy()
        self._frame = self._frame[alive].copy()
        slots = self._owner[alive]
        keep = sorted(self._items.items(), key=lambda kv: kv[1][0])
        renumber = np.full(len(self._slot_items), -1, dtype=np.int32)
        self._slot_items = []
        new_first = np.searchsorted(alive, np.array([old_first[item] for item, _ in keep], dtype=np.int64))
        items: dict[K, tuple[int, int, int]] = {}
        for new_slot, ((item, (slot, _, count)), first) in enumerate(zip(keep, new_first, strict=True)):
            renumber[slot] = new_slot
            items[item] = (new_slot, int(first), count)
            self._slot_items.append(item)
        self._items = items
        self._owner = renumber[slots] if len(slots) else np.zeros(0, dtype=np.int32)
        self._alive = np.ones(len(alive), dtype=bool)
        self._rows = self._live = len(alive)
        self._segments = []
        self._reserve(max(1024, self._rows))
        if self._rows:
            self._segments.append(_Segment(self._codes, 0, self._rows, self._parts))

    def nbytes(self) -> int:
        """Bytes held by the index's arrays (the rows and every segment's tables)."""
        rows = self._codes.nbytes + self._owner.nbytes + self._frame.nbytes + self._alive.nbytes
        return int(rows + sum(s.nbytes() for s in self._segments))

    # --- querying --------------------------------------------------------------------------------------

    def query_arrays(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The vectorised core: for ``queries`` (uint64 codes) the (query number, row, distance) of every live
        registered hash within ``radius`` bits, each pair once, sorted by query, distance and row."""
        self._prepare()
        if radius < 0 or self._live == 0 or len(queries) == 0:
            return _EMPTY, _EMPTY, _EMPTY
        if len(queries) > QUERY_BLOCK:  # bounded intermediate arrays: blocks of queries stay in cache
            parts = [self._query_block(queries[lo : lo + QUERY_BLOCK], radius)
                     for lo in range(0, len(queries), QUERY_BLOCK)]
            qid = np.concatenate([p[0] + lo for p, lo in zip(parts, range(0, len(queries), QUERY_BLOCK),
                                                              strict=True)])
            return qid, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
        return self._query_block(queries, radius)

    def _query_block(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = []
        for segment in self._segments:
            if segment.probe_cost(radius) < self.scan_factor * segment.size:
                query = segment.query_compiled if self.compiled else segment.query
                found.append(query(queries, radius))
            else:
                found.append(self._scan(queries, segment.start, segment.end, radius))
        if self._sealed() < self._rows:
            found.append(self._scan(queries, self._sealed(), self._rows, radius))
        if len(found) == 1:
            qid, rows, dist = found[0]
        else:
            qid, rows, dist = (np.concatenate([f[k] for f in found]) for k in range(3))
        if len(rows) == 0:
            return _EMPTY, _EMPTY, _EMPTY
        live = self._alive[rows]
        if not live.all():
            qid, rows, dist = qid[live], rows[live], dist[live]
        if len(rows) > 1:
            order = np.lexsort((rows, dist, qid))
            qid, rows, dist = qid[order], rows[order], dist[order]
            # a row found through several parts repeats; its copies have the same distance, so are adjacent
            repeated = (qid[1:] == qid[:-1]) & (rows[1:] == rows[:-1])
            if repeated.any():
                keep = np.concatenate([[True], ~repeated])
                qid, rows, dist = qid[keep], rows[keep], dist[keep]
        return qid.astype(np.int64, copy=False), rows.astype(np.int64, copy=False), dist.astype(np.int64, copy=False)

    def _scan(self, queries: np.ndarray, start: int, end: int, radius: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block = self._codes[start:end]
        out_q, out_r, out_d = [], [], []
        step = max(1, (1 << 22) // max(1, end - start))  # bound the (queries x rows) distance matrix
        for lo in range(0, len(queries), step):
            q = queries[lo : lo + step]
            if self.words == 1:
                dist = np.bitwise_count(q[:, None] ^ block[None, :]).astype(np.int32)
            else:
                dist = np.bitwise_count(q[:, None, :] ^ block[None, :, :]).sum(axis=2, dtype=np.int32)
            qi, ri = np.nonzero(dist <= radius)
            out_q.append(qi + lo)
            out_r.append(ri + start)
            out_d.append(dist[qi, ri])
        if not out_q:
            return _EMPTY, _EMPTY, _EMPTY
        return np.concatenate(out_q), np.concatenate(out_r), np.concatenate(out_d)

    def _hits(self, rows: np.ndarray, dist: np.ndarray) -> list[Hit[K]]:
        owners, frames = self._owner[rows].tolist(), self._frame[rows].tolist()
        items = self._slot_items
        return [Hit(items[o], f, d) for o, f, d in zip(owners, frames, dist.tolist(), strict=True)]

    def radius(self, query_hash: int | bytes, r: int) -> list[Hit[K]]:
        """Every registered hash within ``r`` bits of ``query_hash``, nearest first (ties in registration
        order)."""
        _, rows, dist = self.query_arrays(self._to_codes([query_hash]), r)
        return self._hits(rows, dist)

    def radius_many(self, query_hashes: Sequence[int | bytes] | np.ndarray, r: int) -> list[list[Hit[K]]]:
        """:meth:`radius` for many query hashes at once (one vectorised pass): one list per query."""
        codes = self._to_codes(query_hashes)
        qid, rows, dist = self.query_arrays(codes, r)
        out: list[list[Hit[K]]] = [[] for _ in range(len(codes))]
        for q, hit in zip(qid.tolist(), self._hits(rows, dist), strict=True):
            out[q].append(hit)
        return out

    def items_near(self, query_hashes: Sequence[int | bytes] | np.ndarray, r: int) -> set[K]:
        """The items with at least one hash within ``r`` bits of any of ``query_hashes``."""
        _, rows, _ = self.query_arrays(self._to_codes(query_hashes), r)
        items = self._slot_items
        return {items[o] for o in set(self._owner[rows].tolist())}

    def nearest_any(self, query_hashes: Sequence[int | bytes] | np.ndarray, r: int) -> Hit[K] | None:
        """The nearest registered hash within ``r`` bits of any of ``query_hashes`` (None when there is
        none): the one-keyframe rejection's question."""
        _, rows, dist = self.query_arrays(self._to_codes(query_hashes), r)
        if len(rows) == 0:
            return None
        best = int(np.lexsort((rows, dist))[0])
        return self._hits(rows[best : best + 1], dist[best : best + 1])[0]
