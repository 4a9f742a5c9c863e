"""Work claiming on the watch list; SKIP LOCKED between sessions and between two processes on PostgreSQL.

Run as a script (``python -m tests.storage.test_storage_claims worker URL NAME``) it is one claiming process: it
reads commands on stdin (``claim N`` keeps the transaction open, ``commit``, ``drain N``, ``exit``) and
answers each with one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sqlalchemy import Engine, select

from p2pwatch.storage.claims import claim_due_watches, ensure_watch, release_watch, renew_claims, unwatch_case
from p2pwatch.storage.db import make_engine, session_factory, writer_sessionmaker
from p2pwatch.storage.models import Case, Watch

if TYPE_CHECKING:
    from tests.pg import TemporaryPostgres

pytest_plugins = ["tests.pg"]
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
AddTorrent = Callable[..., int]


def make_watches(engine: Engine, add_torrent: AddTorrent, count: int, *, due: bool = True) -> list[int]:
    torrents = [add_torrent(engine, f"{n:040x}") for n in range(1, count + 1)]
    with session_factory(engine)() as session, session.begin():
        for i, tid in enumerate(torrents):
            watch = ensure_watch(session, tid, NOW - timedelta(minutes=count - i))
            if not due:
                watch.next_check_at = NOW + HOUR
    return torrents


def claim(engine: Engine, worker: str, now: datetime, limit: int, lease: timedelta = HOUR) -> list[int]:
    with writer_sessionmaker(engine)() as session, session.begin():
        return [c.torrent_id for c in claim_due_watches(session, worker, now, limit, lease)]


def test_claims_take_due_watches_oldest_first(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    torrents = make_watches(storage_engine, add_torrent, 8)
    later = make_watches(storage_engine, lambda e, d: add_torrent(e, "f" + d[1:]), 2, due=False)
    with session_factory(storage_engine)() as session, session.begin():
        session.execute(select(Watch).where(Watch.torrent_id == torrents[7])).scalar_one().active = False
    assert claim(storage_engine, "w1", NOW, 3) == torrents[:3]
    assert claim(storage_engine, "w2", NOW, 10) == torrents[3:7]  # not w1's, not inactive, not future
    assert claim(storage_engine, "w3", NOW, 10) == []
    with session_factory(storage_engine)() as session, session.begin():
        assert release_watch(session, torrents[0], "w2", now=NOW, next_check_at=NOW) is False  # not w2's
        assert release_watch(session, torrents[0], "w1", now=NOW, next_check_at=NOW + HOUR,
                             peer_seen_at=NOW, status="alive")
        assert renew_claims(session, "w1", torrents[1:3], NOW + timedelta(minutes=30), HOUR) == 2
        assert renew_claims(session, "w2", torrents[1:3], NOW, HOUR) == 0
    # after an hour: w2's leases ran out, w1's renewed ones did not; the released watch is due again
    # (ties on next_check_at go by watch id, and the released watch is the oldest row)
    assert claim(storage_engine, "w4", NOW + HOUR + timedelta(seconds=1), 10) == \
        [*torrents[3:7], torrents[0], *later]
    assert claim(storage_engine, "w5", NOW + 2 * HOUR, 10) == torrents[1:3]
    with session_factory(storage_engine)() as session:
        first = session.execute(select(Watch).where(Watch.torrent_id == torrents[0])).scalar_one()
    assert (first.status, first.last_peer_at, first.last_checked_at, first.claimed_by) == ("alive", NOW, NOW, "w4")
    assert first.status_changed_at == NOW


def test_watch_list_and_cases(storage_engine: Engine, add_torrent: AddTorrent) -> None:
    a, b = add_torrent(storage_engine, "a" * 40), add_torrent(storage_engine, "b" * 40)
    with session_factory(storage_engine)() as session, session.begin():
        one, two = Case(name="one", created_at=NOW), Case(name="two", created_at=NOW)
        session.add_all([one, two])
        session.flush()
        ensure_watch(session, a, NOW, case_id=one.id, reason="match")
        ensure_watch(session, a, NOW, case_id=one.id, reason="match")  # idempotent
        ensure_watch(session, a, NOW, case_id=two.id)
        ensure_watch(session, b, NOW, case_id=one.id)
        assert unwatch_case(session, one.id) == 1  # b stops; a is still wanted by case two
        rows = session.execute(select(Watch.torrent_id, Watch.active))
        active = {row.torrent_id: row.active for row in rows}
        assert active == {a: True, b: False}
        ensure_watch(session, b, NOW + HOUR, case_id=two.id)  # watched again: active and due now
        watch_b = session.execute(select(Watch).where(Watch.torrent_id == b)).scalar_one()
        assert watch_b.active and watch_b.next_check_at == NOW + HOUR


def test_skip_locked_between_sessions(postgres_server: TemporaryPostgres, add_torrent: AddTorrent) -> None:
    url = postgres_server.migrated_database()
    engine = make_engine(url)
    try:
        torrents = make_watches(engine, add_torrent, 10)
        sessions = writer_sessionmaker(engine)
        with sessions() as first, sessions() as second:
            got_first = [c.torrent_id for c in claim_due_watches(first, "a", NOW, 4, HOUR)]
            second.execute(select(1))
            second.connection().exec_driver_sql("SET LOCAL lock_timeout = '20s'")  # a hang would be a failure
            got_second = [c.torrent_id for c in claim_due_watches(second, "b", NOW, 4, HOUR)]
            assert got_first == torrents[:4]
            assert got_second == torrents[4:8]  # the first session's rows are locked, not yet committed
            first.commit()
            second.commit()
    finally:
        engine.dispose()


def _ask(proc: subprocess.Popen[str], command: str) -> object:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    assert line, f"worker died: {proc.stderr.read() if proc.stderr else ''}"
    return json.loads(line)


def test_two_processes_claim_disjoint_work(postgres_server: TemporaryPostgres, add_torrent: AddTorrent) -> None:
    url = postgres_server.migrated_database()
    engine = make_engine(url)
    try:
        torrents = set(make_watches(engine, add_torrent, 300))
    finally:
        engine.dispose()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.storage.test_storage_claims", "worker", url, name],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    try:
        a_held = _ask(procs[0], "claim 5")  # transaction left open: rows locked
        b_held = _ask(procs[1], "claim 5")
        assert isinstance(a_held, list) and isinstance(b_held, list)
        assert len(a_held) == len(b_held) == 5 and not set(a_held) & set(b_held)
        _ask(procs[0], "commit")
        _ask(procs[1], "commit")
        for proc in procs:  # both drain the rest at the same time
            assert proc.stdin is not None
            proc.stdin.write("drain 3\n")
            proc.stdin.flush()
        drained = [json.loads(proc.stdout.readline()) for proc in procs if proc.stdout is not None]
        for proc in procs:
            _ask(proc, "exit")
    finally:
        for proc in procs:
            proc.wait()
    a_all, b_all = set(a_held) | set(drained[0]), set(b_held) | set(drained[1])
    assert not a_all & b_all
    assert a_all | b_all == torrents
    assert len(a_all) + len(b_all) == len(torrents)


def _worker(url: str, name: str, stdin: IO[str]) -> None:
    engine = make_engine(url)
    sessions = writer_sessionmaker(engine)
    session = sessions()
    try:
        for line in stdin:
            command, *args = line.split()
            if command == "claim":
                reply: object = [c.torrent_id for c in claim_due_watches(session, name, NOW, int(args[0]), HOUR)]
            elif command == "commit":
                session.commit()
                reply = "ok"
            elif command == "drain":
                drained: list[int] = []
                while batch := claim_due_watches(session, name, NOW, int(args[0]), HOUR):
                    session.commit()
                    drained.extend(c.torrent_id for c in batch)
                session.commit()
                reply = drained
            else:
                print(json.dumps("bye"), flush=True)
                return
            print(json.dumps(reply), flush=True)
    finally:
        session.close()
        engine.dispose()


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3], sys.stdin)
