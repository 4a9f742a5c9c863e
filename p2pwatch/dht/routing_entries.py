"""Routing-table entries (BEP 5, "Routing Table"): the node states GOOD/QUESTIONABLE/BAD and the facts
they are derived from, the k-bucket with its replacement cache, which addresses a node may have, and
reading an entry back from saved state.

Split out of :mod:`p2pwatch.dht.routing`, which re-exports the public names.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from p2pwatch.dht.nodeinfo import ID_BITS, ID_LEN, NodeInfo
from p2pwatch.netguard import is_acceptable_remote

__all__ = ["GOOD_FOR", "NodeState", "acceptable_address"]

#: BEP 5: a node is good for 15 minutes after it last answered (or queried us, having answered once).
GOOD_FOR = 900.0

class NodeState(Enum):
    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


@functools.lru_cache(maxsize=1 << 17)  # parsing and classifying an address costs ~10 µs; ~20 MB at most
def _acceptable_ip(ip: str, allow_local: bool) -> bool:
    return is_acceptable_remote(ip, allow_local)


def acceptable_address(ip: str, port: int, allow_local: bool) -> bool:
    """May ``ip:port`` be a DHT node or peer address? (netguard's rule, cached, plus a valid port.)"""
    return 0 < port < 65536 and _acceptable_ip(ip, allow_local)


def common_prefix_length(a: int, b: int) -> int:
    """Length of the common prefix of two 160-bit ids, in bits (160 when equal)."""
    return ID_BITS - (a ^ b).bit_length()


@dataclass(slots=True, eq=False)
class Entry:
    """What the table knows about one node (mutable, private; states are derived by :meth:`state`)."""

    node: NodeInfo
    key: int  # the id as an integer, for XOR
    first_seen: float
    last_seen: float
    last_responded: float | None = None  # None: never answered; -inf: answered before a restart
    last_queried: float | None = None  # last incoming query from it
    fail_count: int = 0
    bad: bool = False
    ping_sent: float | None = None

    def good_until(self) -> float:
        """When this entry stops being GOOD (-inf if it never was)."""
        if self.last_responded is None:
            return -math.inf
        last = self.last_responded
        if self.last_queried is not None and self.last_queried > last:
            last = self.last_queried
        return last + GOOD_FOR

    def state(self, now: float) -> NodeState:
        if self.bad:
            return NodeState.BAD
        if now < self.good_until():
            return NodeState.GOOD
        return NodeState.QUESTIONABLE

    def note_failure(self, max_failures: int) -> None:
        self.fail_count += 1
        self.ping_sent = None
        self.bad = self.fail_count >= max_failures or self.last_responded is None


@dataclass(slots=True, eq=False)
class Bucket:
    live: list[Entry]
    replacements: list[Entry]  # oldest contact first
    last_changed: float = -math.inf


def finite(t: float | None) -> float | None:
    return t if t is not None and math.isfinite(t) else None


def load_entry(raw: Any, now: float) -> Entry | None:
    if not isinstance(raw, dict):
        return None
    try:
        node_id = bytes.fromhex(raw["id"])
        ip = raw["ip"]
        port = raw["port"]
    except (KeyError, TypeError, ValueError):
        return None
    if len(node_id) != ID_LEN or not isinstance(ip, str) or not isinstance(port, int):
        return None
    entry = Entry(NodeInfo(node_id, ip, port), int.from_bytes(node_id, "big"), now, now)
    if raw.get("responded"):
        entry.last_responded = -math.inf
    return entry
