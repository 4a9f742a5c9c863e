"""Alembic environment of p2pwatch: runs online only, on a connection the caller passes in.

p2pwatch.storage.db.upgrade_database builds an ``alembic.config.Config`` in code (no alembic.ini), puts
an open SQLAlchemy connection into ``config.attributes["connection"]`` and calls ``command.upgrade``. When
no connection is given (an ``alembic`` command line pointed at this directory), ``sqlalchemy.url`` is used.
SQLite runs in batch mode so later revisions can alter tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from p2pwatch.storage.models import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("p2pwatch migrations need a connection or sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("p2pwatch migrations run online only (p2pwatch db upgrade)")
run_migrations_online()
