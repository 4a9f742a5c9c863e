"""A real, throwaway PostgreSQL server for the storage tests and scripts/bench_store.py.

``TemporaryPostgres`` runs Debian's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``, or
``initdb`` on PATH): ``initdb`` into a fresh temporary directory with trust authentication for the
superuser ``p2pwatch``, then ``pg_ctl start`` with the server listening on 127.0.0.1 at a free port and its
unix socket in the same temporary directory. initdb and the server refuse to run as root, so under root
both run as the ``postgres`` system user (the Debian package creates it), or ``nobody``, which gets the
directory ``chown``-ed to it. ``stop()`` shuts the server down (fast, then immediate) and deletes the
directory; it is also registered with ``atexit`` in case a test run dies.

Fixtures (session-scoped server, one database per test):

* ``postgres_server``: the running server (PostgreSQL missing: ``require_component`` skips, or fails
  under ``CI=true``).
* ``postgres_url``: the URL of a database created on it for the session (no schema).
* ``storage_url``: parametrized over ``sqlite`` and ``postgresql``: a fresh database at the head schema
  revision, so one test body runs against both backends. PostgreSQL databases are cloned from a migrated
  template database (fast) and dropped after the test. ``storage_engine``: an engine on it.

Helper fixtures for the storage tests: ``add_torrent`` and ``tamper`` (raw SQL with the append-only
triggers off, standing in for someone editing the database behind p2pwatch's back).

Use them from a test module with ``pytest_plugins = ["tests.pg"]``, and do not import this module at run
time from a test module (pytest could then not rewrite its asserts and warns).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.conftest import free_port, require_component

USER = "p2pwatch"
HOST = "127.0.0.1"
TEMPLATE_DB = "p2pwatch_template"


def find_postgres_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and neither the postgres nor the nobody user exists")


class TemporaryPostgres:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 at a free port."""

    def __init__(self, bin_dir: Path, *, fsync: bool = False) -> None:
        self.bin_dir = bin_dir
        self.fsync = fsync
        self.port = 0
        self.root: Path | None = None
        self._user = _run_as()
        self._counter = itertools.count(1)
        self._template_ready = False

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._user is not None:
            kwargs.update(user=self._user[0], group=self._user[1], extra_groups=[])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
               "HOME": str(self.root), "PGTZ": "UTC"}
        return subprocess.run([str(self.bin_dir / args[0]), *args[1:]], check=check, capture_output=True,
                              text=True, env=env, cwd=str(self.root), **kwargs)  # type: ignore[call-overload]

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="p2pwatch-pg-"))
        if self._user is not None:
            os.chown(self.root, *self._user)
        atexit.register(self.stop)
        try:
            self._cmd("initdb", "-D", str(self.data_dir), "-U", USER, "-A", "trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            self.port = free_port(HOST, socket.SOCK_STREAM)
            options = (f"-p {self.port} -k {self.root} -c listen_addresses={HOST} -c max_connections=100 "
                       "-c shared_buffers=64MB -c timezone=UTC")
            if not self.fsync:
                options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            self._cmd("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-o", options,
                      "-w", "-t", "120", "start")
        except subprocess.CalledProcessError as exc:
            log = self.root / "server.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr or exc.stdout}\n{detail}") from exc

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            done = self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop",
                             check=False)
            if done.returncode != 0:
                self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@{HOST}:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=USER, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str | None = None, *, template: str = "template0") -> str:
        """Create a database (a copy of ``template``); return its URL."""
        name = name or f"p2pwatch_{os.getpid()}_{next(self._counter)}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def migrated_database(self) -> str:
        """A fresh database at the head schema revision (cloned from a migrated template)."""
        if not self._template_ready:
            from p2pwatch.storage.db import make_engine, upgrade_database

            engine = make_engine(self.create_database(TEMPLATE_DB))
            try:
                upgrade_database(engine)
            finally:
                engine.dispose()
            self._template_ready = True
        return self.create_database(template=TEMPLATE_DB)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    bin_dir = find_postgres_bin()
    require_component("PostgreSQL", bin_dir is not None,
                      "install Debian's postgresql package (scripts/test.sh does)")
    assert bin_dir is not None
    server = TemporaryPostgres(bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: TemporaryPostgres) -> str:
    return postgres_server.create_database("p2pwatch_session")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the head revision, on each backend in turn."""
    if request.param == "sqlite":
        from p2pwatch.storage.db import make_engine, upgrade_database

        url = f"sqlite:///{tmp_path / 'p2pwatch.db'}"
        engine = make_engine(url)
        try:
            upgrade_database(engine)
        finally:
            engine.dispose()
        yield url
        return
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    url = server.migrated_database()
    try:
        yield url
    finally:
        server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def storage_engine(storage_url: str) -> Iterator[Engine]:
    """An engine (p2pwatch settings and guards) on ``storage_url``; disposed after the test."""
    from p2pwatch.storage.db import make_engine

    engine = make_engine(storage_url)
    try:
        yield engine
    finally:
        engine.dispose()


def insert_torrent(engine: Engine, dht_id: str, *, name: str = "t") -> int:
    """Insert a torrent row and return its id."""
    from datetime import UTC, datetime

    from p2pwatch.storage.db import session_factory
    from p2pwatch.storage.models import Torrent

    with session_factory(engine)() as session, session.begin():
        torrent = Torrent(dht_id=dht_id, infohash_v1=dht_id, name=name, first_seen=datetime(2024, 1, 1, tzinfo=UTC),
                          source="test")
        session.add(torrent)
        session.flush()
        return torrent.id


def raw_tamper(engine: Engine, sql: str) -> None:
    """Run raw SQL with the append-only triggers switched off (someone editing the database directly)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            conn.exec_driver_sql(sql)
        else:
            triggers = [r[0] for r in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger'")]
            names = [r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
            for name in names:
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
            conn.exec_driver_sql(sql)
            for trigger in triggers:
                conn.exec_driver_sql(trigger)


@pytest.fixture
def add_torrent() -> Callable[..., int]:
    """``add_torrent(engine, dht_id, name=...) -> torrent id``."""
    return insert_torrent


@pytest.fixture
def tamper() -> Callable[[Engine, str], None]:
    """``tamper(engine, sql)``: raw SQL with the append-only triggers off."""
    return raw_tamper
