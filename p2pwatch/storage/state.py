"""Key/value state of long-running services (DHT node id and routing table, monitor schedule, counters).

Values are JSON (stored as canonical text in ``state.value``). Keys are namespaced by convention:
``dht.node_id``, ``dht.routing``, ``monitor.<name>``. ``put_state`` is an upsert (``INSERT … ON CONFLICT``)
on both backends; the caller commits, in a session from ``writer_sessionmaker`` or through the writer
(``await writer.run(lambda s: put_state(s, key, value, now))``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from p2pwatch.errors import LocalProtocolError
from p2pwatch.storage.models import State


def get_state(session: Session, key: str, default: Any = None) -> Any:
    """The JSON value stored under ``key``, or ``default``."""
    value = session.execute(select(State.value).where(State.key == key)).scalar_one_or_none()
    return default if value is None else value


def put_state(session: Session, key: str, value: Any, now: datetime | None = None) -> None:
    """Store a JSON value under ``key`` (insert or replace)."""
    if value is None:
        raise LocalProtocolError("state values cannot be null; use delete_state")
    moment = now or datetime.now(UTC)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(State).values(key=key, value=value, updated_at=moment)
    session.execute(stmt.on_conflict_do_update(index_elements=[State.key],
                                               set_={"value": stmt.excluded.value,
                                                     "updated_at": stmt.excluded.updated_at}))


def delete_state(session: Session, key: str) -> bool:
    """Remove ``key``; True when it existed."""
    result = session.execute(delete(State).where(State.key == key))
    return bool(result.rowcount)  # type: ignore[attr-defined]
