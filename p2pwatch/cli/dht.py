"""``p2pwatch dht peers`` and ``p2pwatch dht sample`` (docs/CLI.md)."""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path

import click
import trio

from p2pwatch.cli.options import (
    NetworkOptions,
    dht_bind_remedies,
    emit_json,
    explain_bind,
    handle_errors,
    network_options,
    parse_host_port,
    parse_infohash_or_magnet,
)
from p2pwatch.dht.crawler import Crawler, DiscoveredInfohash, Discovery
from p2pwatch.dht.node import DHTConfig, DHTNode, PeersFound, open_dht_node
from p2pwatch.errors import ConfigError, P2PWatchError

log = logging.getLogger(__name__)


class BootstrapFailed(P2PWatchError):
    """No bootstrap node answered."""


async def resolve_bootstrap(entries: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """HOST:PORT strings to IP endpoints; names are resolved (the public routers), IPs pass through."""
    out: list[tuple[str, int]] = []
    for entry in entries:
        host, port = parse_host_port(entry, what="--bootstrap")
        try:
            ipaddress.ip_address(host)
            out.append((host, port))
            continue
        except ValueError:
            pass
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("cannot resolve bootstrap node %s: %s", host, exc)
            continue
        out.extend((str(info[4][0]), port) for info in infos if info[0] == trio.socket.AF_INET)
    return tuple(dict.fromkeys(out))


async def node_config(net: NetworkOptions, home: Path, state_name: str = "dht-cli.json") -> DHTConfig:
    host, port = net.bind_address(0)
    bootstrap = await resolve_bootstrap(net.bootstrap_or_default())
    if not bootstrap:
        raise BootstrapFailed("no bootstrap node could be resolved; pass --bootstrap IP:PORT")
    return DHTConfig(bind_host=host, bind_port=port, bootstrap=bootstrap, allow_local=net.allow_local,
                     state_file=home / state_name, query_timeout=min(5.0, net.timeout / 2),
                     short_timeout=min(0.5, net.timeout / 10))


async def _ensure_bootstrapped(node: DHTNode) -> None:
    if len(node.table) == 0:
        boot = ", ".join(f"{h}:{p}" for h, p in node.config.bootstrap)
        raise BootstrapFailed(f"no DHT node answered (bootstrap: {boot}); check --bootstrap and the network")


@click.group()
def dht() -> None:
    """Mainline DHT lookups (BEP 5) and sampling (BEP 51)."""


@dht.command("peers")
@click.argument("infohash")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document (collected as the peers come)")
@network_options
@click.pass_obj
@handle_errors
def peers_command(obj: dict[str, object], infohash: str, as_json: bool, net: NetworkOptions) -> None:
    """Peers the DHT lists for INFOHASH (level-0 claims, with the nodes that reported them).

    Peers are printed as the replies listing them arrive; the lookup starts from the bootstrap nodes while
    the node's own bootstrap runs alongside, and it does not wait for nodes that stay silent.
    """
    target = parse_infohash_or_magnet(infohash)
    home = Path(str(obj["home"]))

    def show(event: PeersFound) -> None:
        for ip, port in event.new:
            click.echo(f"{ip}:{port}  reported by {event.reporter[0]}:{event.reporter[1]}")
        sys.stdout.flush()

    async def run() -> dict[tuple[str, int], set[tuple[str, int]]]:
        config = await node_config(net, home)
        with trio.move_on_after(net.timeout) as scope:
            async with open_dht_node(config, wait_bootstrap=False) as node, node.open_get_peers(target) as stream:
                async for event in stream:
                    if isinstance(event, PeersFound) and not as_json:
                        show(event)
                result = stream.result
                if result.responses == 0:
                    await _ensure_bootstrapped(node)
                    boot = ", ".join(f"{h}:{p}" for h, p in config.bootstrap)
                    raise BootstrapFailed(f"no DHT node answered (bootstrap: {boot}); check --bootstrap")
                return result.peers
        if scope.cancelled_caught:
            raise BootstrapFailed(f"DHT lookup did not finish within {net.timeout:g} s")
        return {}

    with explain_bind(dht_bind_remedies()):
        found = trio.run(run)
    if as_json:
        emit_json([{"ip": ip, "port": port, "reported_by": sorted(f"{h}:{p}" for h, p in reporters)}
                   for (ip, port), reporters in sorted(found.items())])
        return
    click.echo(f"{len(found)} peers for {target.hex()}")


@dht.command("sample")
@click.option("--duration", type=float, default=60.0, show_default=True, help="seconds to crawl")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@network_options
@click.pass_obj
@handle_errors
def sample_command(obj: dict[str, object], duration: float, as_json: bool, net: NetworkOptions) -> None:
    """Crawl the DHT with BEP 51 sample_infohashes (plus passive capture) for --duration seconds."""
    if duration <= 0:
        raise ConfigError("--duration must be positive")
    home = Path(str(obj["home"]))
    found: list[DiscoveredInfohash] = []

    async def run() -> None:
        config = await node_config(net, home)
        send, receive = trio.open_memory_channel[Discovery](1024)
        async with open_dht_node(config) as node:
            await _ensure_bootstrapped(node)
            crawler = Crawler(node, send, segments=16)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(crawler.run)
                with trio.move_on_after(duration):
                    async for event in receive:
                        if isinstance(event, DiscoveredInfohash):
                            found.append(event)
                            if not as_json and sys.stderr.isatty():
                                click.echo(f"\r{len(found)} infohashes", nl=False, err=True)
                nursery.cancel_scope.cancel()

    with explain_bind(dht_bind_remedies()):
        trio.run(run)
    if as_json:
        emit_json([{"infohash": d.infohash.hex(), "reported_by": f"{d.reported_by[0]}:{d.reported_by[1]}",
                    "message": d.message, "seen_at": d.at.isoformat()} for d in found])
        return
    if sys.stderr.isatty():
        click.echo("", err=True)
    for d in found:
        click.echo(f"{d.infohash.hex()}  from {d.reported_by[0]}:{d.reported_by[1]} ({d.message})")
    click.echo(f"{len(found)} infohashes in {duration:g} s")
