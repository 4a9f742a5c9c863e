"""Value types of the mainline DHT node driver (BEP 5): its configuration, the passive-capture record of an
incoming query, traffic counters, a lookup's outcome, and the node's persisted state file (node id and
routing table, written atomically).

Split out of :mod:`p2pwatch.dht.node`, which re-exports these names.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from p2pwatch import limits
from p2pwatch.config import DHTSettings
from p2pwatch.dht import krpc
from p2pwatch.dht.nodeinfo import NodeInfo

__all__ = [
    "DHTConfig", "DatagramSocket", "ErrorCallback", "IncomingQuery", "LookupResult", "NodeStats", "ReplyCallback",
]

#: called in the receive loop with a query's response and the time (see :meth:`DHTNode.start_query`)
ReplyCallback = Callable[[krpc.Response, float], None]
#: called in the receive loop with a query's error reply and the time (see :meth:`DHTNode.start_query`)
ErrorCallback = Callable[[krpc.Error, float], None]

# Logged under the driver's name, as before the split.
log = logging.getLogger("p2pwatch.dht.node")


class DatagramSocket(Protocol):
    """What the node driver needs of its socket: :class:`~p2pwatch.netguard.GuardedUDPSocket`, or the
    simulated network's socket (:mod:`p2pwatch.sim.network`)."""

    def getsockname(self) -> tuple[str, int]: ...
    def try_sendto(self, data: bytes, addr: tuple[str, int]) -> bool: ...
    async def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...
    def try_recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]] | None: ...
    async def wait_readable(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class DHTConfig:
    """Everything a node needs; tests pass small timeouts and ``allow_local=True``."""

    bind_host: str = "0.0.0.0"
    bind_port: int = 6881
    bootstrap: tuple[tuple[str, int], ...] = ()
    allow_local: bool = False
    node_id: bytes | None = None
    state_file: Path | None = None
    k: int = 8
    alpha: int = 3
    query_timeout: float = 5.0
    short_timeout: float = 1.0
    inbound_rate: float = 50.0
    outbound_rate: float = 20.0
    read_only: bool = False
    enforce_node_id: bool = False
    maintenance_interval: float = 10.0
    save_interval: float = 300.0
    max_outstanding: int = limits.MAX_OUTSTANDING_QUERIES
    #: a lookup ends when this many closest responders have answered (None: k), widened by ``widen`` per
    #: failed or slow node passed (None: k // 2); see :class:`~p2pwatch.dht.traversal.Traversal`
    width: int | None = None
    widen: int | None = None
    #: a slow query that would be among the k closest responders still holds the end this long after it
    #: was sent (0: it never does, the issue 12 rule); see :class:`~p2pwatch.dht.traversal.Traversal`
    slow_grace: float = 0.0
    #: a not-yet-queried candidate with fewer than this many responders and in-flight queries closer to
    #: the target is sent at once, even with all alpha slots taken (0: never); see ``Traversal``
    eager: int = 0
    #: libtorrent's extended routing table (the farthest four buckets hold 16, 8, 4, 2 times k)
    extended_table: bool = False
    #: nodes that answered lately, kept as extra lookup seeds (0: none); see :mod:`~p2pwatch.dht.responder_cache`
    responder_cache: int = 0
    #: buckets farther than our own refreshed after a waited-for bootstrap (Kademlia's join; 0: none)
    join_refresh: int = 8
    #: where the node draws its random numbers (its id, transaction ids, refresh and join targets); None: the
    #: OS's (``os.urandom``, unseeded generators). The simulation passes a seeded one (issue 12: reproducible)
    rng: random.Random | None = None


def config_from_settings(settings: DHTSettings, **fields: object) -> DHTConfig:
    """The node configuration the monitor runs with (``[dht]`` settings); ``fields`` override or add to it
    (the bind address, bootstrap nodes resolved to addresses, the state file)."""
    base: dict[str, object] = dict(
        bind_host=settings.bind, bind_port=settings.port, allow_local=settings.allow_local,
        query_timeout=settings.query_timeout, short_timeout=settings.short_timeout, alpha=settings.alpha,
        k=settings.k, inbound_rate=settings.inbound_rate_per_ip, outbound_rate=settings.outbound_rate_per_ip,
        width=settings.lookup_width, slow_grace=settings.slow_grace,
        eager=settings.lookup_eager, extended_table=settings.extended_routing_table,
        responder_cache=settings.responder_cache, join_refresh=settings.join_refresh)
    base.update(fields)
    return DHTConfig(**base)  # type: ignore[arg-type]


@dataclass(frozen=True)
class IncomingQuery:
    """A query some node sent us (passive capture)."""

    query: krpc.Query
    addr: tuple[str, int]
    now: float


@dataclass
class NodeStats:
    received: int = 0
    sent: int = 0
    queries_in: int = 0
    queries_out: int = 0
    responses: int = 0
    timeouts: int = 0
    errors_in: int = 0
    malformed: int = 0
    rate_limited: int = 0
    unexpected: int = 0


@dataclass
class LookupResult:
    """Outcome of a get_peers / find_node / sample lookup, with provenance."""

    target: bytes
    closest: list[NodeInfo]
    peers: dict[tuple[str, int], set[tuple[str, int]]]
    tokens: dict[bytes, bytes]
    samples: dict[tuple[str, int], tuple[bytes, ...]] = field(default_factory=dict)
    intervals: dict[tuple[str, int], int] = field(default_factory=dict)
    queries: int = 0
    responses: int = 0
    bf_seeds: list[bytes] = field(default_factory=list)
    bf_peers: list[bytes] = field(default_factory=list)


def atomic_write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_state(path: Path | None) -> dict[str, object]:
    if path is None or not path.exists():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable DHT state %s: %s", path, exc)
        return {}
    return state if isinstance(state, dict) else {}
