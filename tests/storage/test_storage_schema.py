"""Migrations, the schema-version check, URL handling and ``p2pwatch db`` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, inspect

from p2pwatch.cli import main
from p2pwatch.errors import ConfigError, SchemaOutOfDate
from p2pwatch.storage.db import (
    check_schema,
    database_url,
    downgrade_database,
    head_revision,
    make_engine,
    normalize_url,
    open_database,
    upgrade_database,
)
from p2pwatch.storage.models import Base

if TYPE_CHECKING:
    from tests.pg import TemporaryPostgres

pytest_plugins = ["tests.pg"]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'p2pwatch.db'}"
        return
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url.rsplit("/", 1)[1])


def test_models_match_the_migrated_schema(storage_engine: Engine) -> None:
    with storage_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    tables = set(inspect(storage_engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_upgrade_check_and_downgrade(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="p2pwatch db upgrade"):
            check_schema(engine)
        assert upgrade_database(engine) == (None, head_revision())
        assert check_schema(engine) == head_revision()
        assert upgrade_database(engine) == (head_revision(), head_revision())  # idempotent
        downgrade_database(engine, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        with pytest.raises(SchemaOutOfDate, match="no p2pwatch schema; run `p2pwatch db upgrade`"):
            check_schema(engine)
        upgrade_database(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff9999'")
        with pytest.raises(SchemaOutOfDate, match="newer than this p2pwatch"):
            check_schema(engine)
        with pytest.raises(SchemaOutOfDate, match="newer than this p2pwatch"):
            upgrade_database(engine)
    finally:
        engine.dispose()


def test_foreign_tables_are_named(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        if empty_url.startswith("sqlite:///"):
            Path(empty_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE something_else (x INTEGER)")
        with pytest.raises(SchemaOutOfDate, match="not p2pwatch's"):
            check_schema(engine)
    finally:
        engine.dispose()


def test_open_database_never_creates_an_sqlite_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with pytest.raises(SchemaOutOfDate, match=r"no database at .*p2pwatch db upgrade"):
        open_database({"home": home, "db_url": None})
    assert not home.exists()
    engine = open_database({"home": home, "db_url": None}, check=False)
    engine.dispose()
    assert not (home / "p2pwatch.db").exists()


def test_urls(tmp_path: Path) -> None:
    assert database_url({"home": tmp_path, "db_url": None}) == f"sqlite:///{tmp_path}/p2pwatch.db"
    assert database_url({"home": tmp_path, "db_url": "postgresql://u:pw@h/db"}) == \
        "postgresql+psycopg://u:pw@h/db"
    assert normalize_url("postgres://h/db").drivername == "postgresql+psycopg"
    for bad, message in [("mysql://h/db", "not supported"), ("postgresql+psycopg2://h/db", "psycopg2"),
                         ("not a url", "not a database URL")]:
        with pytest.raises(ConfigError, match=message):
            normalize_url(bad)


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_db_commands(empty_url: str, tmp_path: Path) -> None:
    base = ["--home", str(tmp_path / "home"), "--db", empty_url, "db"]
    code, out, err = run_cli(*base, "status")
    assert code == 1 and "p2pwatch db upgrade" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(*base, "verify")
    assert (code, out) == (1, "")
    assert err.strip().count("\n") == 0 and "p2pwatch db upgrade" in err
    code, out, err = run_cli(*base, "upgrade", "--json")
    assert code == 0 and json.loads(out) == {"url": empty_url, "from": None,
                                             "to": head_revision(), "changed": True}
    code, out, _ = run_cli(*base, "status", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["up_to_date"] and doc["observations_seq"] == 0 and doc["audit_seq"] == 0
    code, out, _ = run_cli(*base, "purge", "--older-than", "30", "--json")
    assert code == 0 and json.loads(out)["audit_seq"] == 1
    code, out, _ = run_cli(*base, "verify", "--json")
    reports = json.loads(out)
    assert code == 0 and [(r["chain"], r["ok"], r["rows"]) for r in reports] == [("observations", True, 0),
                                                                                ("audit", True, 1)]
    code, out, err = run_cli(*base, "purge", "--older-than", "-1")
    assert code == 2 and "older-than" in err


def test_cli_default_home_database(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    code, out, _ = run_cli("--home", str(home), "db", "upgrade")
    assert code == 0 and "upgraded" in out
    assert (home / "p2pwatch.db").exists()
    code, out, _ = run_cli("--home", str(home), "db", "status")
    assert code == 0 and head_revision() in out


def test_cli_unreachable_server_is_one_line(tmp_path: Path) -> None:
    import socket

    from tests.conftest import free_port

    port = free_port("127.0.0.1", socket.SOCK_STREAM)
    code, out, err = run_cli("--home", str(tmp_path), "--db", f"postgresql://nobody@127.0.0.1:{port}/x", "db",
                             "status")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "cannot open database" in err
