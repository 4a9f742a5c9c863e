"""Helpers for DHT driver tests: nodes on their own loopback addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from p2pwatch.dht.node import DHTConfig, DHTNode, open_dht_node
from tests.conftest import loopback_address


def node_config(bootstrap: tuple[tuple[str, int], ...] = (), state_file: Path | None = None,
                ip: str | None = None, **kw: object) -> DHTConfig:
    config = DHTConfig(bind_host=ip or loopback_address(), bind_port=0, bootstrap=bootstrap, allow_local=True,
                       state_file=state_file, query_timeout=2.0, short_timeout=0.5, maintenance_interval=3600)
    for key, value in kw.items():
        setattr(config, key, value)
    return config


@asynccontextmanager
async def open_nodes(count: int, **kw: object) -> AsyncIterator[list[DHTNode]]:
    """``count`` p2pwatch nodes, each bootstrapped from the first."""
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_dht_node(node_config(**kw)))  # type: ignore[arg-type]
        nodes = [first]
        for _ in range(count - 1):
            node = await stack.enter_async_context(
                open_dht_node(node_config(bootstrap=(first.address,), **kw)))  # type: ignore[arg-type]
            nodes.append(node)
        yield nodes
