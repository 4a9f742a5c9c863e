"""Crash safety: a writer process killed with SIGKILL mid-stream loses nothing it reported committed.

Run as a script (``python -m tests.storage.test_storage_crash stream URL TORRENT_ID``) it is the victim: it streams
observations through the writer forever and prints ``first last`` for every committed batch.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio
from sqlalchemy import Engine, func, select

from p2pwatch.storage.db import make_engine, session_factory
from p2pwatch.storage.ledger import ObservationRecord, chain_head, verify_chain
from p2pwatch.storage.models import Observation
from p2pwatch.storage.writer import CommitReport, open_writer

pytest_plugins = ["tests.pg"]
REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 8, 1, tzinfo=UTC)
COMMITS_BEFORE_KILL = 25


def obs(torrent_id: int, n: int) -> ObservationRecord:
    level = n % 4
    return ObservationRecord(torrent_id=torrent_id, ip=f"10.1.{n // 250 % 250}.{n % 250 + 1}", port=40000 + n % 20000,
                             level=level, source="probe" if level else "tracker",
                             observed_at=T0 + timedelta(microseconds=n), reporter="http://tracker.invalid/announce",
                             transcript={"piece": n} if level else None)


def test_sigkill_loses_nothing_reported(storage_engine: Engine, add_torrent: Callable[..., int]) -> None:
    tid = add_torrent(storage_engine, "ee" * 20)
    url = storage_engine.url.render_as_string(hide_password=False)
    proc = subprocess.Popen([sys.executable, "-m", "tests.storage.test_storage_crash", "stream", url, str(tid)],
                            cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported: list[tuple[int, int]] = []
    try:
        while len(reported) < COMMITS_BEFORE_KILL:
            line = proc.stdout.readline()
            assert line, f"the writer process ended early: {proc.stderr.read() if proc.stderr else ''}"
            first, last = map(int, line.split())
            reported.append((first, last))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    promised = reported[-1][1]
    assert [first for first, _ in reported] == [1] + [last + 1 for _, last in reported[:-1]]

    with session_factory(storage_engine)() as session:
        head_seq, head_hash = chain_head(session)
        present = session.execute(select(func.count()).select_from(Observation)
                                  .where(Observation.seq <= promised)).scalar_one()
        report = verify_chain(session)
    assert present == promised  # every reported seq survived
    assert head_seq >= promised
    assert report.ok, report.problems[:5]
    assert (report.checked, report.last_hash) == (head_seq, head_hash)

    async def restart() -> int:
        async with open_writer(storage_engine) as writer:
            for n in range(10):
                await writer.write(obs(tid, 10**6 + n))
            return await writer.flush()

    assert trio.run(restart) == head_seq + 10
    with session_factory(storage_engine)() as session:
        after = verify_chain(session)
        resumed = session.get(Observation, head_seq + 1)
    assert after.ok and after.checked == head_seq + 10
    assert resumed is not None and resumed.prev_hash == head_hash


async def _stream(url: str, torrent_id: int) -> None:
    engine = make_engine(url)

    def show(report: CommitReport) -> None:
        if report.observations:
            print(report.first_seq, report.last_seq, flush=True)

    async with open_writer(engine, batch_size=200, on_commit=show) as writer:
        n = 0
        while True:
            await writer.write_many([obs(torrent_id, n + i) for i in range(50)])
            n += 50


if __name__ == "__main__":
    if sys.argv[1] == "stream":
        trio.run(_stream, sys.argv[2], int(sys.argv[3]))
