"""``p2pwatch db``: schema migrations and the state of the evidence store (docs/CLI.md, docs/storage.md).

* ``db upgrade``: apply the Alembic migrations to ``--db`` or ``sqlite:///<home>/p2pwatch.db`` (the home
  directory is created); safe to repeat.
* ``db status``: URL (password hidden), schema revision against this p2pwatch's head, chain heads; exit 1
  when the schema needs ``db upgrade``.
* ``db verify``: recompute both hash chains (observations, audit log); exit 1 unless both are intact.
* ``db purge --older-than DAYS``: the retention purge (addresses of level 0–2 observations), audited.

Every other command opens the database through ``p2pwatch.storage.db.open_database``, which refuses a
missing or stale schema with one line naming ``p2pwatch db upgrade``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from p2pwatch.cli.options import emit_json, handle_errors
from p2pwatch.errors import SchemaOutOfDate, StorageError
from p2pwatch.storage.db import (
    check_schema,
    current_revision,
    database_url,
    display_url,
    first_line,
    head_revision,
    make_engine,
    open_database,
    session_factory,
    upgrade_database,
    writer_sessionmaker,
)


def _with_engine(obj: dict[str, Any], action: Callable[[Engine], Any], *, check: bool) -> Any:
    engine = open_database(obj, check=check)
    try:
        return action(engine)
    except SQLAlchemyError as exc:
        raise StorageError(f"database {display_url(engine.url)}: {first_line(exc)}") from None
    finally:
        engine.dispose()


@click.group()
def db() -> None:
    """The evidence store: migrations, status, chain verification, retention."""


@db.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.pass_obj
@handle_errors
def upgrade(obj: dict[str, Any], as_json: bool) -> None:
    """Create the database or bring its schema to this version of p2pwatch."""
    url = database_url(obj)
    engine = make_engine(url)
    try:
        before, after = upgrade_database(engine)
    finally:
        engine.dispose()
    if as_json:
        emit_json({"url": display_url(url), "from": before, "to": after, "changed": before != after})
    elif before == after:
        click.echo(f"{display_url(url)}: schema already at revision {after}")
    else:
        click.echo(f"{display_url(url)}: schema upgraded from {before or 'nothing'} to revision {after}")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.pass_obj
@handle_errors
def status(obj: dict[str, Any], as_json: bool) -> None:
    """Show the schema revision and the chain heads; exit 1 when `db upgrade` is needed."""
    from p2pwatch.storage.ledger import chain_head

    def read(engine: Engine) -> dict[str, Any]:
        doc: dict[str, Any] = {"url": display_url(engine.url), "backend": engine.dialect.name,
                               "revision": current_revision(engine), "head": head_revision()}
        try:
            check_schema(engine)
        except SchemaOutOfDate as exc:
            doc.update(up_to_date=False, problem=str(exc))
            return doc
        doc["up_to_date"] = True
        with session_factory(engine)() as session:
            for chain in ("observations", "audit"):
                seq, digest = chain_head(session, chain)
                doc[f"{chain}_seq"], doc[f"{chain}_hash"] = seq, digest
        return doc

    doc = _with_engine(obj, read, check=False)
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"database:  {doc['url']} ({doc['backend']})")
        click.echo(f"schema:    {doc['revision'] or 'none'} (this p2pwatch: {doc['head']})")
        if doc["up_to_date"]:
            click.echo(f"observations: {doc['observations_seq']} (head {doc['observations_hash']})")
            click.echo(f"audit log:    {doc['audit_seq']} (head {doc['audit_hash']})")
    if not doc["up_to_date"]:
        if not as_json:
            click.echo(f"p2pwatch: error: {doc['problem']}", err=True)
        raise SystemExit(1)


@db.command("verify")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.pass_obj
@handle_errors
def verify(obj: dict[str, Any], as_json: bool) -> None:
    """Recompute the observation and audit hash chains; exit 0 only when both are intact."""
    from p2pwatch.storage.ledger import verify_chain

    def run(engine: Engine) -> list[Any]:
        with session_factory(engine)() as session:
            return [verify_chain(session, chain=chain) for chain in ("observations", "audit")]

    reports = _with_engine(obj, run, check=True)
    if as_json:
        emit_json([{"chain": r.chain, "ok": r.ok, "rows": r.checked, "first_seq": r.first_seq,
                    "last_seq": r.last_seq, "last_hash": r.last_hash, "purged": r.purged,
                    "problems": [{"seq": p.seq, "reason": p.reason} for p in r.problems],
                    "problem_count": r.problem_count} for r in reports])
    else:
        for report in reports:
            click.echo(report.summary())
            for problem in report.problems[:20]:
                click.echo(f"  seq {problem.seq}: {problem.reason}")
    if not all(r.ok for r in reports):
        raise SystemExit(1)


@db.command("purge")
@click.option("--older-than", "days", type=click.FloatRange(min=0), required=True, metavar="DAYS",
              help="erase addresses of level 0-2 observations older than this many days")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.pass_obj
@handle_errors
def purge(obj: dict[str, Any], days: float, as_json: bool) -> None:
    """Data minimisation: erase addresses of old level 0-2 observations (counts and chain stay)."""
    from p2pwatch.storage.retention import purge_addresses

    def run(engine: Engine) -> Any:
        with writer_sessionmaker(engine)() as session, session.begin():
            return purge_addresses(session, days=days, now=datetime.now(UTC), actor="cli")

    report = _with_engine(obj, run, check=True)
    doc = {"cutoff": report.cutoff.isoformat(), "observations_purged": report.observations_purged,
           "peers_deleted": report.peers_deleted, "audit_seq": report.audit_seq}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"erased the addresses of {report.observations_purged} observations older than "
                   f"{report.cutoff:%Y-%m-%d %H:%M} UTC and {report.peers_deleted} peer records "
                   f"(audit entry {report.audit_seq})")


__all__ = ["db"]
