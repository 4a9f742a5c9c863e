"""Announcing ourselves as a peer of a torrent on the DHT (BEP 5 ``announce_peer``, with BEP 33's ``seed``).

A get_peers lookup first (it collects the write tokens of the k closest responders), then one
``announce_peer`` to each of them that gave a token, concurrently. A node that refuses or stays silent
is logged and not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from p2pwatch.dht import krpc
from p2pwatch.dht.node_types import DHTConfig, LookupResult
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.errors import KRPCError, QueryTimeout

log = logging.getLogger(__name__)


class Announcer(Protocol):
    """What announcing needs of the node driver (:class:`~p2pwatch.dht.node.DHTNode`)."""

    config: DHTConfig
    own_id: bytes

    async def get_peers(self, info_hash: bytes) -> LookupResult: ...

    async def query(self, addr: tuple[str, int], build: Callable[[bytes], krpc.Query],
                    timeout: float | None = None) -> krpc.Response: ...


async def announce_peer(node: Announcer, info_hash: bytes, port: int = 0, *, implied_port: bool = True,
                        seed: bool = False) -> int:
    """get_peers, then announce to the k closest nodes that gave a token; returns how many accepted."""
    found = await node.get_peers(info_hash)
    accepted = 0

    async def announce(to: NodeInfo, token: bytes) -> None:
        nonlocal accepted
        try:
            await node.query(to.addr, lambda t: krpc.AnnouncePeer(
                t, node.own_id, info_hash, port, token, implied_port=implied_port, seed=seed,
                read_only=node.config.read_only))
        except (QueryTimeout, KRPCError, OSError) as exc:
            log.debug("announce to %s failed: %s", to.addr, exc)
        else:
            accepted += 1

    async with trio.open_nursery() as nursery:
        for to in found.closest:
            token = found.tokens.get(to.id)
            if token is not None:
                nursery.start_soon(announce, to, token)
    return accepted
