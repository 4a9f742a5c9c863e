"""The matcher: does a torrent carry registered content? Cheapest stage first (DESIGN.md, principles 5–6).

1. Names: keyword hits in the torrent name and file paths make a *candidate*, never a match.
2. ``exact-metadata`` (zero content bytes): a v2/hybrid file whose pieces root equals a registered root;
   a v1 file of a registered size that starts on a piece boundary and whose piece hashes equal the
   registered SHA-1 table for that piece length.
3. ``exact-piece``: a file of a registered size at an unaligned offset (multi-file v1 torrents): fetch the
   fewest pieces that cover at least one whole 16 KiB-aligned block of the file, verify them against the
   metainfo, and compare every whole block inside them with the registered v2 leaf layer. A same-size file
   with different bytes fails here.
4. ``perceptual`` (:mod:`p2pwatch.match.perceptual`): image and video files, whatever their name or size.

Every :class:`Match` records its method, a proof that a verifier can re-check, and the bytes fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.match.hash_index import HashIndex
from p2pwatch.match.keywords import keyword_hits
from p2pwatch.match.media_types import ContentKind
from p2pwatch.match.registered import RegisteredContent, TableCache, no_tables
from p2pwatch.torrent.merkle import BLOCK_SIZE
from p2pwatch.torrent.metainfo import FileEntry, Metainfo

METHOD_EXACT_METADATA = "exact-metadata"
METHOD_EXACT_PIECE = "exact-piece"
METHOD_PERCEPTUAL = "perceptual"


@dataclass(frozen=True)
class Candidate:
    """A keyword hit: a reason to look closer, not a match."""

    case: str
    keyword: str
    text: str


@dataclass(frozen=True)
class Match:
    case: str
    content_id: str
    infohash: str
    file_index: int
    file_path: str
    method: str
    proof: dict[str, Any]
    bytes_fetched: int


@dataclass(frozen=True)
class Rejection:
    """A same-size file checked at the exact-piece stage whose bytes differ (recorded, not a match)."""

    content_id: str
    file_path: str
    reason: str
    bytes_fetched: int


class PieceSource(Protocol):
    """Where verified pieces come from (a libtorrent reader or single-peer probes)."""

    async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, Any]: ...

    def downloaded(self) -> int: ...


class RegistryIndex:
    """Registered content indexed for every stage: pieces roots and sizes for the exact stages, every
    registered frame and image hash in one exact Hamming index (:mod:`p2pwatch.match.hash_index`) for the
    perceptual stage, plus case keywords for stage 1.

    Built incrementally: :meth:`add` and :meth:`remove` cost the item's own hashes, never a pass over the
    registry. Items are keyed by a sequence number in registration order, which is also the order the
    perceptual stage reports matches in.
    """

    def __init__(self, contents: Iterable[RegisteredContent], keywords: Mapping[str, Sequence[str]] | None = None
                 ) -> None:
        self.keywords = {case: list(words) for case, words in (keywords or {}).items()}
        self.by_root: dict[bytes, list[RegisteredContent]] = {}
        self.by_size: dict[int, list[RegisteredContent]] = {}
        self.frames: HashIndex[int] = HashIndex(64)  # video frame pHashes; frame_no indexes frame_hashes
        self.image_phashes: HashIndex[int] = HashIndex(64)
        self.image_pdqs: HashIndex[int] = HashIndex(256)
        self._items: dict[int, RegisteredContent] = {}
        self._by_content: dict[str, list[int]] = {}
        self._roots: dict[int, bytes] = {}
        self._media_kinds: dict[int, ContentKind] = {}  # the media kind of each image or video
        self._kind_counts: dict[ContentKind, int] = {}
        self._next = 0
        #: the full fingerprints of held items, and where those of slim items are read from (by default
        #: nowhere: an index built from whole fingerprints has no store behind it)
        self.tables = TableCache(no_tables)
        for item in contents:
            self.add(item)

    # --- registering ---

    def add(self, item: RegisteredContent, *, pieces_root: bytes | None = None) -> int:
        """Index one registered item; returns its sequence number. ``pieces_root``: the fingerprint's, when
        the caller computed it already (it hashes every leaf). All or nothing: an item that fails to index
        (e.g. a hash the hash index refuses) leaves no part of it behind, so adding it again doubles nothing."""
        seq = self._next
        self._next += 1
        try:
            self._index(seq, item, pieces_root)
        except BaseException:
            self._unindex(seq, item)
            raise
        return seq

    def _index(self, seq: int, item: RegisteredContent, pieces_root: bytes | None) -> None:
        self._items[seq] = item
        self._by_content.setdefault(item.content_id, []).append(seq)
        fp = item.fingerprint
        if fp.size > 0:
            self._roots[seq] = pieces_root if pieces_root is not None else fp.pieces_root()
            self.by_root.setdefault(self._roots[seq], []).append(item)
            self.by_size.setdefault(fp.size, []).append(item)
        media = fp.media
        if media is not None:
            self._media_kinds[seq] = media.kind
            if media.frame_hashes and media.kind is ContentKind.VIDEO:
                self.frames.add(seq, [f.phash for f in media.frame_hashes])
            if media.image_phash is not None:
                self.image_phashes.add(seq, [media.image_phash])
            if media.image_pdq is not None:
                self.image_pdqs.add(seq, [media.image_pdq])
            if self.comparable(seq, media.kind):  # last: nothing after it can fail
                self._kind_counts[media.kind] = self._kind_counts.get(media.kind, 0) + 1

    def _unindex(self, seq: int, item: RegisteredContent) -> None:
        """Undo a partial :meth:`_index` of ``seq`` (its kind count is the last step, never reached)."""
        self._items.pop(seq, None)
        seqs = self._by_content.get(item.content_id, [])
        if seq in seqs:
            seqs.remove(seq)
        if not seqs:
            self._by_content.pop(item.content_id, None)
        root = self._roots.pop(seq, None)
        if root is not None:
            _drop(self.by_root, root, item)
        _drop(self.by_size, item.fingerprint.size, item)
        self._media_kinds.pop(seq, None)
        for hashes in (self.frames, self.image_phashes, self.image_pdqs):
            hashes.remove(seq)

    def remove(self, content_id: str) -> int:
        """Withdraw every item registered under ``content_id``; returns how many."""
        seqs = self._by_content.pop(content_id, [])
        for seq in seqs:
            item = self._items.pop(seq)
            fp = item.fingerprint
            if fp.size > 0:
                _drop(self.by_root, self._roots.pop(seq), item)
                _drop(self.by_size, fp.size, item)
            kind = self._media_kinds.get(seq)
            if kind is not None and self.comparable(seq, kind):
                self._kind_counts[kind] -= 1
            self._media_kinds.pop(seq, None)
            self.tables.discard(item.content_id)
            for hashes in (self.frames, self.image_phashes, self.image_pdqs):
                hashes.remove(seq)
        return len(seqs)

    def set_keywords(self, case: str, words: Sequence[str]) -> None:
        """Replace a case's keywords (none: the case has no keywords any more)."""
        if words:
            self.keywords[case] = list(words)
        else:
            self.keywords.pop(case, None)

    def prepare(self) -> None:
        """Sort what was added into the hash indexes now rather than at the next lookup."""
        for hashes in (self.frames, self.image_phashes, self.image_pdqs):
            hashes.prepare()

    # --- reading ---

    def __len__(self) -> int:
        return len(self._items)

    @property
    def contents(self) -> list[RegisteredContent]:
        """Every registered item in registration order (a copy: O(n), not for per-torrent use)."""
        return list(self._items.values())

    def item(self, seq: int) -> RegisteredContent:
        return self._items[seq]

    def seqs_of(self, content_id: str) -> list[int]:
        return list(self._by_content.get(content_id, ()))

    async def full(self, item: RegisteredContent) -> Fingerprint | None:
        """The item's full fingerprint (leaf hashes, v1 tables): held, or read through :attr:`tables`
        (:meth:`TableCache.full`, in a worker thread); None when the store no longer has it."""
        return await self.tables.full(item)

    async def prefetch(self, metainfo: Metainfo) -> None:
        """Read, in a worker thread, the full fingerprints the exact stages will compare for this torrent:
        the registered items of a v1 file's size (v2 files match by pieces root, which the slim entry holds)."""
        if not metainfo.piece_hashes:
            return
        sizes = {f.length for f in metainfo.files if not f.pad and f.length > 0}
        await self.tables.prefetch(item for size in sizes for item in self.by_size.get(size, ()))

    def has_media(self) -> bool:
        return bool(self._media_kinds)

    def media_items(self) -> list[RegisteredContent]:
        return [self._items[seq] for seq in self._media_kinds]

    def media_kind(self, seq: int) -> ContentKind | None:
        return self._media_kinds.get(seq)

    def comparable(self, seq: int, kind: ContentKind) -> bool:
        """Can a candidate of ``kind`` be compared with item ``seq``: a registered image, or a registered
        video with frame hashes?"""
        if self._media_kinds.get(seq) is not kind:
            return False
        return kind is not ContentKind.VIDEO or seq in self.frames

    def comparable_count(self, kind: ContentKind) -> int:
        """How many registered items :meth:`comparable` accepts for ``kind``."""
        return self._kind_counts.get(kind, 0)


def _drop(table: dict[Any, list[RegisteredContent]], key: Any, item: RegisteredContent) -> None:
    bucket = table.get(key)
    if bucket is None:
        return
    bucket[:] = [i for i in bucket if i is not item]
    if not bucket:
        del table[key]


def name_candidates(index: RegistryIndex, metainfo: Metainfo) -> list[Candidate]:
    """Stage 1: keyword hits in the torrent name and every file path."""
    texts = [metainfo.name, *(f.display_path for f in metainfo.files if not f.pad)]
    out: list[Candidate] = []
    for case, words in index.keywords.items():
        for hit in keyword_hits(words, texts):
            out.append(Candidate(case, hit.keyword, hit.text))
    return out


def _hexs(hashes: Sequence[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


async def exact_metadata_matches(index: RegistryIndex, metainfo: Metainfo) -> list[Match]:
    """Stage 2: matches proven by the metainfo alone (0 bytes fetched). A slim index's v1 tables come through
    :meth:`RegistryIndex.full` (read in a worker thread when :meth:`RegistryIndex.prefetch` did not)."""
    matches: list[Match] = []
    infohash = metainfo.infohash.hex()
    P = metainfo.piece_length
    for f in metainfo.files:
        if f.pad or f.length == 0:
            continue
        seen: set[str] = set()
        if f.pieces_root is not None:
            for item in index.by_root.get(f.pieces_root, []):
                seen.add(item.content_id)
                matches.append(Match(item.case, item.content_id, infohash, f.index, f.display_path,
                                     METHOD_EXACT_METADATA, {
                                         "kind": "v2-pieces-root", "pieces_root": f.pieces_root.hex(),
                                         "file_length": f.length, "infohash_v2": _opt_hex(metainfo.infohash_v2),
                                     }, 0))
        if not metainfo.piece_hashes or f.offset % P:
            continue
        for item in index.by_size.get(f.length, []):
            if item.content_id in seen:
                continue
            fp = await index.full(item)
            if fp is None or not fp.has_v1_table(P):
                continue
            proof = _v1_aligned_proof(metainfo, f, fp)
            if proof is not None:
                seen.add(item.content_id)
                matches.append(Match(item.case, item.content_id, infohash, f.index, f.display_path,
                                     METHOD_EXACT_METADATA, proof, 0))
    return matches


def _opt_hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def _v1_aligned_proof(metainfo: Metainfo, f: FileEntry, fp: Fingerprint) -> dict[str, Any] | None:
    """Compare the torrent's piece hashes over a piece-aligned file with the registered table.

    The file's last piece also holds the next file's first bytes unless the file ends on a piece boundary
    or is the last data in the torrent; such a shared piece is left out of the comparison (and a file
    that has no unshared piece cannot be decided here).
    """
    P = metainfo.piece_length
    first = f.offset // P
    registered = fp.v1_pieces(P)
    count = len(registered)
    end = f.offset + f.length
    ends_stream = end >= sum(x.length for x in metainfo.files)
    compare = count if (f.length % P == 0 or ends_stream) else count - 1
    if compare <= 0:
        return None
    torrent_hashes = list(metainfo.piece_hashes[first : first + compare])
    if len(torrent_hashes) != compare or torrent_hashes != registered[:compare]:
        return None
    return {"kind": "v1-piece-table", "piece_length": P, "first_piece": first, "pieces_compared": compare,
            "piece_hashes": _hexs(torrent_hashes), "file_length": f.length,
            "infohash_v1": _opt_hex(metainfo.infohash_v1)}


def _proving_piece(f: FileEntry, piece_length: int) -> tuple[int, list[int]] | None:
    """The first piece that wholly holds at least one of the file's 16 KiB-aligned blocks (v2 leaves are
    aligned to the file's start), with the indices of every whole block inside it; None when no piece does
    (only possible with 16 KiB pieces at an unaligned offset)."""
    first = f.offset // piece_length
    last = (f.offset + f.length - 1) // piece_length
    for index in range(first, last + 1):
        lo = max(0, index * piece_length - f.offset)
        hi = min((index + 1) * piece_length - f.offset, f.length)
        blocks = [b for b in range(-(-lo // BLOCK_SIZE), hi // BLOCK_SIZE + 1)
                  if b * BLOCK_SIZE < f.length and min((b + 1) * BLOCK_SIZE, f.length) <= hi]
        if blocks:
            return index, blocks
    return None


async def exact_piece_matches(index: RegistryIndex, metainfo: Metainfo, source: PieceSource,
                              already: Iterable[tuple[int, str]] = (), *, timeout: float = 60.0
                              ) -> tuple[list[Match], list[Rejection]]:
    """Stage 3: same-size files not proven by stage 2, proven (or rejected) by one verified piece."""
    done = set(already)
    matches: list[Match] = []
    rejections: list[Rejection] = []
    infohash = metainfo.infohash.hex()
    P = metainfo.piece_length
    for f in metainfo.files:
        if f.pad or f.length == 0 or not metainfo.piece_hashes:
            continue
        items = [i for i in index.by_size.get(f.length, []) if (f.index, i.content_id) not in done]
        chosen = _proving_piece(f, P) if items else None
        if chosen is None:
            continue
        piece_index, block_indices = chosen
        before = source.downloaded()
        piece = (await source.read_pieces_async([piece_index], timeout))[piece_index]
        data = _piece_bytes(piece)
        cost = source.downloaded() - before
        if not metainfo.verify_piece(piece_index, data):
            continue
        base = piece_index * P - f.offset  # file position of data[0]
        observed = []
        for b in block_indices:
            lo = b * BLOCK_SIZE - base
            observed.append(hashlib.sha256(data[lo : lo + min(BLOCK_SIZE, f.length - b * BLOCK_SIZE)]).digest())
        for item in items:
            full = await index.full(item)
            if full is None:
                continue
            leaves = full.leaves()
            registered = [leaves[b] for b in block_indices]
            if registered != observed:
                rejections.append(Rejection(item.content_id, f.display_path,
                                            "same size, but the verified blocks differ from the registered ones",
                                            cost))
                continue
            matches.append(Match(item.case, item.content_id, infohash, f.index, f.display_path, METHOD_EXACT_PIECE, {
                "kind": "v1-piece-blocks", "piece_index": piece_index,
                "piece_hash": metainfo.piece_hashes[piece_index].hex(), "piece_hash_algorithm": "sha1",
                "piece_length": P, "file_offset": f.offset, "file_length": f.length,
                "blocks": [{"leaf_index": b, "observed_sha256": o.hex(), "registered_sha256": r.hex()}
                           for b, o, r in zip(block_indices, observed, registered, strict=True)],
                "served_by": sorted(f"{h}:{p}" for h, p in getattr(piece, "served_by", ())),
            }, cost))
            done.add((f.index, item.content_id))
    return matches, rejections


def _piece_bytes(piece: Any) -> bytes:
    return piece if isinstance(piece, bytes) else bytes(piece.data)


@dataclass
class MatchReport:
    """Everything the matcher found about one torrent."""

    infohash: str
    candidates: list[Candidate] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: triage and screen of the content stages (p2pwatch/match/screened.py): decision, reason, pieces read
    triage: dict[str, Any] | None = None


PerceptualStage = Callable[[RegistryIndex, Metainfo, PieceSource, set[tuple[int, str]]], Awaitable[list[Match]]]


async def zero_byte_stages(index: RegistryIndex, metainfo: Metainfo, done: MatchReport | None = None
                           ) -> MatchReport:
    """A fresh report of stages 1 and 2 (names, exact-metadata; no content byte). ``done``: those stages'
    report for this torrent, when the caller ran them already; its candidates and matches are copied (the
    caller's report is never changed) rather than computed again. Otherwise a slim index first reads the
    tables the file sizes select (:meth:`RegistryIndex.prefetch`, cached)."""
    report = MatchReport(metainfo.infohash.hex())
    if done is None:
        await index.prefetch(metainfo)
        report.candidates = name_candidates(index, metainfo)
        report.matches = await exact_metadata_matches(index, metainfo)
        return report
    if done.infohash != report.infohash:
        raise ValueError(f"the zero-byte report is for {done.infohash}, not {report.infohash}")
    report.candidates, report.matches = list(done.candidates), list(done.matches)
    return report


async def match_torrent(index: RegistryIndex, metainfo: Metainfo, source: PieceSource | None,
                        perceptual: PerceptualStage | None = None, *, timeout: float = 60.0,
                        zero_byte: MatchReport | None = None) -> MatchReport:
    """Run every stage on one torrent; stages that need content are skipped when ``source`` is None.
    ``zero_byte``: stages 1 and 2 as run earlier on this torrent (:func:`zero_byte_stages`), not run again."""
    await index.prefetch(metainfo)  # a slim index reads the tables of the items the file sizes select (cached)
    report = await zero_byte_stages(index, metainfo, zero_byte)
    if source is None:
        return report
    done = {(m.file_index, m.content_id) for m in report.matches}
    try:
        found, rejected = await exact_piece_matches(index, metainfo, source, done, timeout=timeout)
        report.matches += found
        report.rejections += rejected
    except Exception as exc:  # a swarm that cannot deliver is a result, not a crash
        report.errors.append(f"exact-piece: {type(exc).__name__}: {exc}")
    if perceptual is not None:
        done = {(m.file_index, m.content_id) for m in report.matches}
        try:
            report.matches += await perceptual(index, metainfo, source, done)
        except Exception as exc:
            report.errors.append(f"perceptual: {type(exc).__name__}: {exc}")
    return report
