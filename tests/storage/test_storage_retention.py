"""Retention (old level 0–2 addresses erased, counts and chain kept, purge audited); key/value state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from p2pwatch.errors import ConfigError
from p2pwatch.storage.db import session_factory, writer_sessionmaker
from p2pwatch.storage.ledger import ObservationRecord, append_observations, iter_observations, verify_chain
from p2pwatch.storage.models import AuditEntry, Peer
from p2pwatch.storage.retention import purge_addresses

pytest_plugins = ["tests.pg"]
NOW = datetime(2024, 9, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def seen(torrent_id: int, ip: str, level: int, age: timedelta) -> ObservationRecord:
    return ObservationRecord(torrent_id=torrent_id, ip=ip, port=51413, level=level,
                             source="dht" if level == 0 else "probe", observed_at=NOW - age,
                             reporter="192.0.2.7:6881" if level == 0 else None,
                             transcript={"level": level, "ip": ip} if level else None)


def test_purge_erases_old_leads_only(storage_engine: Engine, add_torrent: Callable[..., int]) -> None:
    tid = add_torrent(storage_engine, "9" * 40)
    records = [
        seen(tid, "203.0.113.1", 0, 40 * DAY),   # old lead: erased; the peer has only old leads: deleted
        seen(tid, "203.0.113.1", 2, 35 * DAY),   # old lead: erased
        seen(tid, "203.0.113.2", 3, 40 * DAY),   # old evidence: kept, peer kept
        seen(tid, "203.0.113.2", 1, 40 * DAY),   # old lead of an evidence peer: erased, peer kept
        seen(tid, "203.0.113.3", 0, 40 * DAY),   # old lead ...
        seen(tid, "203.0.113.3", 0, 2 * DAY),    # ... and a recent one: the peer stays
        seen(tid, "203.0.113.4", 4, 50 * DAY),   # old evidence
        seen(tid, "203.0.113.5", 1, 29 * DAY),   # inside the period: kept
    ]
    for rec in records:  # one batch each, so peers' first/last seen are exact
        with writer_sessionmaker(storage_engine)() as session, session.begin():
            append_observations(session, [rec])
    with session_factory(storage_engine)() as session:
        before = list(iter_observations(session))

    with writer_sessionmaker(storage_engine)() as session, session.begin():
        report = purge_addresses(session, days=30, now=NOW, actor="test")
    assert (report.observations_purged, report.peers_deleted, report.cutoff) == (4, 1, NOW - 30 * DAY)

    with session_factory(storage_engine)() as session:
        after = list(iter_observations(session))
        peers = set(session.execute(select(Peer.ip)).scalars())
        entry = session.execute(select(AuditEntry).where(AuditEntry.seq == report.audit_seq)).scalar_one()
        chain = verify_chain(session)
        audit = verify_chain(session, chain="audit")
    erased = [o.seq for o in after if o.ip is None]
    assert erased == [1, 2, 4, 5]
    for old, new in zip(before, after, strict=True):
        if new.ip is None:
            assert (new.port, new.reporter, new.addr_salt) == (None, None, None)
            assert old.level <= 2 and old.observed_at < NOW - 30 * DAY
        else:
            assert (new.ip, new.port, new.reporter, new.addr_salt) == (old.ip, old.port, old.reporter, old.addr_salt)
        assert (new.level, new.observed_at, new.addr_digest, new.row_hash) == (old.level, old.observed_at,
                                                                              old.addr_digest, old.row_hash)
    assert Counter(o.level for o in after) == Counter(r.level for r in records)  # counts stay
    assert peers == {"203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"}
    assert chain.ok and chain.purged == 4 and chain.checked == len(records)
    assert audit.ok and audit.checked == 1
    assert (entry.actor, entry.action) == ("test", "retention.purge")
    assert entry.detail["observations_purged"] == 4 and entry.detail["peers_deleted"] == 1

    with writer_sessionmaker(storage_engine)() as session, session.begin():
        again = purge_addresses(session, days=30, now=NOW, actor="test")
    assert (again.observations_purged, again.peers_deleted, again.audit_seq) == (0, 0, 2)


def test_negative_retention_is_a_config_error(storage_engine: Engine) -> None:
    with writer_sessionmaker(storage_engine)() as session, pytest.raises(ConfigError):
        purge_addresses(session, days=-1, now=NOW)


def test_key_value_state(storage_engine: Engine) -> None:
    from p2pwatch.storage.state import delete_state, get_state, put_state

    sessions = writer_sessionmaker(storage_engine)
    with sessions() as session, session.begin():
        assert get_state(session, "dht.node_id", "none") == "none"
        put_state(session, "dht.node_id", "ab" * 20, NOW)
        put_state(session, "monitor.schedule", {"next": [1, 2]}, NOW)
    with sessions() as session, session.begin():
        put_state(session, "monitor.schedule", {"next": [3]}, NOW + DAY)
    with sessions() as session, session.begin():
        assert get_state(session, "dht.node_id") == "ab" * 20
        assert get_state(session, "monitor.schedule") == {"next": [3]}
        assert delete_state(session, "dht.node_id") and not delete_state(session, "dht.node_id")
        assert get_state(session, "dht.node_id") is None
