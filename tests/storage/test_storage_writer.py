"""The trio writer task: batching, ordering, reporting, shutdown, failures, and two writer processes.

Run as a script (``python -m tests.storage.test_storage_writer write URL TORRENT_ID COUNT``) it is the writer
process of the two-process test: it prints every committed batch as ``first last``.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from p2pwatch.errors import LocalProtocolError, StorageError
from p2pwatch.storage.db import make_engine, session_factory
from p2pwatch.storage.ledger import ObservationRecord, SwarmSampleRecord, verify_chain
from p2pwatch.storage.models import Observation, SwarmSample
from p2pwatch.storage.writer import CommitReport, ObservationWriter, open_writer

pytest_plugins = ["tests.pg"]
REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 6, 1, tzinfo=UTC)
AddTorrent = Callable[..., int]


def obs(torrent_id: int, n: int) -> ObservationRecord:
    return ObservationRecord(torrent_id=torrent_id, ip=f"10.0.{n // 250 % 250}.{n % 250 + 1}", port=1024 + n % 5000,
                             level=n % 3, source="dht" if n % 3 == 0 else "probe",
                             observed_at=T0 + timedelta(milliseconds=n), reporter="192.0.2.1:6881",
                             transcript={"n": n} if n % 3 else None)


def count(engine: Engine, model: type[Observation] | type[SwarmSample]) -> int:
    with session_factory(engine)() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside a (possibly nested) exception group or trio MultiError."""
    inner = getattr(exc, "exceptions", None)
    if not inner:
        return [exc]
    return [leaf for child in inner for leaf in leaves(child)]


async def test_batches_order_and_reports(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    tid = add_torrent(storage_engine, "ab" * 20)
    reports: list[CommitReport] = []
    seen_by_run: list[int] = []

    def count_rows(session: Session) -> int:
        n = int(session.execute(select(func.count()).select_from(Observation)).scalar_one())
        seen_by_run.append(n)
        return n

    async with open_writer(storage_engine, batch_size=64, on_commit=reports.append) as writer:
        for n in range(100):
            await writer.write(obs(tid, n))
        assert await writer.run(count_rows) == 100  # run() comes after everything queued before it
        await writer.write_many([obs(tid, n) for n in range(100, 400)])
        await writer.sample(SwarmSampleRecord(tid, T0, "dht", dht_peers=17, probed={0: 17, 3: 1}))
        assert await writer.flush() == 400
        assert writer.last_seq == 400 and writer.committed == 400
        audit_seq = await writer.audit("test", "noop", {"k": 1})
        assert audit_seq == 1
    assert seen_by_run == [100]
    spans = [(r.first_seq, r.last_seq) for r in reports if r.observations]
    assert spans[0][0] == 1 and spans[-1][1] == 400
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(spans))
    assert all(r.observations <= 64 + 300 for r in reports)  # batch_size caps rows, a write_many stays whole
    assert sum(r.samples for r in reports) == 1
    assert count(storage_engine, Observation) == 400
    with session_factory(storage_engine)() as session:
        assert verify_chain(session).ok
        sample = session.execute(select(SwarmSample)).scalar_one()
        assert sample.probed == {"0": 17, "3": 1} and sample.dht_peers == 17


async def test_run_errors_reach_only_their_caller(storage_engine: Engine, add_torrent: AddTorrent,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Not contained by the writer (p2pwatch/monitor/contain.py is the daemon's): the caller gets the error,
    the writer logs nothing of it and goes on."""
    tid = add_torrent(storage_engine, "ab" * 20)
    async with open_writer(storage_engine) as writer:
        await writer.write(obs(tid, 1))
        with pytest.raises(ZeroDivisionError):
            await writer.run(lambda session: 1 // 0)
        await writer.write(obs(tid, 2))
        assert await writer.flush() == 2
    assert not [r for r in caplog.records if r.name.startswith("p2pwatch.storage")]


async def test_rows_lost_while_stopping_are_logged_once_by_count(storage_engine: Engine, add_torrent: AddTorrent,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A failed batch stops the writer; what is still queued is committed while stopping, and what cannot be is
    never dropped silently: one error line with the row count and the traceback (the batch's error still raises)."""
    tid = add_torrent(storage_engine, "ab" * 20)
    with pytest.raises(BaseException) as info:
        async with open_writer(storage_engine, batch_size=1) as writer:
            await writer.write(obs(tid + 100, 1))  # the writer takes it alone (batch_size 1): it fails
            await writer.write_many([obs(tid + 100, 2), obs(tid + 100, 3)])  # queued behind it: lost at the stop
            await writer.flush()
    assert any(isinstance(e, LocalProtocolError | StorageError) for e in leaves(info.value)), info.value
    lost = [r for r in caplog.records if r.name == "p2pwatch.storage.writer"]
    assert [r.getMessage() for r in lost] == ["the writer could not commit 2 queued items while stopping"]
    assert lost[0].exc_info is not None and count(storage_engine, Observation) == 0


async def test_leaving_commits_what_was_queued(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    tid = add_torrent(storage_engine, "ab" * 20)
    async with open_writer(storage_engine, batch_size=10, channel_size=500) as writer:
        for n in range(300):
            await writer.write(obs(tid, n))
    assert count(storage_engine, Observation) == 300
    with trio.CancelScope() as scope:
        async with open_writer(storage_engine, batch_size=10, channel_size=500) as writer:
            for n in range(300, 600):
                await writer.write(obs(tid, n))
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert count(storage_engine, Observation) == 600
    with session_factory(storage_engine)() as session:
        assert verify_chain(session).ok


async def test_a_cancel_right_after_a_write_loses_nothing(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    """The record the writer task has taken off the channel is committed even if the cancel comes first.

    The write hands the record to the idle writer task and yields; trio then runs the writer and this task in
    either order. When this task runs first, the writer starts its commit already cancelled, which once dropped
    the batch (CI lost 10 of 600 rows). Twenty rounds hit that order with probability 1 - 2**-20.
    """
    tid = add_torrent(storage_engine, "ab" * 20)
    for n in range(20):
        with trio.CancelScope() as scope:
            async with open_writer(storage_engine) as writer:
                await trio.testing.wait_all_tasks_blocked()
                await writer.write(obs(tid, n))
                scope.cancel()
                await trio.sleep_forever()
        assert count(storage_engine, Observation) == n + 1
    with session_factory(storage_engine)() as session:
        assert verify_chain(session).ok


async def test_a_failed_batch_stops_the_writer(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    tid = add_torrent(storage_engine, "ab" * 20)
    with pytest.raises(BaseException) as info:  # the type is checked below, exception groups included
        async with open_writer(storage_engine) as writer:
            await writer.write(obs(tid, 1))
            await writer.flush()
            await writer.write(obs(tid + 100, 2))
            await writer.flush()
    assert any(isinstance(e, LocalProtocolError | StorageError) for e in leaves(info.value)), info.value
    assert count(storage_engine, Observation) == 1


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        ObservationWriter(make_engine("sqlite://"))


def test_two_writer_processes_extend_one_chain(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    tid = add_torrent(storage_engine, "cd" * 20)
    url = storage_engine.url.render_as_string(hide_password=False)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.storage.test_storage_writer", "write", url,
                                str(tid), "400"],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:  # both writers open, then both start at once
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    spans = [[tuple(map(int, line.split())) for line in out.splitlines()] for out, _ in outputs]
    owned = [{s for first, last in proc for s in range(first, last + 1)} for proc in spans]
    assert [len(o) for o in owned] == [400, 400]  # every committed row was reported once, to its writer
    assert not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(range(1, 801))
    handovers = sum((seq in owned[0]) != (seq + 1 in owned[0]) for seq in range(1, 800))
    if storage_engine.dialect.name == "postgresql":
        # row locks are fair there, so the two processes really interleave on the one chain; SQLite's busy
        # handler is not fair and may let one process write all its rows first (still one linear chain)
        assert handovers > 1
    with session_factory(storage_engine)() as session:
        report = verify_chain(session)
    assert report.ok and report.checked == 800


async def _write_process(url: str, torrent_id: int, total: int) -> None:
    engine = make_engine(url)

    def show(report: CommitReport) -> None:
        if report.observations:
            print(report.first_seq, report.last_seq, flush=True)

    try:
        async with open_writer(engine, batch_size=7, on_commit=show) as writer:
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
            for n in range(total):
                await writer.write(obs(torrent_id, n))
                if n % 5 == 4:
                    await writer.flush()
    finally:
        engine.dispose()


if __name__ == "__main__":
    if sys.argv[1] == "write":
        trio.run(_write_process, sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
