"""``p2pwatch dht peers`` and ``p2pwatch dht sample`` (docs/CLI.md)."""

from __future__ import annotations

import ipaddress
import logging
import socket
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
from p2pwatch.torrent.compact import format_addr

log = logging.getLogger(__name__)


class BootstrapFailed(P2PWatchError):
    """No bootstrap node answered."""


async def resolve_bootstrap(entries: tuple[str, ...], family: int = socket.AF_INET) -> tuple[tuple[str, int], ...]:
    """HOST:PORT strings to IP endpoints of one address family (BEP 32: the IPv4 and the IPv6 DHT are two
    DHTs); names are resolved (the public routers), IP literals of the other family are left out."""
    out: list[tuple[str, int]] = []
    for entry in entries:
        host, port = parse_host_port(entry, what="--bootstrap")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            if (literal.version == 6) == (family == socket.AF_INET6):
                out.append((host, port))
            continue
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("cannot resolve bootstrap node %s: %s", host, exc)
            continue
        out.extend((str(info[4][0]), port) for info in infos if info[0] == family)
    return tuple(dict.fromkeys(out))


async def node_config(net: NetworkOptions, home: Path, state_name: str = "dht-cli.json") -> DHTConfig:
    host, port = net.bind_address(0)
    bootstrap = await resolve_bootstrap(net.bootstrap_or_default())
    if not bootstrap:
        raise BootstrapFailed("no bootstrap node could be resolved; pass --bootstrap IP:PORT")
    return cli_dht_config(net, host, port, bootstrap, home / state_name)


def parse_bind6(bind6: str, what: str = "--bind6") -> tuple[str, int]:
    """``[IPV6]:PORT`` (port 0 when left out) for an IPv6 DHT node; ConfigError naming ``what`` otherwise."""
    host, port = parse_host_port(bind6, default_port=0, what=what)
    try:
        if ipaddress.ip_address(host).version != 6:
            raise ConfigError(f"{what} {bind6!r} is not an IPv6 address (write it as [ADDR]:PORT)")
    except ValueError:
        raise ConfigError(f"{what} {bind6!r} is not an IPv6 address (write it as [ADDR]:PORT)") from None
    return host, port


async def node_config6(net: NetworkOptions, home: Path, bind6: str | None,
                       state_name: str = "dht-cli-ipv6.json") -> DHTConfig | None:
    """The IPv6 node's configuration for ``--bind6`` (None without it): its own socket, table, id and state
    file, bootstrapped from the IPv6 entries of ``--bootstrap`` (or the routers' IPv6 addresses)."""
    if bind6 is None:
        return None
    host, port = parse_bind6(bind6)
    bootstrap = await resolve_bootstrap(net.bootstrap_or_default(), socket.AF_INET6)
    if not bootstrap:
        raise BootstrapFailed("no IPv6 bootstrap node could be resolved; pass --bootstrap [IPV6]:PORT")
    return cli_dht_config(net, host, port, bootstrap, home / state_name)


def cli_dht_config(net: NetworkOptions, host: str, port: int, bootstrap: tuple[tuple[str, int], ...],
                   state_file: Path) -> DHTConfig:
    """One CLI node's settings: timeouts scaled to ``--timeout`` (at most 5 s per query, 0.5 s until slow)."""
    return DHTConfig(bind_host=host, bind_port=port, bootstrap=bootstrap, allow_local=net.allow_local,
                     state_file=state_file, query_timeout=min(5.0, net.timeout / 2),
                     short_timeout=min(0.5, net.timeout / 10))


async def _ensure_bootstrapped(node: DHTNode) -> None:
    if len(node.table) == 0:
        boot = ", ".join(f"{h}:{p}" for h, p in node.config.bootstrap)
        raise BootstrapFailed(f"no DHT node answered (bootstrap: {boot}); check --bootstrap and the network")


@click.group()
def dht() -> None:
    """Mainline DHT lookups (BEP 5) and sampling (BEP 51)."""


BIND6_HELP = "also run an IPv6 DHT node (BEP 32) bound to [IPV6]:PORT; IPv6 --bootstrap entries go to it"


@dht.command("peers")
@click.argument("infohash")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document (collected as the peers come)")
@click.option("--bind6", default=None, metavar="[IPV6]:PORT", help=BIND6_HELP)
@network_options
@click.pass_obj
@handle_errors
def peers_command(obj: dict[str, object], infohash: str, as_json: bool, bind6: str | None,
                  net: NetworkOptions) -> None:
    """Peers the DHT lists for INFOHASH (level-0 claims, with the nodes that reported them).

    Peers are printed as the replies listing them arrive; the lookup starts from the bootstrap nodes while
    the node's own bootstrap runs alongside, and it does not wait for nodes that stay silent. With --bind6
    the IPv4 and the IPv6 DHT are searched at once.
    """
    target = parse_infohash_or_magnet(infohash)
    home = Path(str(obj["home"]))

    def show(event: PeersFound) -> None:
        for peer in event.new:
            click.echo(f"{format_addr(peer)}  reported by {format_addr(event.reporter)}")
        sys.stdout.flush()

    async def search(config: DHTConfig, found: dict[tuple[str, int], set[tuple[str, int]]]) -> int:
        """One family's lookup, printing as it goes; the number of nodes that answered."""
        async with open_dht_node(config, wait_bootstrap=False) as node, node.open_get_peers(target) as stream:
            async for event in stream:
                if isinstance(event, PeersFound) and not as_json:
                    show(event)
            for peer, reporters in stream.result.peers.items():
                found.setdefault(peer, set()).update(reporters)
            return stream.result.responses

    async def run() -> dict[tuple[str, int], set[tuple[str, int]]]:
        configs = [c for c in (await node_config(net, home), await node_config6(net, home, bind6)) if c]
        found: dict[tuple[str, int], set[tuple[str, int]]] = {}
        responses: list[int] = []

        async def one(config: DHTConfig) -> None:
            responses.append(await search(config, found))

        with trio.move_on_after(net.timeout) as scope:
            async with trio.open_nursery() as nursery:
                for config in configs:
                    nursery.start_soon(one, config)
            if not any(responses):
                boot = ", ".join(format_addr(b) for c in configs for b in c.bootstrap)
                raise BootstrapFailed(f"no DHT node answered (bootstrap: {boot}); check --bootstrap")
            return found
        if scope.cancelled_caught:
            raise BootstrapFailed(f"DHT lookup did not finish within {net.timeout:g} s")
        return found

    with explain_bind(dht_bind_remedies()):
        found = trio.run(run)
    if as_json:
        emit_json([{"ip": ip, "port": port, "reported_by": sorted(format_addr(r) for r in reporters)}
                   for (ip, port), reporters in sorted(found.items())])
        return
    click.echo(f"{len(found)} peers for {target.hex()}")


@dht.command("sample")
@click.option("--duration", type=float, default=60.0, show_default=True, help="seconds to crawl")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.option("--bind6", default=None, metavar="[IPV6]:PORT", help=BIND6_HELP)
@network_options
@click.pass_obj
@handle_errors
def sample_command(obj: dict[str, object], duration: float, as_json: bool, bind6: str | None,
                   net: NetworkOptions) -> None:
    """Crawl the DHT with BEP 51 sample_infohashes (plus passive capture) for --duration seconds.

    With --bind6 an IPv6 node crawls the IPv6 DHT alongside (BEP 32), into the same list."""
    if duration <= 0:
        raise ConfigError("--duration must be positive")
    home = Path(str(obj["home"]))
    found: list[DiscoveredInfohash] = []

    async def run() -> None:
        configs = [c for c in (await node_config(net, home), await node_config6(net, home, bind6)) if c]
        send, receive = trio.open_memory_channel[Discovery](1024)

        async def crawl(config: DHTConfig, crawler_send: trio.MemorySendChannel[Discovery]) -> None:
            with crawler_send:  # closed without a checkpoint: a Cancelled must not replace a bind error
                async with open_dht_node(config) as node:
                    await _ensure_bootstrapped(node)
                    await Crawler(node, crawler_send, segments=16).run()

        async with trio.open_nursery() as nursery:
            with send:
                for config in configs:
                    nursery.start_soon(crawl, config, send.clone())
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
        emit_json([{"infohash": d.infohash.hex(), "reported_by": format_addr(d.reported_by),
                    "message": d.message, "seen_at": d.at.isoformat()} for d in found])
        return
    if sys.stderr.isatty():
        click.echo("", err=True)
    for d in found:
        click.echo(f"{d.infohash.hex()}  from {format_addr(d.reported_by)} ({d.message})")
    click.echo(f"{len(found)} infohashes in {duration:g} s")
