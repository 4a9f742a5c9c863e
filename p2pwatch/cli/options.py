"""Shared pieces of the command line (docs/CLI.md): error handling, JSON output, network options.

User mistakes print one line on stderr and exit 2 (usage) or 1 (failure); never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from p2pwatch.aio import unwrap_single
from p2pwatch.errors import BindError, ConfigError, P2PWatchError
from p2pwatch.locale import tr as _

F = TypeVar("F", bound=Callable[..., Any])

#: The public mainline DHT routers, the default bootstrap (never used by tests: they pass --bootstrap).
PUBLIC_BOOTSTRAP = (
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
)


@dataclass
class NetworkOptions:
    """The network options shared by every command that touches the network."""

    bootstrap: tuple[str, ...] = ()
    trackers: tuple[str, ...] = ()
    bind: str | None = None
    allow_local: bool = False
    timeout: float = 20.0
    extra: dict[str, Any] = field(default_factory=dict)

    def bootstrap_or_default(self) -> tuple[str, ...]:
        return self.bootstrap or PUBLIC_BOOTSTRAP

    def bind_address(self, default_port: int = 0) -> tuple[str, int]:
        if not self.bind:
            return ("0.0.0.0", default_port)
        return parse_host_port(self.bind, default_port=default_port, what="--bind")


def parse_host_port(text: str, *, default_port: int | None = None, what: str = "address") -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[V6]:PORT`` or (with a default port) a bare host."""
    host, sep, port_text = text.rpartition(":")
    if text.startswith("[") and "]" in text:
        inside, _, rest = text[1:].partition("]")
        host, port_text, sep = inside, rest.lstrip(":"), ":" if rest else ""
    if not sep or not host:
        if default_port is None:
            raise ConfigError(f"{what} {text!r} must be HOST:PORT")
        return text, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} {text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what} {text!r}: port must be 0..65535")
    return host, port


def parse_infohash_or_magnet(text: str) -> bytes:
    """The 20-byte DHT/tracker id of an infohash (hex v1/v2, base32) or a magnet URI; ConfigError otherwise."""
    from p2pwatch.torrent.magnet import parse_infohash, parse_magnet

    try:
        if text.startswith("magnet:"):
            return parse_magnet(text).infohash.dht_id
        return parse_infohash(text).dht_id
    except P2PWatchError as exc:
        raise ConfigError(f"{text!r} is not an infohash or magnet: {exc}") from None


def network_options(func: F) -> F:
    """Add --bootstrap/--tracker/--bind/--allow-local/--timeout and pass ``net: NetworkOptions``."""

    @click.option("--bootstrap", "bootstrap", multiple=True, metavar="HOST:PORT",
                  help="DHT bootstrap node (repeatable; default: the public mainline routers)")
    @click.option("--tracker", "trackers", multiple=True, metavar="URL", help="tracker URL (repeatable)")
    @click.option("--bind", default=None, metavar="IP[:PORT]", help="local address to bind")
    @click.option("--allow-local", is_flag=True, help="accept loopback/private node and peer addresses")
    @click.option("--timeout", type=float, default=20.0, show_default=True, help="seconds before giving up")
    @functools.wraps(func)
    def wrapper(*args: Any, bootstrap: tuple[str, ...], trackers: tuple[str, ...], bind: str | None,
                allow_local: bool, timeout: float, **kwargs: Any) -> Any:
        net = NetworkOptions(bootstrap, trackers, bind, allow_local, timeout)
        return func(*args, net=net, **kwargs)

    return wrapper  # type: ignore[return-value]


#: What to do when a socket cannot be bound (BindError), by the socket's purpose: each command names its own
#: option and configuration key (docs/CLI.md, "Busy ports").
DHT_BIND_REMEDY = "pass --bind IP:PORT with an address of this machine and a free port (port 0 picks any free one)"
DHT6_BIND_REMEDY = ("pass --bind6 [IPV6]:PORT with an IPv6 address of this machine and a free port (port 0 picks "
                    "any free one)")
MONITOR_DHT_BIND_REMEDY = ("pass --bind IP:PORT with an address of this machine and a free port (port 0 picks "
                           "any free one), or set bind and port under [dht] in the configuration file (or "
                           "P2PWATCH_DHT_BIND, P2PWATCH_DHT_PORT)")
MONITOR_DHT6_BIND_REMEDY = ("pass --bind6 [IPV6]:PORT with an IPv6 address of this machine and a free port (port 0 "
                            "picks any free one), or set bind6 under [dht] in the configuration file (or "
                            "P2PWATCH_DHT_BIND6; empty runs the IPv4 DHT only)")
METRICS_BIND_REMEDY = ("pass --metrics-port PORT with a free port, or change metrics_port in the configuration "
                       "file (or P2PWATCH_METRICS_PORT; 0 turns the endpoint off)")
#: probe commands never listen: --bind only chooses the source address of their datagrams and connections.
SOURCE_ADDRESS_REMEDY = "pass --bind with an address of this machine, or leave --bind out"


@contextmanager
def explain_bind(remedies: Mapping[str, str]) -> Iterator[None]:
    """Give a :class:`BindError` raised in the block this command's advice, chosen by the socket's purpose
    (``SOCKET_PURPOSE`` of p2pwatch.dht.node, p2pwatch.monitor.metrics, ...); handle_errors prints it."""
    try:
        with unwrap_single():
            yield
    except BindError as exc:
        if not exc.remedy and exc.purpose in remedies:
            exc.remedy = remedies[exc.purpose]
        raise


def dht_bind_remedies(dht_remedy: str = DHT_BIND_REMEDY) -> dict[str, str]:
    """The advice for the commands that run a DHT node (and ask trackers)."""
    from p2pwatch.dht.node import SOCKET_PURPOSE as DHT_SOCKET
    from p2pwatch.dht.node import SOCKET_PURPOSE6 as DHT6_SOCKET
    from p2pwatch.probe.trackers import UDP_SOCKET_PURPOSE

    return {DHT_SOCKET: dht_remedy, DHT6_SOCKET: DHT6_BIND_REMEDY, UDP_SOCKET_PURPOSE: SOURCE_ADDRESS_REMEDY}


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout and nothing else."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> None:
    """One line on stderr, then exit with ``code``."""
    click.echo(_("p2pwatch: error: %(message)s", message=message), err=True)
    raise SystemExit(code)


def handle_errors(func: F) -> F:
    """Turn p2pwatch errors into one clear line (exit 1; exit 2 for configuration/usage mistakes)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with unwrap_single():
                return func(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), 2)
        except P2PWatchError as exc:
            fail(str(exc), 1)
        except KeyboardInterrupt:
            fail(_("interrupted"), 130)
        except OSError as exc:
            fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), 1)
        return None

    return wrapper  # type: ignore[return-value]
