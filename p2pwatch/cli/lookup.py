"""``p2pwatch lookup INFOHASH_OR_MAGNET [--record]`` (docs/CLI.md)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click
import trio
from sqlalchemy import Engine

from p2pwatch.cli.cases import parse_target
from p2pwatch.cli.dht import node_config
from p2pwatch.cli.options import (
    NetworkOptions,
    dht_bind_remedies,
    emit_json,
    explain_bind,
    handle_errors,
    network_options,
)
from p2pwatch.config import load_config
from p2pwatch.endpoints import format_addr
from p2pwatch.errors import P2PWatchError
from p2pwatch.investigate.examine import observation_records, swarm_samples
from p2pwatch.investigate.geoip import GeoLookup
from p2pwatch.investigate.lookup import LookupOutcome, lookup, outcome_json
from p2pwatch.torrent.magnet import parse_magnet


def registry_for_lookup(obj: dict[str, Any], engine: Engine | None = None) -> tuple[Any, Any, str | None]:
    """The open engine and the registry index, or (None, None, a note) when there is no database yet (lookup
    still works). The index holds slim entries: the v1 piece tables are read from the store only for the
    items a torrent's file sizes select (as the monitor does), so a lookup does not parse every registered
    fingerprint whole. ``engine``: the caller's (the web app's), used and left open; without it one is
    opened, which the caller disposes of after the lookup."""
    from p2pwatch.investigate.registry_sync import RegistrySync
    from p2pwatch.storage.db import open_database, session_factory

    owned = engine is None
    if engine is None:
        try:
            engine = open_database(obj)
        except P2PWatchError as exc:
            return None, None, f"no registry to match against ({exc})"
    sessions = session_factory(engine)
    sync = RegistrySync(sessions)
    try:
        with sessions() as session:
            sync.apply(sync.read(session))
    except BaseException:
        if owned:
            engine.dispose()
        raise
    return engine, sync.index, None


def _record(obj: dict[str, Any], outcome: LookupOutcome, magnet: str | None, geo: GeoLookup,
            engine: Engine | None = None) -> int:
    from p2pwatch.cli.session import cli_session
    from p2pwatch.investigate.registry import record_match, upsert_torrent
    from p2pwatch.storage.db import writer_sessionmaker
    from p2pwatch.storage.ledger import append_observations, insert_swarm_samples

    with contextlib.ExitStack() as stack:
        if engine is None:
            session = stack.enter_context(cli_session(obj))
        else:
            session = stack.enter_context(writer_sessionmaker(engine)())
            stack.enter_context(session.begin())
        torrent = upsert_torrent(session, outcome.infohash, metainfo=outcome.metainfo, magnet=magnet, source="lookup")
        for match in outcome.report.matches if outcome.report else []:
            record_match(session, match, torrent, actor="lookup")
        records = observation_records(torrent.id, outcome.exam, geo)
        if records:
            append_observations(session, records)
        insert_swarm_samples(session, swarm_samples(torrent.id, outcome.exam))
    return len(records)


def lookup_document(obj: dict[str, Any], dht_id: bytes, metainfo: Any, magnet: str | None, net: NetworkOptions, *,
                    probes: int = 8, no_dht: bool = False, record: bool = False,
                    engine: Engine | None = None) -> dict[str, Any]:
    """The whole lookup as the CLI and the web app run it: peers, metadata, files, matches, probes; with
    ``record`` also stored (torrent, matches, observations, a swarm sample). Blocking (runs its own trio loop).
    ``engine``: the web app's, reused for the registry and the record and left open; without it the lookup
    opens its own and disposes of it."""
    trackers = list(net.trackers)
    if magnet:
        trackers += list(parse_magnet(magnet).trackers)
    if metainfo is not None:
        trackers += [url for tier in metainfo.trackers for url in tier]
    config = load_config(obj.get("config_file"), overrides={"dht.allow_local": net.allow_local or None})
    owned = engine is None
    engine, index, note = registry_for_lookup(obj, engine)
    geo = GeoLookup([config.geoip_mmdb] if config.geoip_mmdb else None)
    bind_ip = net.bind.rsplit(":", 1)[0] if net.bind else None
    home = Path(str(obj["home"]))

    async def run() -> LookupOutcome:
        dht = None if no_dht else await node_config(net, home)
        return await lookup(dht_id, config=config, dht=dht, trackers=trackers, metainfo=metainfo, index=index,
                            timeout=net.timeout, probe_limit=probes, bind_ip=bind_ip, geo=geo)

    try:
        with explain_bind(dht_bind_remedies()):
            outcome = trio.run(run)
    finally:
        if owned and engine is not None:
            engine.dispose()
    doc = outcome_json(outcome, geo)
    if note:
        doc["notes"].append(note)
    if record:
        doc["recorded_observations"] = _record(obj, outcome, magnet, geo, None if owned else engine)
    return doc


@click.command("lookup")
@click.argument("target")
@click.option("--record", is_flag=True, help="store the torrent, matches and observations")
@click.option("--probes", type=int, default=8, show_default=True, help="peers to probe")
@click.option("--no-dht", is_flag=True, help="ask only the trackers")
@click.option("--json", "as_json", is_flag=True)
@network_options
@click.pass_obj
@handle_errors
def lookup_command(obj: dict[str, Any], target: str, record: bool, probes: int, no_dht: bool, as_json: bool,
                   net: NetworkOptions) -> None:
    """One infohash or magnet: peers from the DHT and trackers, metadata, files, matches, probed peers."""
    dht_id, metainfo, magnet = parse_target(target)
    if not as_json and sys.stderr.isatty():
        click.echo(f"looking up {dht_id.hex()} (up to {net.timeout:g} s)…", err=True)
    doc = lookup_document(obj, dht_id, metainfo, magnet, net, probes=probes, no_dht=no_dht, record=record)
    if as_json:
        emit_json(doc)
        return
    print_lookup(doc)


def print_lookup(doc: dict[str, Any]) -> None:
    """The human form of a lookup document (:func:`lookup_document`): files, trackers, matches, peers."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{doc['infohash']}[/bold]  {doc['name'] or '(metadata not found)'}")
    for f in doc["files"]:
        console.print(f"  {f['length']:>14,}  {f['path']}")
    console.print(f"DHT: {doc['dht_peers'] if doc['dht_peers'] is not None else '-'} peers")
    for t in doc["trackers"]:
        console.print(f"tracker {t['tracker']}: " + (t.get("error") or
                      f"{t['seeders']} seeders, {t['leechers']} leechers, {t['completed']} completed"))
    if doc["matches"]:
        for m in doc["matches"]:
            console.print(f"[red]MATCH[/red] case {m['case']}: {m['file']} by {m['method']} "
                          f"({m['bytes_fetched']:,} bytes fetched)")
    else:
        console.print("no match with registered content")
    for c in doc["candidates"]:
        console.print(f"keyword candidate (case {c['case']}): {c['keyword']!r} in {c['text']!r}")
    table = Table(title="peers (levels: 0 listed, 1 connected, 2 advertised, 3 served a verified piece)")
    for column in ("peer", "level", "sources", "client", "country", "network"):
        table.add_column(column)
    for p in doc["peers"]:
        table.add_row(format_addr((p["ip"], p["port"])), str(p["level"]) + (" FLAGGED" if p["flagged"] else ""),
                      ",".join(p["sources"]), p["client"] or "", p["country"] or "", p["asn"] or "")
    console.print(table)
    for n in doc["notes"]:
        console.print(f"note: {n}")
