"""``p2pwatch probe …`` (docs/CLI.md): ``probe tracker URL INFOHASH`` lives here; ``probe peer``
joins the same :data:`probe` group from its own module.

``probe tracker`` announces (``started``, numwant 200), announces ``stopped`` so that it leaves no phantom
peer, then scrapes (so the counts do not include us). Peers are level-0 claims of that tracker; non-global
addresses are hidden unless ``--allow-local``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import click
import trio

from p2pwatch.cli.options import (
    SOURCE_ADDRESS_REMEDY,
    NetworkOptions,
    emit_json,
    explain_bind,
    handle_errors,
    network_options,
    parse_host_port,
    parse_infohash_or_magnet,
)
from p2pwatch.endpoints import format_addr
from p2pwatch.errors import ConfigError
from p2pwatch.netguard import is_acceptable_remote
from p2pwatch.probe.trackers import UDP_SOCKET_PURPOSE, TrackerConfig, TrackerProbe, probe_tracker


@click.group()
def probe() -> None:
    """Probe trackers and peers: turn listings into observations."""




def tracker_config(net: NetworkOptions) -> TrackerConfig:
    """Timeouts from ``--timeout``; ``--bind IP[:PORT]`` gives the source address (the port is not used)."""
    local = None
    if net.bind:
        try:
            local = str(ipaddress.ip_address(net.bind))  # a bare address, IPv6 included
        except ValueError:
            host = parse_host_port(net.bind, default_port=0, what="--bind")[0]
            try:
                local = str(ipaddress.ip_address(host))
            except ValueError:
                raise ConfigError(f"--bind {net.bind!r} must be an IP address, optionally IP:PORT") from None
    return TrackerConfig(timeout=net.timeout, stop_timeout=min(5.0, net.timeout), local_address=local)


def probe_document(result: TrackerProbe, allow_local: bool) -> dict[str, Any]:
    """The ``--json`` document: CLI.md's fields first, then the extras."""
    shown = [p for p in result.peers if is_acceptable_remote(p.ip, allow_local)]
    return {
        "seeders": result.seeders,
        "leechers": result.leechers,
        "completed": result.completed,
        "peers": [{"ip": p.ip, "port": p.port} for p in shown],
        "tracker": result.tracker,
        "infohash": result.infohash.hex(),
        "interval": result.announce.interval,
        "min_interval": result.announce.min_interval,
        "warning": result.announce.warning,
        "tracker_id": result.announce.tracker_id.hex() if result.announce.tracker_id else None,
        "external_ip": result.announce.external_ip,
        "hidden_peers": len(result.peers) - len(shown),
        "scrape_error": result.scrape_error,
        "stopped": result.stopped,
        "stop_error": result.stop_error,
    }


def _print_summary(doc: dict[str, Any]) -> None:
    def shown(value: Any) -> str:
        return "?" if value is None else str(value)

    click.echo(f"tracker   {doc['tracker']}")
    click.echo(f"infohash  {doc['infohash']}")
    click.echo(f"seeders {shown(doc['seeders'])}   leechers {shown(doc['leechers'])}   "
               f"completed {shown(doc['completed'])}")
    if doc["interval"] is not None:
        extra = f" (min {doc['min_interval']} s)" if doc["min_interval"] is not None else ""
        click.echo(f"interval  {doc['interval']} s{extra}")
    if doc["warning"]:
        click.echo(f"warning   {doc['warning']}")
    if doc["scrape_error"]:
        click.echo(f"scrape    failed: {doc['scrape_error']}")
    click.echo(f"peers     {len(doc['peers'])} listed (claims by this tracker, not yet observed)")
    for peer in doc["peers"]:
        click.echo(f"  {format_addr((peer['ip'], peer['port']))}")
    if doc["hidden_peers"]:
        click.echo(f"  ({doc['hidden_peers']} loopback/private peers hidden; --allow-local shows them)")
    if not doc["stopped"]:
        click.echo(f"note: could not deregister (stopped): {doc['stop_error']}", err=True)


@probe.command("tracker")
@click.argument("url")
@click.argument("infohash")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.option("--port", type=click.IntRange(1, 65535), default=6881, show_default=True,
              help="the port we announce (we deregister before the probe ends)")
@click.option("--numwant", type=click.IntRange(0, 1000), default=200, show_default=True,
              help="how many peers to ask for")
@network_options
@handle_errors
def tracker(url: str, infohash: str, as_json: bool, port: int, numwant: int, net: NetworkOptions) -> None:
    """Announce to the tracker at URL (udp://, http://, https://), deregister, then scrape it."""
    ident = parse_infohash_or_magnet(infohash)
    config = tracker_config(net)
    with explain_bind({UDP_SOCKET_PURPOSE: SOURCE_ADDRESS_REMEDY}):
        result = trio.run(lambda: probe_tracker(url, ident, port=port, numwant=numwant, config=config))
    doc = probe_document(result, net.allow_local)
    if as_json:
        emit_json(doc)
    else:
        _print_summary(doc)
