"""A dead contact in the closest set of a loopback DHT (issue 12's test and benchmark setting).

:func:`plant_dead_contact` runs a short-lived p2pwatch DHT node whose id differs from ``target`` only in the
last bit, bootstraps it into a swarm of libtorrent nodes (BEP 5: they learn of it from its queries and
verify it with their own), waits until the libtorrent nodes list it in their ``find_node`` answers for
``target``, then stops it and keeps its UDP port bound by a socket that never reads: a node every routing
table holds among the closest to ``target`` that never answers again (no ICMP error either), as dead nodes
on the real DHT behave.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable

import trio

from p2pwatch.dht import krpc
from p2pwatch.dht.node import DHTConfig, DHTNode, open_dht_node
from p2pwatch.errors import KRPCError, NetworkRefused, QueryTimeout

__all__ = ["dead_id_for", "plant_dead_contact"]


def dead_id_for(target: bytes) -> bytes:
    return target[:-1] + bytes([target[-1] ^ 1])


async def _listers(node: DHTNode, target: bytes, dead_id: bytes, nodes: Iterable[tuple[str, int]]) -> int:
    count = 0
    for addr in nodes:
        try:
            reply = await node.query(addr, lambda t: krpc.FindNode(t, node.own_id, target), timeout=1.0)
        except (QueryTimeout, KRPCError, NetworkRefused, OSError):
            continue
        if any(n.id == dead_id for n in reply.nodes):
            count += 1
    return count


async def plant_dead_contact(ip: str, target: bytes, swarm: list[tuple[str, int]], *,
                             min_listers: int = 3, timeout: float = 60.0) -> socket.socket:
    """Make ``ip`` a dead contact closest to ``target`` in the swarm; returns the silent socket (close it)."""
    dead_id = dead_id_for(target)
    config = DHTConfig(bind_host=ip, bind_port=0, bootstrap=tuple(swarm), allow_local=True, node_id=dead_id,
                       query_timeout=1.0, short_timeout=0.3, maintenance_interval=3600)
    # the swarm nodes learn of us from the node's own queries; a second checker node asks them about target
    checker_config = DHTConfig(bind_host=ip, bind_port=0, allow_local=True, query_timeout=1.0,
                               maintenance_interval=3600, read_only=True)
    with trio.fail_after(timeout):
        async with open_dht_node(config) as node, open_dht_node(checker_config, bootstrap=False) as checker:
            port = node.address[1]
            while await _listers(checker, target, dead_id, swarm) < min_listers:
                for addr in swarm:  # keep reminding them; they verify us with their own queries
                    with contextlib.suppress(QueryTimeout, KRPCError, NetworkRefused, OSError):
                        await node.ping(addr)
                await trio.sleep(0.5)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((ip, port))
    return silent
