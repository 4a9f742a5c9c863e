"""``recent_listings``: the PEX listings the watcher probes again (by torrent, source, level 0, age; newest first)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from p2pwatch.storage.claims import recent_listings
from p2pwatch.storage.db import session_factory, writer_sessionmaker
from p2pwatch.storage.ledger import ObservationRecord, append_observations

pytest_plugins = ["tests.pg"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_recent_pex_listings(storage_engine: Engine, add_torrent: Callable[..., int]) -> None:
    tid, other = add_torrent(storage_engine, "aa" * 20), add_torrent(storage_engine, "bb" * 20)
    rows = [
        ObservationRecord(tid, "127.0.0.5", 1, 0, "pex", T0, reporter="127.0.0.2:6881"),
        ObservationRecord(tid, "127.0.0.5", 1, 0, "pex", T0 + timedelta(minutes=5), reporter="127.0.0.2:6881"),
        ObservationRecord(tid, "127.0.0.5", 1, 0, "pex", T0 + timedelta(minutes=1), reporter="127.0.0.3:6881"),
        ObservationRecord(tid, "127.0.0.6", 2, 0, "pex", T0 + timedelta(minutes=2), reporter="[::1]:7"),
        ObservationRecord(tid, "127.0.0.7", 3, 0, "pex", T0 - timedelta(hours=7), reporter="127.0.0.2:6881"),  # old
        ObservationRecord(tid, "127.0.0.8", 4, 0, "dht", T0, reporter="127.0.0.2:6881"),  # another source
        ObservationRecord(tid, "127.0.0.9", 5, 2, "probe", T0, reporter="p2pwatch"),
        ObservationRecord(other, "127.0.0.10", 6, 0, "pex", T0, reporter="127.0.0.2:6881"),  # another torrent
    ]
    with writer_sessionmaker(storage_engine)() as session, session.begin():
        append_observations(session, rows)
    with session_factory(storage_engine)() as session:
        got = recent_listings(session, tid, "pex", T0 - timedelta(hours=6), 10)
        assert got == [("127.0.0.5", 1, "127.0.0.2:6881"), ("127.0.0.6", 2, "[::1]:7"),
                       ("127.0.0.5", 1, "127.0.0.3:6881")]
        assert recent_listings(session, tid, "pex", T0 - timedelta(hours=6), 1) == [got[0]]
        assert recent_listings(session, tid, "pex", T0 + timedelta(hours=1), 10) == []
