"""A dual-stack DHT node (BEP 32): an IPv4 node and an IPv6 node in one daemon.

BEP 32 makes the IPv4 and the IPv6 DHT two distinct DHTs: no IPv6 data in the IPv4 DHT and the converse, so
a dual-stack node keeps two routing tables. Here each family is a whole :class:`~p2pwatch.dht.node.DHTNode`
with its own UDP socket, routing table, peer store, tokens and node id; a lookup runs on both at once and
their peers are merged (each listing keeps the node that reported it, so its family is known).

Departures and choices:

* BEP 32 suggests one node id for both tables; BEP 42 ties an id to the node's external address, and the
  two addresses differ, so each node has its own BEP 42 id (the IPv4 node adopts the id of its IPv4 address
  as voted by its peers, the IPv6 node that of its IPv6 address; libtorrent does the same per socket).
* The IPv6 node asks for ``nodes6`` with ``want: ["n6"]``; the IPv4 node sends no ``want`` (plain BEP 5
  nodes answer it as before). Each walks only the node infos of its own family. Answers follow the
  ``want`` of the asker (``server.QueryHandler``), and ``values`` carry only the asker's family because each
  node's peer store only ever receives announces over its own socket.
* Dual-stack bootstrap "leaking" (asking for the other family's nodes) is not done: each node bootstraps
  from the routers of its own family.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import trio

from p2pwatch.dht.node import DHTConfig, DHTNode, LookupResult, open_dht_node
from p2pwatch.errors import ConfigError

__all__ = ["DualStackNode", "DualStackResult", "open_dual_stack"]

Addr = tuple[str, int]


@dataclass
class DualStackResult:
    """A lookup on both DHTs: one result per family that ran, and the merged peers with their reporters."""

    v4: LookupResult | None
    v6: LookupResult | None

    @property
    def peers(self) -> dict[Addr, set[Addr]]:
        merged: dict[Addr, set[Addr]] = {}
        for part in (self.v4, self.v6):
            if part is not None:
                for peer, reporters in part.peers.items():
                    merged.setdefault(peer, set()).update(reporters)
        return merged


class DualStackNode:
    """The pair; either may be None when that family is not configured."""

    def __init__(self, v4: DHTNode | None, v6: DHTNode | None) -> None:
        self.v4 = v4
        self.v6 = v6

    @property
    def nodes(self) -> list[DHTNode]:
        return [n for n in (self.v4, self.v6) if n is not None]

    async def get_peers(self, info_hash: bytes, *, scrape: bool = False) -> DualStackResult:
        """get_peers on the IPv4 and the IPv6 DHT concurrently."""
        out: dict[str, LookupResult] = {}

        async def one(name: str, node: DHTNode) -> None:
            out[name] = await node.get_peers(info_hash, scrape=scrape)

        async with trio.open_nursery() as nursery:
            for name, node in (("v4", self.v4), ("v6", self.v6)):
                if node is not None:
                    nursery.start_soon(one, name, node)
        return DualStackResult(out.get("v4"), out.get("v6"))

    async def bootstrap(self) -> tuple[int, int]:
        """Bootstrap both; returns the two routing table sizes."""
        sizes = {"v4": 0, "v6": 0}

        async def one(name: str, node: DHTNode) -> None:
            sizes[name] = await node.bootstrap()

        async with trio.open_nursery() as nursery:
            for name, node in (("v4", self.v4), ("v6", self.v6)):
                if node is not None:
                    nursery.start_soon(one, name, node)
        return sizes["v4"], sizes["v6"]


def _check_family(config: DHTConfig | None, v6: bool) -> None:
    if config is None:
        return
    if (":" in config.bind_host) != v6:
        raise ConfigError(f"{'IPv6' if v6 else 'IPv4'} node bound to {config.bind_host!r}")
    for host, port in config.bootstrap:
        if (":" in host) != v6:
            raise ConfigError(f"bootstrap {host}:{port} is not an {'IPv6' if v6 else 'IPv4'} address")


@asynccontextmanager
async def open_dual_stack(config4: DHTConfig | None, config6: DHTConfig | None, *,
                          bootstrap: bool = True) -> AsyncIterator[DualStackNode]:
    """Run an IPv4 and an IPv6 node (either config may be None) for the duration of the block.

    When both configs name the same state file, the IPv6 node's gets an ``-ipv6`` suffix, so the two never
    share a routing table or an id.
    """
    if config4 is None and config6 is None:
        raise ConfigError("a dual-stack node needs an IPv4 or an IPv6 configuration")
    _check_family(config4, v6=False)
    _check_family(config6, v6=True)
    if config4 is not None and config6 is not None and config6.state_file is not None \
            and config6.state_file == config4.state_file:
        path = config6.state_file
        config6.state_file = path.with_name(path.stem + "-ipv6" + path.suffix)
    async with AsyncExitStack() as stack:
        v4 = v6 = None
        if config4 is not None:
            v4 = await stack.enter_async_context(open_dht_node(config4, bootstrap=False))
        if config6 is not None:
            v6 = await stack.enter_async_context(open_dht_node(config6, bootstrap=False))
        pair = DualStackNode(v4, v6)
        if bootstrap:
            await pair.bootstrap()
        yield pair
