"""Helpers for tests of the registry and its reload: a migrated SQLite store, items registered into it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from p2pwatch.errors import P2PWatchError
from p2pwatch.investigate.registry import add_content, add_keywords, create_case, get_case
from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.storage.db import make_engine, session_factory, upgrade_database


@contextmanager
def sqlite_store(directory: Path) -> Iterator[Engine]:
    """A migrated SQLite store in ``directory``, disposed of afterwards."""
    engine = make_engine(f"sqlite:///{directory / 'p2pwatch.db'}")
    upgrade_database(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def register(engine: Engine, case: str, fingerprints: list[Fingerprint], keywords: tuple[str, ...] = ()) -> None:
    """Register ``fingerprints`` and ``keywords`` under ``case`` (created when it does not exist yet)."""
    with session_factory(engine)() as session:
        try:
            c = get_case(session, case)
        except P2PWatchError:
            c = create_case(session, case)
        for fp in fingerprints:
            add_content(session, c, fp)
        add_keywords(session, c, keywords)
        session.commit()
