"""The monitor's registry reload (Monitor._read, every INDEX_REFRESH seconds by _refresh_index): a reload that
fails, in the read or halfway through applying the changes, is logged, counted
(``p2pwatch_registry_reload_errors_total``) and retried whole at the next refresh; the daemon goes on, and the
index ends up holding exactly the registered items. A cancel still stops the loop."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from p2pwatch.config import MonitorConfig
from p2pwatch.dht.node import DHTConfig
from p2pwatch.errors import StorageError
from p2pwatch.investigate.registry import load_index
from p2pwatch.match.triage import Triage
from p2pwatch.monitor import daemon
from p2pwatch.monitor.daemon import INDEX_REFRESH, Monitor
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.storage.db import session_factory
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint, synthetic_video
from tests.registry_helpers import register, sqlite_store

RELOAD_ERRORS = "p2pwatch_registry_reload_errors_total"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with sqlite_store(tmp_path) as store:
        yield store



def _monitor(engine: Engine, home: Path) -> Monitor:
    return Monitor(MonitorConfig(), engine, DHTConfig(bind_host="127.0.0.1", bind_port=0, allow_local=True), home=home)


def _reload_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "p2pwatch.monitor" and r.levelno >= logging.WARNING]


def _assert_index_is_the_registry(engine: Engine, monitor: Monitor) -> None:
    """The monitor's index holds what a full reload gives, each item once; its triage profile is the one a
    fresh build from that index gives."""
    with session_factory(engine)() as session:
        full = load_index(session)
    index = monitor.state.index
    assert index is monitor.registry.index
    assert sorted(c.content_id for c in index.contents) == sorted(c.content_id for c in full.contents)
    assert sorted(map(len, index.by_size.values())) == sorted(map(len, full.by_size.values()))
    assert len(index.frames) == len(full.frames) and index.keywords == full.keywords
    triage = monitor.content.screening.triage
    assert triage.index is index
    assert triage.profile.snapshot() == Triage(index, triage.settings).profile.snapshot()


async def test_an_item_refused_halfway_is_held_unindexed_and_the_next_refresh_indexes_it(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second of three new items fails while its frame hashes are indexed (its size and root already
    were): the refresh indexes the other two and holds it unindexed (the gauge says 1); the next refresh,
    with nothing new in the store, indexes it, once. Before, the registry version was stored ahead of the
    apply, so the next refresh read nothing: the third item was missed for good and the failed one held
    half-indexed; then one such item held every later registration back."""
    rng = random.Random(21)
    videos = [synthetic_fingerprint(rng, 80_000 + i, synthetic_video(rng, 4)) for i in range(5)]
    register(engine, "a", videos[:2], ("alpha",))
    monitor = _monitor(engine, tmp_path)
    await monitor._read()
    assert len(monitor.state.index) == 2
    register(engine, "b", videos[2:], ("beta",))
    frames = monitor.registry.index.frames
    calls = 0
    add = frames.add

    def add_failing_once(item_id: int, hashes: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a frame hash nobody expected")
        return add(item_id, hashes)

    monkeypatch.setattr(frames, "add", add_failing_once)
    await monitor._read()
    assert monitor.registry.settled and monitor.registry.retrying and len(monitor.state.index) == 4
    assert list(monitor.registry.unindexed.values()) == ["RuntimeError: a frame hash nobody expected"]
    assert "p2pwatch_registry_unindexed_items 1.0" in monitor.metrics.render().splitlines()
    await monitor._read()
    assert monitor.registry.settled and not monitor.registry.retrying and calls == 4  # each item once more
    assert len(monitor.state.index) == 5
    assert "p2pwatch_registry_unindexed_items 0.0" in monitor.metrics.render().splitlines()
    _assert_index_is_the_registry(engine, monitor)
    await monitor._read()  # settled: nothing more to read
    assert len(monitor.state.index) == 5 and calls == 4


async def test_the_refresh_loop_survives_failing_reloads_and_goes_on(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """A database hiccup, an error nobody expected and a typed error: each is one warning with the error (a
    traceback for the untyped ones), counted, and the next refresh comes as usual."""
    monitor = Monitor.__new__(Monitor)
    monitor.metrics = Metrics()
    failures: list[Exception] = [OperationalError("SELECT count(*) FROM content", {}, Exception("database is locked")),
                                 KeyError("a stored field nobody expected"), StorageError("the store is read-only")]
    reads: list[float] = []

    async def read() -> None:
        reads.append(trio.current_time())
        if len(reads) <= len(failures):
            raise failures[len(reads) - 1]

    monitor._read = read  # type: ignore[method-assign]
    with trio.move_on_after(INDEX_REFRESH * 4.5):
        await monitor._refresh_index()
    assert len(reads) == 4 and reads[-1] == pytest.approx(INDEX_REFRESH * 4)
    assert monitor.metrics.counters[RELOAD_ERRORS] == 3
    records = _reload_warnings(caplog)
    assert [r.levelno for r in records] == [logging.WARNING] * 3
    assert "database is locked" in records[0].getMessage() and "nobody expected" in records[1].getMessage()
    assert records[2].getMessage() == f"registry reload failed (retried in {INDEX_REFRESH:g} s): the store is read-only"
    assert [r.exc_info[1] for r in records if r.exc_info] == failures[:2]  # the typed error needs no traceback
    text = monitor.metrics.render()
    assert f"# HELP {RELOAD_ERRORS} registry reloads that failed" in text
    assert f"# TYPE {RELOAD_ERRORS} counter\n{RELOAD_ERRORS} 3\n" in text


async def test_a_cancelled_reload_is_not_contained(autojump_clock: trio.testing.MockClock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monitor = Monitor.__new__(Monitor)
    monitor.metrics = Metrics()

    async def read() -> None:
        await trio.sleep_forever()

    monitor._read = read  # type: ignore[method-assign]
    with trio.move_on_after(INDEX_REFRESH * 2) as scope:
        await monitor._refresh_index()
    assert scope.cancelled_caught and monitor.metrics.counters[RELOAD_ERRORS] == 0 and not _reload_warnings(caplog)


async def test_registrations_during_a_database_hiccup_arrive_at_a_later_refresh(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The real reload in the refresh loop: the first refresh's read fails with an OperationalError; the loop
    goes on and the next one takes the registration."""
    rng = random.Random(22)
    register(engine, "a", [synthetic_fingerprint(rng, 90_000, synthetic_video(rng, 3))])
    monitor = _monitor(engine, tmp_path)
    await monitor._read()
    read = monitor.registry.read
    reads = 0

    def read_failing_once(session: Any) -> Any:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise OperationalError("SELECT content.id", {}, Exception("disk I/O error"))
        return read(session)

    monkeypatch.setattr(monitor.registry, "read", read_failing_once)
    monkeypatch.setattr(daemon, "INDEX_REFRESH", 0.05)
    register(engine, "b", [synthetic_fingerprint(rng, 90_001, synthetic_video(rng, 3))], ("beta",))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor._refresh_index)
            while len(monitor.state.index) < 2:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert reads == 2 and monitor.metrics.counters[RELOAD_ERRORS] == 1
    (record,) = _reload_warnings(caplog)
    assert "disk I/O error" in record.getMessage() and record.exc_info
    _assert_index_is_the_registry(engine, monitor)
