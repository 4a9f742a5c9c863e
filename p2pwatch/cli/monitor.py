"""``p2pwatch monitor [--duration S] [--bind6 [IPV6]:PORT]`` — the daemon (docs/CLI.md)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import click
import trio

from p2pwatch.cli.dht import parse_bind6, resolve_bootstrap
from p2pwatch.cli.options import (
    METRICS_BIND_REMEDY,
    MONITOR_DHT6_BIND_REMEDY,
    MONITOR_DHT_BIND_REMEDY,
    NetworkOptions,
    dht_bind_remedies,
    emit_json,
    explain_bind,
    handle_errors,
    network_options,
)
from p2pwatch.config import load_config
from p2pwatch.dht.node import SOCKET_PURPOSE6 as DHT6_SOCKET
from p2pwatch.dht.node_types import DHTConfig, config_from_settings
from p2pwatch.logsetup import setup_logging
from p2pwatch.monitor.daemon import Monitor
from p2pwatch.storage.db import open_database

log = logging.getLogger("p2pwatch.monitor")


@click.command("monitor")
@click.option("--duration", type=float, default=None, help="stop after this many seconds (default: run until "
                                                          "SIGTERM/SIGINT)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None)
@click.option("--metrics-port", type=int, default=None, help="Prometheus metrics on 127.0.0.1:PORT")
@click.option("--no-crawl", is_flag=True, help="only watch the watch list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary when stopping")
@click.option("--bind6", default=None, metavar="[IPV6]:PORT",
              help="also run an IPv6 DHT node (BEP 32) bound to [IPV6]:PORT; IPv6 --bootstrap entries go to it "
                   "([dht] bind6)")
@network_options
@click.pass_obj
@handle_errors
def monitor(obj: dict[str, Any], duration: float | None, log_format: str | None, metrics_port: int | None,
            no_crawl: bool, as_json: bool, bind6: str | None, net: NetworkOptions) -> None:
    """Crawl the DHT, fetch metadata, match, watch and record, until stopped."""
    home = Path(str(obj["home"]))
    overrides: dict[str, Any] = {"log_format": log_format, "metrics_port": metrics_port,
                                 "dht.allow_local": True if net.allow_local else None,
                                 "crawler.enabled": False if no_crawl else None, "dht.bind6": bind6}
    if net.bootstrap:
        overrides["dht.bootstrap"] = list(net.bootstrap)
    if net.trackers:
        overrides["watcher.trackers"] = list(net.trackers)
    if net.bind:
        host, _, port = net.bind.rpartition(":") if net.bind.count(":") == 1 else (net.bind, "", "")
        overrides["dht.bind"] = host or net.bind
        if port:
            overrides["dht.port"] = int(port)
    config = load_config(obj.get("config_file"), overrides=overrides)
    where6 = "--bind6" if bind6 else "[dht] bind6"
    bind6_address = parse_bind6(config.dht.bind6, where6) if config.dht.bind6 else None  # checked before any I/O
    setup_logging(config.log_format)
    engine = open_database(obj)
    home.mkdir(parents=True, exist_ok=True)

    async def run() -> dict[str, Any]:
        bootstrap = await resolve_bootstrap(tuple(config.dht.bootstrap))
        dht = config_from_settings(config.dht, bootstrap=bootstrap, state_file=home / "dht-node.json")
        dht6: DHTConfig | None = None
        if bind6_address is not None:  # BEP 32: the IPv6 DHT, its own socket, table, id and state file
            bootstrap6 = await resolve_bootstrap(tuple(config.dht.bootstrap), socket.AF_INET6)
            if not bootstrap6:
                log.warning("no IPv6 bootstrap node could be resolved: the IPv6 node waits to be contacted")
            dht6 = config_from_settings(config.dht, bind_host=bind6_address[0], bind_port=bind6_address[1],
                                        bootstrap=bootstrap6, state_file=home / "dht-node-ipv6.json")
        mon = Monitor(config, engine, dht, home=home, bind_ip=None if config.dht.bind == "0.0.0.0" else config.dht.bind,
                      dht6=dht6)
        state = await mon.run(duration)
        return {"torrents_checked": state.checked, "matches": state.matches, "watched": len(state.watched),
                "metrics": dict(mon.metrics.counters)}

    from p2pwatch.monitor.metrics import SOCKET_PURPOSE as METRICS_SOCKET

    remedies = {**dht_bind_remedies(MONITOR_DHT_BIND_REMEDY), DHT6_SOCKET: MONITOR_DHT6_BIND_REMEDY,
                METRICS_SOCKET: METRICS_BIND_REMEDY}
    try:
        with explain_bind(remedies):
            summary = trio.run(run)
    finally:
        engine.dispose()
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"monitor stopped: {summary['torrents_checked']} torrents checked, "
                   f"{len(summary['matches'])} new matches, {summary['watched']} torrents watched")
