"""Triage from the metainfo alone (issue 13): decisions and their reasons, and the content budget under a flood
(trio's MockClock drives days of it in a moment)."""

from __future__ import annotations

import hashlib
import math
import random

import pytest
import trio
import trio.testing

from p2pwatch.match.content_budget import (
    BudgetedSource,
    BudgetExhausted,
    BudgetSettings,
    ContentBudget,
    PriorityQueue,
    SlidingWindow,
)
from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.match.matcher import RegisteredContent, RegistryIndex
from p2pwatch.match.media_types import ContentKind, FrameHash, MediaFingerprint
from p2pwatch.match.screened import budgeted
from p2pwatch.match.triage import (
    DECISION_QUEUE,
    DECISION_SKIP,
    RegistryProfile,
    Triage,
    TriageRules,
    kind_by_extension,
)
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.metainfo import Metainfo, parse_info, parse_torrent

MB = 1_000_000


def fake_fingerprint(size: int, media: MediaFingerprint | None, seed: int = 0) -> Fingerprint:
    digest = hashlib.sha256(f"{seed}:{size}".encode()).hexdigest()
    return Fingerprint(size=size, md5=digest[:32], sha1=digest[:40], sha256=digest,
                       leaf_hashes=hashlib.sha256(digest.encode()).digest(), v1_piece_tables={},
                       kind=media.kind if media else ContentKind.OTHER, media=media)


def video(duration: float, seed: int) -> MediaFingerprint:
    frames = tuple(FrameHash(t / 10, (seed * 7919 + t) & (2**64 - 1)) for t in range(0, int(duration * 10), 5))
    return MediaFingerprint(ContentKind.VIDEO, 640, 360, duration, "h264", frames)


def image(seed: int) -> MediaFingerprint:
    return MediaFingerprint(ContentKind.IMAGE, 640, 480, image_phash=seed * 104729)


def index_of(*items: tuple[int, MediaFingerprint | None], keywords: dict[str, list[str]] | None = None
             ) -> RegistryIndex:
    contents = [RegisteredContent(fake_fingerprint(size, m, i).fingerprint_id, "case", fake_fingerprint(size, m, i))
                for i, (size, m) in enumerate(items)]
    return RegistryIndex(contents, keywords)


def torrent(name: str, files: list[tuple[str, int]], piece_length: int = 256 * 1024) -> Metainfo:
    total = sum(length for _, length in files)
    info: dict[bytes, object] = {b"name": name.encode(), b"piece length": piece_length,
                                 b"pieces": b"\0" * 20 * max(1, math.ceil(total / piece_length))}
    if len(files) == 1 and files[0][0] == name:
        info[b"length"] = files[0][1]
    else:
        info[b"files"] = [{b"length": length, b"path": [p.encode() for p in path.split("/")]}
                          for path, length in files]
    return parse_torrent(bencoding.encode({b"info": info}))


# a 10-minute registered video (200 MB) and a registered image
REGISTRY = index_of((200 * MB, video(600.0, 1)), (300_000, image(2)), keywords={"case": ["Kim Jiyoung"]})


def test_extension_is_only_a_prior() -> None:
    assert kind_by_extension("a/b/Clip.MKV") is ContentKind.VIDEO
    assert kind_by_extension("x.jpeg") is ContentKind.IMAGE
    assert kind_by_extension("readme.nfo") is ContentKind.OTHER
    assert kind_by_extension("noext") is None and kind_by_extension("weird.bin") is None


@pytest.mark.parametrize(("files", "action", "reason"), [
    ([("show.mkv", 350 * MB)], DECISION_QUEUE, "video of a plausible size"),
    # a re-encode at a very low bit rate, and a 6 s trimmed clip: both plausible
    ([("small.mp4", 3 * MB)], DECISION_QUEUE, "video of a plausible size"),
    ([("clip.mp4", 60_000)], DECISION_QUEUE, "video of a plausible size"),
    # 40 GB cannot be a copy of a 10-minute video at any plausible bit rate; 5 KB cannot be a 4-s clip
    ([("movie.mkv", 40_000 * MB)], DECISION_SKIP, "video of a size no registered video's copy can have"),
    ([("tiny.mp4", 5_000)], DECISION_SKIP, "video of a size no registered video's copy can have"),
    ([("notes.txt", 5_000), ("album.flac", 30 * MB)], DECISION_SKIP, "not a media type"),
    ([("photo.jpg", 120_000)], DECISION_QUEUE, "image of a plausible size"),
    ([("photo.jpg", 100)], DECISION_SKIP, "image of an implausible size"),
    # the exact size of a registered file, whatever its name: the exact stages decide it with one piece
    ([("renamed.dat", 200 * MB)], DECISION_QUEUE, "registered size"),
    ([("data.bin", 80 * MB)], DECISION_QUEUE, "unknown type, plausible video size"),
])
def test_decisions_and_reasons(files: list[tuple[str, int]], action: str, reason: str) -> None:
    meta = torrent(files[0][0] if len(files) == 1 else "pack", files)
    decision = Triage(REGISTRY).decide(meta)
    assert decision.action == action, decision
    assert reason in decision.reason, decision
    if action == DECISION_QUEUE:
        assert decision.files and decision.estimate_bytes > 0
    else:
        assert not decision.files and decision.score == 0


def test_keyword_raises_priority_and_lets_unlikely_files_be_sniffed() -> None:
    plain = Triage(REGISTRY).decide(torrent("holiday", [("holiday/a.mp4", 100 * MB)]))
    named = Triage(REGISTRY).decide(torrent("Kim.Jiyoung.2023", [("Kim.Jiyoung.2023/a.mp4", 100 * MB)]))
    assert plain.queued and named.queued and named.score > plain.score
    assert "keyword candidate" in named.reason
    hidden = Triage(REGISTRY).decide(torrent("kim_jiyoung", [("kim_jiyoung/part1.rar", 100 * MB)]))
    assert hidden.queued and hidden.files == (0,)
    assert not Triage(REGISTRY).decide(torrent("misc", [("misc/part1.rar", 100 * MB)])).queued


def test_registered_size_outranks_a_plausible_video_and_files_are_capped() -> None:
    files = [(f"pack/{i:02d}.mp4", (50 + i) * MB) for i in range(12)] + [("pack/copy.bin", 200 * MB)]
    decision = Triage(REGISTRY, TriageRules(max_files=4)).decide(torrent("pack", files))
    assert decision.files[0] == 12 and len(decision.files) == 4
    assert "more files not examined" in decision.reason


def test_nothing_registered_and_only_images_registered() -> None:
    assert Triage(RegistryIndex([])).decide(torrent("a.mp4", [("a.mp4", 10 * MB)])).reason == "nothing registered"
    images_only = index_of((300_000, image(3)))
    decision = Triage(images_only).decide(torrent("a.mp4", [("a.mp4", 10 * MB)]))
    assert decision.action == DECISION_SKIP and "no video is registered" in decision.reason


def test_video_of_unknown_duration_makes_every_size_plausible() -> None:
    unknown = index_of((5 * MB, MediaFingerprint(ContentKind.VIDEO, 1, 1, None, "h264", (FrameHash(0, 1),))))
    assert Triage(unknown).decide(torrent("big.mkv", [("big.mkv", 40_000 * MB)])).queued


def test_incremental_profile_equals_a_rebuild_after_adds_and_removes() -> None:
    """The profile follows adds and removes (Triage.apply) and equals one built from scratch at every step,
    including ranges that share a low end, equal ranges, clips under min_clip_seconds, unknown durations,
    images, non-media items and removing the widest range of a group."""
    rng = random.Random(11)
    rules = TriageRules()
    index = RegistryIndex([])
    triage = Triage(index, rules)
    durations: list[float | None] = [1.5, 2.0, 3.9, 4.0, 30.0, 30.0, 600.0, 1200.0, None]
    held: list[RegisteredContent] = []
    for step in range(400):
        if held and rng.random() < 0.45:
            item = held.pop(rng.randrange(len(held)))
            removed = [index.item(seq) for seq in index.seqs_of(item.content_id)]
            index.remove(item.content_id)
            triage.apply(removed=removed)
        else:
            roll = rng.random()
            size = rng.choice([5 * MB, 20 * MB, 200 * MB, rng.randrange(1, 400) * MB])
            if roll < 0.6:
                d = rng.choice(durations)
                media: MediaFingerprint | None = (video(d, step) if d is not None else MediaFingerprint(
                    ContentKind.VIDEO, 1, 1, None, "h264", (FrameHash(0, step),)))
            elif roll < 0.85:
                media = image(step)
            else:
                media = None
            fp = fake_fingerprint(size, media, step)
            item = RegisteredContent(fp.fingerprint_id, "case", fp)
            index.add(item)
            held.append(item)
            triage.apply(added=[item])
        assert triage.profile.snapshot() == RegistryProfile.build(index, rules).snapshot(), step
    assert triage.profile.video_ranges  # the sequence did hold videos at the end
    for item in list(held):  # all gone: the empty profile
        removed = [index.item(seq) for seq in index.seqs_of(item.content_id)]
        index.remove(item.content_id)
        triage.apply(removed=removed)
    assert triage.profile.snapshot() == (frozenset(), (), False, False, False)


def test_removing_the_widest_video_narrows_the_plausible_sizes() -> None:
    long_one, short_one = index_of((200 * MB, video(600.0, 1)), (5 * MB, video(30.0, 2))).contents
    index = RegistryIndex([long_one, short_one])
    triage = Triage(index)
    big = torrent("show.mkv", [("show.mkv", 350 * MB)])
    assert triage.decide(big).queued
    index.remove(long_one.content_id)
    triage.apply(removed=[long_one])
    assert not triage.decide(big).queued  # 350 MB is no copy of a 30 s video
    index.add(long_one)
    triage.apply(added=[long_one])
    assert triage.decide(big).queued


# --- the budget -------------------------------------------------------------------------------------

def test_sliding_window_frees_only_what_left_the_window() -> None:
    window = SlidingWindow(100, 60.0, bins=60)
    assert window.take(0.0, 70) and not window.take(10.0, 40) and window.take(10.0, 30)
    assert window.free_at(10.0, 50) == pytest.approx(61.0)  # the first bin must be wholly out of the window
    assert not window.take(60.5, 50) and window.take(61.0, 50)
    assert window.free_at(0.0, 101) == math.inf


class CountingSource:
    """Pieces of nothing; counts what was asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def read_pieces_async(self, wanted: object, timeout: float | None = None) -> dict[int, bytes]:
        indices = list(wanted)  # type: ignore[call-overload]
        self.asked += len(indices)
        return {i: b"x" for i in indices}

    def downloaded(self) -> int:
        return self.asked


async def test_budget_holds_under_a_flood(autojump_clock: trio.testing.MockClock) -> None:
    """A flood of 5,000 queued torrents over two simulated days, each wanting up to 8 pieces of 1 MiB, against
    100 MiB a day, 60 torrents an hour and 3 readers: no 24-hour window ever sees more than 100 MiB asked of
    the swarms, no hour more than 60 torrents started, never more than 3 read at once; the queue keeps the
    best-scored torrents and drops the rest."""
    piece = 1024 * 1024
    settings = BudgetSettings(bytes_per_day=100 * piece, torrents_per_hour=60, concurrent_readers=3, queue_size=200)
    budget = ContentBudget(settings)
    queue: PriorityQueue[int] = PriorityQueue(settings.queue_size)
    asked: list[tuple[float, int]] = []  # (time, bytes) of each piece asked for
    started: list[float] = []
    dropped: list[int] = []
    refused = 0
    reading = peak = 0

    async def worker() -> None:
        nonlocal refused, reading, peak
        while True:
            _score, item = await queue.pop()
            await budget.admit(2 * piece)
            started.append(trio.current_time())
            async with budget.readers:
                reading += 1
                peak = max(peak, reading)
                source = BudgetedSource(CountingSource(), budget, piece, 8 * piece)
                try:
                    for index in range(1 + item % 8):
                        await source.read_pieces_async([index])
                        asked.append((trio.current_time(), piece))
                        await trio.sleep(1.0)
                except BudgetExhausted:
                    refused += 1
                finally:
                    reading -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(settings.concurrent_readers + 2):  # more workers than readers: the semaphore holds
            nursery.start_soon(worker)
        for i in range(5000):
            out = queue.push(float(i % 97), i)
            if out is not None:
                dropped.append(out)
            if i % 50 == 0:
                await trio.sleep(30.0)  # 5,000 torrents arrive within about 50 minutes
        await trio.sleep(2 * 86_400.0)
        nursery.cancel_scope.cancel()
    assert dropped and len(dropped) >= 5000 - settings.queue_size - len(started)
    assert peak <= settings.concurrent_readers
    times = [t for t, _ in asked]
    for t in times:  # every 24-hour window ending at a read
        assert sum(b for u, b in asked if t - 86_400.0 < u <= t) <= settings.bytes_per_day
    for t in started:
        assert sum(1 for u in started if t - 3_600.0 < u <= t) <= settings.torrents_per_hour
    assert sum(b for _, b in asked) == budget.bytes.total
    assert budget.bytes.total > settings.bytes_per_day  # the second day's budget was used too
    assert refused >= 1  # some torrent ran out of budget mid-read and stopped there


def test_priority_queue_keeps_the_best() -> None:
    queue: PriorityQueue[str] = PriorityQueue(2)
    assert queue.push(1.0, "low") is None and queue.push(5.0, "high") is None
    assert queue.push(0.5, "lower") == "lower"  # no room and worse than all
    assert queue.push(3.0, "mid") == "low"
    assert queue.pop_nowait() == (5.0, "high") and queue.pop_nowait() == (3.0, "mid") and len(queue) == 0


async def test_a_v2_torrent_s_pieces_are_charged_at_their_own_size() -> None:
    """BEP 52: each file's pieces start at a piece boundary, so the last piece of the last file lies beyond
    the sum of the file lengths; the budget charges it at its size (Metainfo.piece_size), not at zero."""
    info = {b"name": b"t", b"piece length": 16384, b"meta version": 2,
            b"file tree": {b"a.bin": {b"": {b"length": 20000, b"pieces root": b"\x01" * 32}},
                           b"b.bin": {b"": {b"length": 20000, b"pieces root": b"\x02" * 32}}}}
    meta = parse_info(bencoding.encode(info))
    assert meta.num_pieces == 4
    source = budgeted(CountingSource(), meta, None)
    await source.read_pieces_async([3])
    assert source.charged == 20000 - 16384  # the tail of b.bin (the old sum-of-lengths rule charged 0)
    await source.read_pieces_async([0, 1, 2])
    assert source.charged == 2 * 20000
