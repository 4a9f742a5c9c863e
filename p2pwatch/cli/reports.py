"""``peers``, ``timeline`` and ``export`` (docs/CLI.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from p2pwatch.cli.cases import parse_target
from p2pwatch.cli.options import emit_json, handle_errors
from p2pwatch.cli.session import cli_session
from p2pwatch.config import load_config
from p2pwatch.endpoints import format_addr
from p2pwatch.errors import ConfigError
from p2pwatch.investigate.summaries import peer_rows, torrent_timeline
from p2pwatch.locale import tr as _
from p2pwatch.storage.models import Torrent

SPARK = "▁▂▃▄▅▆▇█"


def _torrent(session: Any, target: str) -> Torrent:
    dht_id = parse_target(target)[0]
    torrent = session.execute(select(Torrent).where(Torrent.dht_id == dht_id.hex())).scalar_one_or_none()
    if torrent is None:
        raise ConfigError(_("torrent %(infohash)s is not in the database (record it with `lookup --record` or "
                            "`watch`)", infohash=dht_id.hex()))
    return torrent


@click.command("peers")
@click.argument("infohash")
@click.option("--min-level", type=click.IntRange(0, 4), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def peers(obj: dict[str, Any], infohash: str, min_level: int, as_json: bool) -> None:
    """Peers observed for a torrent, with their best evidence level (only 3–4 count as distribution)."""
    with cli_session(obj) as session:
        rows = peer_rows(session, _torrent(session, infohash), min_level)
    if as_json:
        emit_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=_("peers (0 listed · 1 connected · 2 advertised · 3 served a verified piece · 4 whole file)"))
    for column in (_("peer"), _("level"), _("sources"), _("client"), _("country"), _("network"), _("first seen"),
                   _("last seen")):
        table.add_column(column)
    for r in rows:
        table.add_row(format_addr((r["ip"], r["port"])), f"{r['level']} {r['level_name']}", source_text(r),
                      r["client"] or "", r["country"] or "", r["asn"] or "", r["first_seen"][:19], r["last_seen"][:19])
    Console().print(table)


def source_text(row: dict[str, Any], shown: int = 2) -> str:
    """``dht,pex via 127.0.0.2:6881,probe``: the sources, naming (up to ``shown``) peers that listed it by PEX."""
    via, pex = row["pex_via"], "pex"
    if via:
        pex = "pex via " + ", ".join(via[:shown]) + (f" (+{len(via) - shown})" if len(via) > shown else "")
    return ",".join(pex if s == "pex" else s for s in row["sources"])


def sparkline(values: list[int]) -> str:
    if not values:
        return ""
    top = max(values) or 1
    return "".join(SPARK[min(len(SPARK) - 1, v * (len(SPARK) - 1) // top)] for v in values)


@click.command("timeline")
@click.argument("infohash")
@click.option("--png", "png", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write a plot")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def timeline(obj: dict[str, Any], infohash: str, png: Path | None, as_json: bool) -> None:
    """Peer counts over time and the swarm status (alive, dormant, gone)."""
    config = load_config(obj.get("config_file"))
    with cli_session(obj) as session:
        torrent = _torrent(session, infohash)
        doc = torrent_timeline(session, torrent, config)
        doc.pop("last_checked")
        points = doc["samples"]
    if png is not None:
        from p2pwatch.bundle.plot import render_timeline

        png.write_bytes(render_timeline([{"at": p["at"], "infohash": doc["infohash"], "source": p["source"],
                                       "dht_peers": p["dht_peers"], "seeders": p["seeders"], "leechers": p["leechers"]}
                                         for p in points])[0])
    if as_json:
        emit_json(doc)
        return
    dht = [p["dht_peers"] or 0 for p in points if p["source"] == "dht"]
    click.echo(f"{doc['infohash']}  {doc['name'] or ''}")
    status = doc["status"]  # alive/dormant/gone, translated as a value (not a literal: Babel would extract it)
    click.echo(_("status: %(status)s  (last peer seen %(seen)s)", status=_(status),
                 seen=doc["last_peer_seen"] or _("never")))
    click.echo(f"DHT peers over {len(dht)} samples: {sparkline(dht)}  (max {max(dht, default=0)})")
    if png is not None:
        click.echo(f"plot written to {png}")


@click.command("export")
@click.option("--case", "case_name", required=True)
@click.option("--torrent", default=None, help="only this torrent (infohash)")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def export(obj: dict[str, Any], case_name: str, torrent: str | None, out: Path, as_json: bool) -> None:
    """Write the case's evidence bundle for police (verify it with `p2pwatch verify BUNDLE`)."""
    from p2pwatch.investigate.export import ExportRequest, export_case
    from p2pwatch.locale import current_language

    config = load_config(obj.get("config_file"))
    only = parse_target(torrent)[0].hex() if torrent else None
    if out.exists():
        raise ConfigError(_("%(path)s exists; choose another name (bundles are never overwritten)", path=str(out)))
    with cli_session(obj) as session:
        request = ExportRequest(case_name, out, Path(str(obj["home"])), only, config.digest(),
                                language=current_language(), time_zone=config.time_zone)
        summary = export_case(session, request)
    doc = {"bundle": str(summary.path), "sha256": summary.sha256, "size": summary.size,
           "key_fingerprint": summary.key_fingerprint, "observations": summary.observations,
           "redacted_rows": summary.redacted, "peers": summary.peers,
           "distribution_peers": summary.distribution_peers, "transcripts": summary.transcripts}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"bundle {doc['bundle']} ({doc['size']:,} bytes, sha256 {doc['sha256']})")
        click.echo(f"{doc['observations']} observations, {doc['peers']} peers ({doc['distribution_peers']} at level "
                   f"3-4), signed by key {doc['key_fingerprint']}")
        click.echo(f"check it with: p2pwatch verify {doc['bundle']}   (or python -m evidence verify)")
