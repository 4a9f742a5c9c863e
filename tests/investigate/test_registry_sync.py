"""The monitor's registry index follows registrations and withdrawals in the store, reading only the changes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from p2pwatch.investigate.registry import add_content, add_keywords, create_case, get_case, load_index, withdraw_case
from p2pwatch.investigate.registry_sync import RegistrySync
from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.storage.db import make_engine, session_factory, upgrade_database
from p2pwatch.storage.models import Content
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint, synthetic_video


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'p2pwatch.db'}")
    upgrade_database(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _register(engine: Engine, case: str, fingerprints: list[Fingerprint], keywords: tuple[str, ...] = ()) -> None:
    with session_factory(engine)() as session:
        try:
            c = get_case(session, case)
        except Exception:
            c = create_case(session, case)
        for fp in fingerprints:
            add_content(session, c, fp)
        add_keywords(session, c, keywords)
        session.commit()


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
    _register(engine, "a", videos[:3], ("alpha",))
    _register(engine, "b", videos[3:5])
    assert _sync(engine, sync) == 5
    held, keywords, frames = _state(engine, sync)
    assert len(held) == 5 and keywords == {"a": ["alpha"]} and frames == 50
    assert _sync(engine, sync) == 0  # nothing changed: nothing read

    _register(engine, "b", videos[5:], ("beta",))
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
    _register(engine, "a", videos[:2])
    with session_factory(engine)() as session:
        applied = sync.apply(sync.read(session))
    assert sorted(i.fingerprint.size for i in applied.added) == [50_000, 50_001] and applied.removed == []
    _register(engine, "b", videos[2:])
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
    _register(engine, "a", [synthetic_fingerprint(rng, 30_000)])
    _register(engine, "b", [synthetic_fingerprint(rng, 31_000)])
    _sync(engine, sync)
    with session_factory(engine)() as session:
        withdraw_case(session, "b")
        session.commit()
    _register(engine, "c", [synthetic_fingerprint(rng, 32_000)])  # may take b's deleted id
    _sync(engine, sync)
    held, _, _ = _state(engine, sync)
    assert {case for case, _ in held} == {"a", "c"}


def test_rows_changed_behind_its_back_are_resynchronised_and_a_bad_fingerprint_is_skipped(engine: Engine) -> None:
    rng = random.Random(7)
    sync = RegistrySync()
    _register(engine, "a", [synthetic_fingerprint(rng, 20_000 + i) for i in range(4)])
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
    assert _sync(engine, sync) == 0  # and not read again
    _register(engine, "a", [synthetic_fingerprint(rng, 25_000)])
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
    _register(engine, "a", [fp, *(synthetic_fingerprint(rng, 30_000 + i) for i in range(5))])
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
