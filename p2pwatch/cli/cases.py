"""Investigator commands: ``case``, ``register``, ``watch``, ``matches`` (docs/CLI.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from p2pwatch.cli.options import emit_json, handle_errors
from p2pwatch.cli.session import cli_session
from p2pwatch.errors import ConfigError, P2PWatchError
from p2pwatch.investigate.registry import (
    add_content,
    add_keywords,
    create_case,
    get_case,
    list_cases,
    unwatch,
    upsert_torrent,
    watch,
)
from p2pwatch.investigate.registry import withdraw_case as withdraw
from p2pwatch.investigate.summaries import case_matches
from p2pwatch.locale import tr as _
from p2pwatch.match.fingerprint import Fingerprint, fingerprint_file, load_fingerprints
from p2pwatch.storage.models import CaseWatch, Content, Keyword, Torrent
from p2pwatch.torrent.magnet import parse_infohash, parse_magnet
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console().print(table)


@click.group()
def case() -> None:
    """Cases: create, list, show, withdraw."""


@case.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def case_create(obj: dict[str, Any], name: str, as_json: bool) -> None:
    """Create a case."""
    with cli_session(obj) as session:
        created = create_case(session, name)
        doc = {"case": created.name, "created_at": created.created_at.isoformat()}
    if as_json:
        emit_json(doc)
    else:
        click.echo(_("case %(case)s created", case=repr(name)))


@case.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def case_list(obj: dict[str, Any], as_json: bool) -> None:
    """List cases with their counts."""
    with cli_session(obj) as session:
        rows = list_cases(session)
    if as_json:
        emit_json(rows)
        return
    _table(_("cases"), [_("case"), _("created"), _("withdrawn"), _("contents"), _("keywords"), _("matches"),
                        _("watched")],
           [[r["case"], r["created_at"][:19], (r["withdrawn_at"] or "")[:19], r["contents"], r["keywords"],
             r["matches"], r["watched"]] for r in rows])


@case.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def case_show(obj: dict[str, Any], name: str, as_json: bool) -> None:
    """A case's content (fingerprint ids only), keywords, watched torrents and matches."""
    with cli_session(obj) as session:
        c = get_case(session, name, active=False)
        contents = [{"content": r.id, "fingerprint_id": r.fingerprint_id, "kind": r.kind, "size": r.size,
                     "label": r.label} for r in session.execute(select(Content).where(Content.case_id == c.id))
                    .scalars()]
        keywords = [k.text for k in session.execute(select(Keyword).where(Keyword.case_id == c.id)).scalars()]
        joined = select(CaseWatch, Torrent).join(Torrent, Torrent.id == CaseWatch.torrent_id)
        watched = [{"infohash": t.dht_id, "name": t.name, "reason": w.reason}
                   for w, t in session.execute(joined.where(CaseWatch.case_id == c.id))]
        doc: dict[str, Any] = {"case": c.name, "created_at": c.created_at.isoformat(),
               "withdrawn_at": c.withdrawn_at.isoformat() if c.withdrawn_at else None,
               "contents": contents, "keywords": keywords, "watched": watched,
               "matches": _matches(session, name)}
    if as_json:
        emit_json(doc)
        return
    click.echo(f"case {doc['case']}  created {doc['created_at'][:19]}"
               + (f"  WITHDRAWN {doc['withdrawn_at'][:19]}" if doc["withdrawn_at"] else ""))
    click.echo(f"keywords: {', '.join(keywords) or '-'}")
    _table(_("content (hashes only)"), ["id", _("kind"), _("size"), "sha256", _("label")],
           [[x["content"], x["kind"], x["size"], x["fingerprint_id"], x["label"]] for x in contents])
    _table(_("watched torrents"), [_("infohash"), _("name"), _("reason")],
           [[w["infohash"], w["name"], w["reason"]] for w in watched])


@case.command("withdraw")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def case_withdraw(obj: dict[str, Any], name: str, as_json: bool) -> None:
    """Delete a case's fingerprints and keywords and stop its monitoring (an audit entry remains)."""
    with cli_session(obj) as session:
        detail = withdraw(session, name)
    if as_json:
        emit_json(detail)
    else:
        click.echo(_("case %(case)s withdrawn: %(fp)s fingerprints and %(kw)s keywords deleted, %(tw)s torrents "
                     "unwatched", case=repr(name), fp=detail["fingerprints_deleted"], kw=detail["keywords_deleted"],
                     tw=detail["torrents_unwatched"]))


def _load_or_fingerprint(path: Path, progress: bool) -> list[tuple[Fingerprint, str | None]]:
    """A fingerprint file is imported; any other file is fingerprinted here (and never copied or kept)."""
    try:
        return [(fp, None) for fp in load_fingerprints(path)]
    except P2PWatchError:
        pass
    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"fingerprinting {path.name}", total=path.stat().st_size or 1)
            fp = fingerprint_file(path, progress=lambda done, total: bar.update(task, completed=done, total=total))
    else:
        fp = fingerprint_file(path)
    return [(fp, path.name)]


@click.command()
@click.option("--case", "case_name", required=True, help="the case to add to")
@click.argument("items", nargs=-1, type=click.Path(path_type=Path))
@click.option("--keyword", "keywords", multiple=True, help="a name or title to look for (repeatable)")
@click.option("--label/--no-label", default=False, help="keep the file's name as a label (off: names can identify)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def register(obj: dict[str, Any], case_name: str, items: tuple[Path, ...], keywords: tuple[str, ...], label: bool,
             as_json: bool) -> None:
    """Add content (files are fingerprinted, never stored) and keywords to a case."""
    if not items and not keywords:
        raise ConfigError(_("give files or fingerprint files to register, or --keyword"))
    import sys

    loaded = []
    for item in items:
        if not item.exists():
            raise ConfigError(_("%(path)s: no such file", path=str(item)))
        loaded += _load_or_fingerprint(item, progress=not as_json and sys.stderr.isatty())
    with cli_session(obj) as session:
        c = get_case(session, case_name)
        added = []
        for fp, name in loaded:
            row, new = add_content(session, c, fp, label=name if label else None)
            added.append({"content": row.id, "fingerprint_id": fp.fingerprint_id, "kind": fp.kind.value,
                          "size": fp.size, "new": new})
        new_keywords = add_keywords(session, c, keywords)
    if as_json:
        emit_json({"case": case_name, "contents": added, "keywords_added": new_keywords})
        return
    for a in added:
        click.echo(f"{'registered' if a['new'] else 'already registered'}: {a['kind']} {a['size']} bytes "
                   f"sha256 {a['fingerprint_id']}")
    if keywords:
        click.echo(f"{new_keywords} keyword(s) added")


def parse_target(text: str) -> tuple[bytes, Metainfo | None, str | None]:
    """An infohash, a magnet or a .torrent path → (DHT id, metainfo, magnet)."""
    if text.startswith("magnet:"):
        try:
            magnet = parse_magnet(text)
        except P2PWatchError as exc:
            raise ConfigError(f"{text[:60]!r} is not a valid magnet: {exc}") from None
        return magnet.infohash.dht_id, None, text
    path = Path(text)
    if path.suffix == ".torrent" or path.is_file():
        try:
            metainfo = parse_torrent(path.read_bytes(), require_layers=False)  # layers come from peers if needed
        except OSError as exc:
            raise ConfigError(f"cannot read {text}: {exc.strerror}") from None
        except P2PWatchError as exc:
            raise ConfigError(f"{text} is not a valid .torrent: {exc}") from None
        return metainfo.infohash, metainfo, None
    try:
        return parse_infohash(text).dht_id, None, None
    except P2PWatchError:
        raise ConfigError(_("%(text)s is not an infohash (40/64 hex or 32 base32), a magnet or a .torrent file",
                            text=repr(text))) from None


@click.command("watch")
@click.option("--case", "case_name", required=True)
@click.argument("targets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def watch_command(obj: dict[str, Any], case_name: str, targets: tuple[str, ...], as_json: bool) -> None:
    """Put known torrents (infohash, magnet or .torrent) under monitoring for a case."""
    parsed = [parse_target(t) for t in targets]
    with cli_session(obj) as session:
        c = get_case(session, case_name)
        out = []
        for dht_id, metainfo, magnet in parsed:
            torrent = upsert_torrent(session, dht_id, metainfo=metainfo, magnet=magnet, source="watch")
            watch(session, c, torrent)
            out.append({"infohash": dht_id.hex(), "name": torrent.name})
    if as_json:
        emit_json(out)
    else:
        for o in out:
            click.echo(f"watching {o['infohash']} {o['name'] or ''}")


@click.command("unwatch")
@click.option("--case", "case_name", required=True)
@click.argument("targets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def unwatch_command(obj: dict[str, Any], case_name: str, targets: tuple[str, ...], as_json: bool) -> None:
    """Stop watching torrents for a case (monitoring stops unless another case still wants them)."""
    parsed = [parse_target(t)[0] for t in targets]
    with cli_session(obj) as session:
        c = get_case(session, case_name)
        out = []
        for dht_id in parsed:
            torrent = session.execute(select(Torrent).where(Torrent.dht_id == dht_id.hex())).scalar_one_or_none()
            if torrent is None:
                raise ConfigError(_("torrent %(infohash)s is not in the database (record it with `lookup --record` or "
                                    "`watch`)", infohash=dht_id.hex()))
            out.append({"infohash": torrent.dht_id, "monitoring_stopped": unwatch(session, c, torrent)})
    if as_json:
        emit_json(out)
    else:
        for o in out:
            click.echo(_("no longer watching %(infohash)s for case %(case)s", infohash=o["infohash"],
                         case=repr(case_name)))


def _matches(session: Any, case_name: str | None) -> list[dict[str, Any]]:
    rows = case_matches(session, case_name)
    for row in rows:
        row.pop("proof")
    return rows


@click.command()
@click.option("--case", "case_name", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def matches(obj: dict[str, Any], case_name: str | None, as_json: bool) -> None:
    """Confirmed matches, with their method and the bytes fetched to prove them."""
    with cli_session(obj) as session:
        if case_name:
            get_case(session, case_name, active=False)
        rows = _matches(session, case_name)
    if as_json:
        emit_json(rows)
        return
    _table(_("matches"), [_("case"), _("infohash"), _("file"), _("method"), _("bytes fetched"), _("confirmed")],
           [[r["case"], r["infohash"][:16] + "…", r["file"], r["method"], f"{r['bytes_fetched']:,}",
             r["confirmed_at"][:19]] for r in rows])
