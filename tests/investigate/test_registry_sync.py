"""The monitor's registry index follows registrations and withdrawals in the store, reading only the changes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, update

from p2pwatch.investigate.registry import load_index, withdraw_case
from p2pwatch.investigate.registry_sync import Applied, RegistrySync
from p2pwatch.match.matcher import RegistryIndex
from p2pwatch.match.media_types import ContentKind
from p2pwatch.match.registered import RegisteredContent
from p2pwatch.storage.db import session_factory
from p2pwatch.storage.models import Content
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint, synthetic_image, synthetic_video
from tests.registry_helpers import register, sqlite_store


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with sqlite_store(tmp_path) as store:
        yield store



def _sync(engine: Engine, sync: RegistrySync) -> int:
    with session_factory(engine)() as session:
        changes = sync.read(session)
    sync.apply(changes)
    return len(changes.added) + len(changes.removed)


def _state(engine: Engine, sync: RegistrySync) -> tuple[set[tuple[str, str]], dict[str, list[str]], int]:
    """What the sync holds next to what a full reload gives: (case, content id) pairs, keywords, frames."""
    with session_factory(engine)() as session:
        full = load_index(session)
    assert {(c.case, c.content_id) for c in sync.index.contents} == {(c.case, c.content_id) for c in full.contents}
    assert sync.index.keywords == full.keywords
    assert len(sync.index.frames) == len(full.frames)
    assert set(sync.index.by_size) == set(full.by_size)
    return {(c.case, c.content_id) for c in full.contents}, full.keywords, len(full.frames)


def test_registration_and_withdrawal_are_followed_incrementally(engine: Engine) -> None:
    rng = random.Random(5)
    sync = RegistrySync()
    videos = [synthetic_fingerprint(rng, 40_000 + i, synthetic_video(rng, 10)) for i in range(6)]
    register(engine, "a", videos[:3], ("alpha",))
    register(engine, "b", videos[3:5])
    assert _sync(engine, sync) == 5
    held, keywords, frames = _state(engine, sync)
    assert len(held) == 5 and keywords == {"a": ["alpha"]} and frames == 50
    assert _sync(engine, sync) == 0  # nothing changed: nothing read

    register(engine, "b", videos[5:], ("beta",))
    assert _sync(engine, sync) == 1  # only the new row
    assert _state(engine, sync)[1] == {"a": ["alpha"], "b": ["beta"]}
    frame = videos[5].media.frame_hashes[0].phash  # type: ignore[union-attr]
    assert sync.index.frames.radius(frame, 0)

    with session_factory(engine)() as session:
        withdraw_case(session, "b")
        session.commit()
    assert _sync(engine, sync) == 3
    held, keywords, frames = _state(engine, sync)
    assert {case for case, _ in held} == {"a"} and keywords == {"a": ["alpha"]} and frames == 30
    assert sync.index.frames.radius(frame, 0) == []


def test_apply_returns_the_items_the_index_lost_and_gained(engine: Engine) -> None:
    """What the monitor's triage profile follows (p2pwatch/monitor/content_queue.py: update_index)."""
    rng = random.Random(8)
    sync = RegistrySync()
    videos = [synthetic_fingerprint(rng, 50_000 + i, synthetic_video(rng, 4)) for i in range(3)]
    register(engine, "a", videos[:2])
    with session_factory(engine)() as session:
        applied = sync.apply(sync.read(session))
    assert sorted(i.fingerprint.size for i in applied.added) == [50_000, 50_001] and applied.removed == []
    register(engine, "b", videos[2:])
    with session_factory(engine)() as session:
        withdraw_case(session, "a")
        session.commit()
    with session_factory(engine)() as session:
        applied = sync.apply(sync.read(session))
    assert [i.fingerprint.size for i in applied.added] == [50_002]
    assert sorted(i.fingerprint.size for i in applied.removed) == [50_000, 50_001]
    assert all(i.case == "a" for i in applied.removed)


def test_a_reused_row_id_after_a_withdrawal_is_not_missed(engine: Engine) -> None:
    """SQLite hands the highest id out again once its row is deleted; the bound follows the rows held."""
    rng = random.Random(6)
    sync = RegistrySync()
    register(engine, "a", [synthetic_fingerprint(rng, 30_000)])
    register(engine, "b", [synthetic_fingerprint(rng, 31_000)])
    _sync(engine, sync)
    with session_factory(engine)() as session:
        withdraw_case(session, "b")
        session.commit()
    register(engine, "c", [synthetic_fingerprint(rng, 32_000)])  # may take b's deleted id
    _sync(engine, sync)
    held, _, _ = _state(engine, sync)
    assert {case for case, _ in held} == {"a", "c"}


def test_rows_changed_behind_its_back_are_resynchronised_and_a_bad_fingerprint_is_skipped(engine: Engine) -> None:
    rng = random.Random(7)
    sync = RegistrySync()
    register(engine, "a", [synthetic_fingerprint(rng, 20_000 + i) for i in range(4)])
    _sync(engine, sync)
    with session_factory(engine)() as session:  # not through withdraw_case: the safety net must notice
        first = session.query(Content).order_by(Content.id).first()
        assert first is not None
        session.add(Content(case_id=first.case_id, fingerprint_id="f" * 64, kind="other", size=1,
                            fingerprint={"format": "nope"}, created_at=first.created_at))
        session.delete(first)
        session.commit()
    _sync(engine, sync)
    assert len(sync.index) == 3 and len(sync) == 4  # the deleted row is gone; the bad one is held, not indexed
    (bad, why), = sync.unindexed.items()
    assert bad == 5 and why.startswith("the stored fingerprint does not parse") and not sync.retrying
    assert _sync(engine, sync) == 0  # and not read again
    register(engine, "a", [synthetic_fingerprint(rng, 25_000)])
    assert _sync(engine, sync) == 1
    assert len(sync) == 5 and len(sync.index) == 4


def test_slim_registry_reads_tables_only_for_selected_sizes(engine: Engine) -> None:
    """With a session factory the index holds no leaf hashes or v1 tables; the exact stages read them (cached)
    for the items of a torrent file's size and still match a registered v1 file."""
    import trio

    from p2pwatch.match.matcher import exact_metadata_matches
    from p2pwatch.match.registered import SlimFingerprint
    from p2pwatch.torrent.maker import make_v1_torrent
    from p2pwatch.torrent.metainfo import parse_torrent

    rng = random.Random(9)
    data = rng.randbytes(70_000)
    path = engine.url.database
    assert path is not None
    real = Path(path).parent / "real.bin"
    real.write_bytes(data)
    from p2pwatch.match.fingerprint import fingerprint_file

    fp = fingerprint_file(real)
    register(engine, "a", [fp, *(synthetic_fingerprint(rng, 30_000 + i) for i in range(5))])
    sync = RegistrySync(session_factory(engine), cache_items=2)
    assert _sync(engine, sync) == 6
    assert all(isinstance(c.fingerprint, SlimFingerprint) for c in sync.index.contents)
    meta = parse_torrent(make_v1_torrent("t", [("real.bin", real)], piece_length=16384))
    tables = sync.index.tables
    assert tables is not None and len(tables) == 0
    trio.run(sync.index.prefetch, meta)
    assert tables.loads == 1 and len(tables) == 1
    found = trio.run(exact_metadata_matches, sync.index, meta)
    assert [m.method for m in found] == ["exact-metadata"] and tables.loads == 1
    with session_factory(engine)() as session:
        withdraw_case(session, "a")
        session.commit()
    _sync(engine, sync)
    assert len(tables) == 0 and trio.run(exact_metadata_matches, sync.index, meta) == []


class Tripwire:
    """Counts the calls of the index's mutating steps and makes the ``at``-th one raise, once: an error
    nobody expected, before the step (``index.add``/``remove``) or in the middle of an item's add (the
    hash indexes, after the item's sizes and roots were indexed)."""

    def __init__(self, sync: RegistrySync, at: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at, self.calls, self.tripped = at, 0, False
        index = sync.index
        for owner, name in ((index, "remove"), (index, "add"), (index.frames, "add"),
                            (index.image_phashes, "add"), (index.image_pdqs, "add")):
            monkeypatch.setattr(owner, name, self.wrap(getattr(owner, name)))

    def wrap(self, step: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.at and not self.tripped:
                self.tripped = True
                raise RuntimeError(f"step {self.at} failed")
            return step(*args, **kwargs)

        return wrapped


#: The index's mutating steps in the apply below: 3 removals; 3 adds, the videos' frames, the image's two hashes.
REMOVALS = 3
STEPS = REMOVALS + 3 + 2 + 2


@pytest.mark.parametrize("at", range(1, STEPS + 2))
def test_an_apply_failing_halfway_is_retried_to_exactly_the_registered_items(
        engine: Engine, at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever step of an apply fails (a removal stops it; an add holds that item unindexed and goes on),
    the next read and apply end with the index holding the registered items, none missed and none twice,
    and the items reported lost and gained (both applies together, for the triage's profile) are exactly
    the change."""
    rng = random.Random(10)
    sync = RegistrySync(session_factory(engine))  # slim, as the monitor holds it
    videos = [synthetic_fingerprint(rng, 60_000 + i, synthetic_video(rng, 5)) for i in range(6)]
    image = synthetic_fingerprint(rng, 61_000, synthetic_image(rng))
    register(engine, "a", videos[:2], ("alpha",))
    register(engine, "b", videos[2:4])
    _sync(engine, sync)
    with session_factory(engine)() as session:
        withdraw_case(session, "a")
        behind = session.query(Content).filter(Content.size == 60_002).one()
        session.delete(behind)  # not through withdraw_case: only the ids' comparison finds it
        session.commit()
    register(engine, "c", [videos[4], videos[5], image], ("gamma",))
    wire = Tripwire(sync, at, monkeypatch)
    with session_factory(engine)() as session:
        changes = sync.read(session)
    assert len(changes.removed) == 3 and len(changes.added) == 3
    partial = Applied()
    if at > STEPS:  # the reference: nothing fails, and these are all the steps
        sync.apply(changes, partial)
        assert not wire.tripped and wire.calls == STEPS and sync.unindexed == {}
    elif at <= REMOVALS:  # a removal failing: the apply stops, to be retried whole
        with pytest.raises(RuntimeError, match=f"step {at} failed"):
            sync.apply(changes, partial)
        assert wire.tripped and not sync.settled
    else:  # an item the index refuses: held unindexed, the others' adds go on
        sync.apply(changes, partial)
        assert wire.tripped and sync.settled and sync.retrying and len(partial.added) == 2
        assert list(sync.unindexed.values()) == [f"RuntimeError: step {at} failed"]
    with session_factory(engine)() as session:
        retry = sync.apply(sync.read(session))
    assert sync.settled and sync.unindexed == {} and not sync.retrying
    held, keywords, _ = _state(engine, sync)
    assert sorted(c.content_id for c in sync.index.contents) == sorted(content for _, content in held)
    assert len(held) == 4 and len(sync) == 4 and keywords == {"c": ["gamma"]}
    assert sorted(len(items) for items in sync.index.by_size.values()) == [1, 1, 1, 1]
    assert (len(sync.index.frames), len(sync.index.image_phashes), len(sync.index.image_pdqs)) == (15, 1, 1)
    assert sync.index.comparable_count(ContentKind.VIDEO) == 3 and sync.index.comparable_count(ContentKind.IMAGE) == 1
    assert sorted(i.fingerprint.size for i in partial.removed + retry.removed) == [60_000, 60_001, 60_002]
    assert sorted(i.fingerprint.size for i in partial.added + retry.added) == [60_004, 60_005, 61_000]


def test_an_item_failing_to_index_leaves_no_part_of_it_behind() -> None:
    """RegistryIndex.add is all or nothing: a hash the hash index refuses (after the item's sizes, roots and
    frames were indexed) takes the rest of the item out again."""
    rng = random.Random(12)
    good = RegisteredContent("1", "a", synthetic_fingerprint(rng, 70_000, synthetic_image(rng)))
    media = synthetic_image(rng)
    bad = RegisteredContent("2", "a", synthetic_fingerprint(rng, 70_000, replace(media, image_pdq=b"short")))
    index = RegistryIndex([good])
    with pytest.raises(ValueError, match="not a 256-bit hash"):
        index.add(bad)
    assert index.contents == [good] and index.seqs_of("2") == [] and index.by_size == {70_000: [good]}
    assert (len(index.image_phashes), len(index.image_pdqs), index.comparable_count(ContentKind.IMAGE)) == (1, 1, 1)
    assert index.by_root == {good.fingerprint.pieces_root(): [good]}
    index.add(RegisteredContent("2", "a", synthetic_fingerprint(rng, 70_000, media)))
    assert len(index) == 2 and len(index.by_size[70_000]) == 2 and len(index.image_pdqs) == 2


def test_a_retry_after_a_failed_apply_compares_the_ids_even_when_the_counts_agree(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows 2 and 4 deleted behind its back and one written under the free id 3 (below the highest held, so
    only the ids' comparison finds it): the apply fails after dropping row 2. Stale row 4 and missing row 3
    then cancel out in the count, so the retry compares the ids because the apply did not finish."""
    rng = random.Random(13)
    register(engine, "a", [synthetic_fingerprint(rng, 40_000 + i) for i in range(5)])
    with session_factory(engine)() as session:
        session.execute(delete(Content).where(Content.id == 3))
        session.commit()
    sync = RegistrySync()
    assert _sync(engine, sync) == 4
    register(engine, "a", [synthetic_fingerprint(rng, 45_000)])
    with session_factory(engine)() as session:
        session.execute(delete(Content).where(Content.id.in_([2, 4])))
        session.execute(update(Content).where(Content.size == 45_000).values(id=3))
        session.commit()
    Tripwire(sync, 2, monkeypatch)
    with session_factory(engine)() as session:
        changes = sync.read(session)
    assert changes.removed == [2, 4] and [added[0] for added in changes.added] == [3]
    with pytest.raises(RuntimeError, match="step 2 failed"):
        sync.apply(changes)
    assert _sync(engine, sync) == 2  # row 4 dropped, row 3 added
    held, _, _ = _state(engine, sync)
    assert sorted(int(content) for _, content in held) == [1, 3, 5] and len(sync) == 3 and sync.settled


def test_an_item_the_index_always_refuses_is_held_unindexed_and_holds_nothing_back(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """One stored item that the index refuses at every try (a hash it cannot take): the registrations read
    with it and after it are indexed all the same; it is listed in ``unindexed`` with the error, tried again
    by every apply, logged once; withdrawing its case drops it."""
    rng = random.Random(14)
    sync = RegistrySync(session_factory(engine))
    index_add = sync.index.add
    tries: list[str] = []

    def refuse_row_2(item: RegisteredContent, **kwargs: Any) -> None:
        if item.content_id == "2":
            tries.append(item.content_id)
            raise ValueError("not a 256-bit hash")
        index_add(item, **kwargs)

    monkeypatch.setattr(sync.index, "add", refuse_row_2)
    register(engine, "a", [synthetic_fingerprint(rng, 90_000 + i, synthetic_video(rng, 3)) for i in range(3)])
    register(engine, "b", [synthetic_fingerprint(rng, 91_000, synthetic_video(rng, 3))])
    with caplog.at_level("WARNING", logger="p2pwatch.investigate.registry_sync"):
        _sync(engine, sync)
        assert sync.settled and sync.retrying and sync.unindexed == {2: "ValueError: not a 256-bit hash"}
        assert sorted(c.content_id for c in sync.index.contents) == ["1", "3", "4"] and len(sync) == 4
        register(engine, "b", [synthetic_fingerprint(rng, 92_000, synthetic_video(rng, 3))])
        _sync(engine, sync)
        _sync(engine, sync)
    assert sorted(c.content_id for c in sync.index.contents) == ["1", "3", "4", "5"] and tries == ["2"] * 3
    assert len([r for r in caplog.records if "content 2 of case a is not matched" in r.getMessage()]) == 1
    with session_factory(engine)() as session:
        withdraw_case(session, "a")
        session.commit()
    _sync(engine, sync)
    assert sync.unindexed == {} and not sync.retrying and len(sync) == 2
    assert sorted(c.content_id for c in sync.index.contents) == ["4", "5"] and tries == ["2"] * 3
    monkeypatch.setattr(sync.index, "add", index_add)


def test_an_item_refused_once_is_indexed_at_the_next_apply(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal that does not repeat (an error nobody expected, once): the next apply indexes the item, with
    no change in the store, and reports it gained."""
    rng = random.Random(15)
    sync = RegistrySync(session_factory(engine))
    register(engine, "a", [synthetic_fingerprint(rng, 93_000 + i, synthetic_video(rng, 3)) for i in range(2)])
    Tripwire(sync, 1, monkeypatch)
    _sync(engine, sync)
    assert list(sync.unindexed) == [1] and len(sync.index) == 1
    with session_factory(engine)() as session:
        changes = sync.read(session)
    assert not changes
    gained = sync.apply(changes)
    assert [i.content_id for i in gained.added] == ["1"] and sync.unindexed == {} and len(sync.index) == 2
    _state(engine, sync)
