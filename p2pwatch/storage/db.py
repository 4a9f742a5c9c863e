"""Database URLs, engines, sessions, migrations and the schema-version check (DESIGN.md principle 3).

* URL: ``--db``/``P2PWATCH_DB`` or ``sqlite:///<home>/p2pwatch.db``. ``postgresql://`` and ``postgres://``
  are taken to mean ``postgresql+psycopg://`` (psycopg 3 is the only PostgreSQL driver p2pwatch supports).
* SQLite: WAL journal, ``synchronous=FULL`` (a commit that returned is on disk, so it survives SIGKILL and
  power loss; the writer commits in batches, so the fsync per commit is cheap), a 30 s busy timeout,
  foreign keys on. Python's sqlite3 transaction handling is replaced by explicit ``BEGIN``; sessions from
  ``writer_sessionmaker`` use ``BEGIN IMMEDIATE``, taking the write lock before reading a chain head, so
  several processes can share one SQLite file without a chain fork or a busy-snapshot error.
* PostgreSQL: psycopg 3; chain appends lock the chain-head row with ``SELECT … FOR UPDATE``.
* Statement guard (append-only layer 2): engines made here refuse any Core or ORM UPDATE/DELETE statement on
  ``observations`` or ``audit_log``, except an UPDATE of ``observations`` executed with the execution option
  ``p2pwatch_retention_purge=True`` (p2pwatch.storage.retention).
* Schema: created and changed only by the Alembic migrations (``upgrade_database``); ``check_schema`` raises
  ``SchemaOutOfDate`` naming ``p2pwatch db upgrade`` when the database is not at this code's head revision.
  ``open_database`` never creates an SQLite file just to find it empty.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Delete, Engine, Update, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from p2pwatch.errors import AppendOnlyViolation, ConfigError, SchemaOutOfDate, StorageError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DB_FILENAME = "p2pwatch.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 64 * 1024
UPGRADE_HINT = "run `p2pwatch db upgrade`"
PURGE_OPTION = "p2pwatch_retention_purge"
_APPEND_ONLY = frozenset({"observations", "audit_log"})


def default_url(home: Path) -> str:
    """``sqlite:///<home>/p2pwatch.db``."""
    return f"sqlite:///{Path(home) / DB_FILENAME}"


def normalize_url(text: str) -> URL:
    """Parse a database URL; the PostgreSQL driver is always psycopg 3. ConfigError when unusable."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise ConfigError(f"--db {text!r} is not a database URL; use sqlite:///PATH or "
                          "postgresql+psycopg://USER@HOST/DBNAME") from None
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise ConfigError(f"--db driver {driver!r} is not supported; use postgresql+psycopg://")
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ConfigError(f"--db driver {driver!r} is not supported; use sqlite:///PATH")
        return url
    raise ConfigError(f"--db {url.drivername!r} databases are not supported; use sqlite:///PATH or "
                      "postgresql+psycopg://USER@HOST/DBNAME")


def database_url(obj: Mapping[str, Any]) -> str:
    """The database URL of a CLI invocation: ``obj["db_url"]`` or the SQLite file under ``obj["home"]``."""
    text = obj.get("db_url") or default_url(Path(obj["home"]))
    return normalize_url(text).render_as_string(hide_password=False)


def display_url(url: str | URL) -> str:
    """A URL fit for messages and logs (password hidden)."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str | URL) -> Path | None:
    """The file of an SQLite URL, or None for in-memory SQLite and for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    immediate = conn.get_execution_options().get("sqlite_begin_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _guard_statement(conn: Any, clauseelement: Any, multiparams: Any, params: Any,
                     execution_options: Mapping[str, Any]) -> None:
    if not isinstance(clauseelement, Update | Delete):
        return
    table = getattr(clauseelement.table, "name", None)
    if table not in _APPEND_ONLY:
        return
    if (isinstance(clauseelement, Update) and table == "observations"
            and (execution_options.get(PURGE_OPTION) or conn.get_execution_options().get(PURGE_OPTION))):
        return
    verb = "UPDATE" if isinstance(clauseelement, Update) else "DELETE"
    raise AppendOnlyViolation(f"{table} rows are append-only: {verb} refused")


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine with p2pwatch's SQLite pragmas or psycopg settings and the append-only statement guard."""
    parsed = normalize_url(url if isinstance(url, str) else url.render_as_string(hide_password=False))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    else:
        kwargs.setdefault("connect_args", {}).setdefault("application_name", "p2pwatch")
        kwargs.setdefault("pool_pre_ping", True)
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"cannot use database {display_url(parsed)}: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    event.listen(engine, "before_execute", _guard_statement)
    return engine


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads and small writes (``expire_on_commit=False``)."""
    return sessionmaker(engine, expire_on_commit=False)


def writer_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that append to a chain: ``BEGIN IMMEDIATE`` on SQLite (write lock first), plain elsewhere."""
    bind = engine.execution_options(sqlite_begin_immediate=True) if engine.dialect.name == "sqlite" else engine
    return sessionmaker(bind, expire_on_commit=False)


def alembic_config(connection: Any = None) -> Config:
    """An Alembic configuration built in code (no alembic.ini); ``connection`` is used when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise StorageError("p2pwatch ships no migrations; the installation is broken")
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def first_line(exc: BaseException) -> str:
    """The first line of a database error (drivers add hints on further lines; the CLI prints one line)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it has no p2pwatch schema (or no SQLite file)."""
    path = sqlite_path(engine.url)
    if path is not None and not path.exists():
        return None
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise StorageError(f"cannot open database {display_url(engine.url)}: {first_line(exc)}") from None


def check_schema(engine: Engine) -> str:
    """Return the head revision when the database is at it; raise SchemaOutOfDate naming the fix otherwise."""
    where = display_url(engine.url)
    path = sqlite_path(engine.url)
    if path is not None and not path.exists():
        raise SchemaOutOfDate(f"no database at {path}; {UPGRADE_HINT} to create it")
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return head
    if current is None:
        tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
        what = "holds tables that are not p2pwatch's" if tables else "has no p2pwatch schema"
        raise SchemaOutOfDate(f"database {where} {what}; {UPGRADE_HINT}")
    if current not in _known_revisions():
        raise SchemaOutOfDate(f"database {where} is at schema revision {current}, newer than this p2pwatch "
                              f"(head {head}); upgrade p2pwatch itself")
    raise SchemaOutOfDate(f"database {where} is at schema revision {current}, this p2pwatch needs {head}; "
                          f"{UPGRADE_HINT}")


def upgrade_database(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply the migrations up to ``revision`` (creating the SQLite file and its directory).

    Returns the revisions before and after (``None`` before: the database had no p2pwatch schema).
    """
    path = sqlite_path(engine.url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    before = current_revision(engine)
    if before is not None and before not in _known_revisions():
        raise SchemaOutOfDate(f"database {display_url(engine.url)} is at schema revision {before}, newer than "
                              "this p2pwatch; upgrade p2pwatch itself")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"upgrading {display_url(engine.url)} failed: {first_line(exc)}") from None
    return before, current_revision(engine) or "base"


def downgrade_database(engine: Engine, revision: str) -> None:
    """Revert migrations down to ``revision`` (``"base"`` drops everything): for tests and developers."""
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def open_database(obj: Mapping[str, Any], *, check: bool = True) -> Engine:
    """The engine every command uses; with ``check`` it refuses a missing or stale schema first."""
    engine = make_engine(database_url(obj))
    if check:
        try:
            check_schema(engine)
        except BaseException:
            engine.dispose()
            raise
    return engine
