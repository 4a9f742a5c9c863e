"""Database sessions for CLI commands: open the engine (refusing a stale schema), one transaction, dispose."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from p2pwatch.storage.db import open_database, writer_sessionmaker


@contextmanager
def cli_session(obj: Mapping[str, Any]) -> Iterator[Session]:
    """A session in one transaction: committed when the block succeeds, rolled back (nothing written) if not."""
    engine = open_database(obj)
    try:
        with writer_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()
