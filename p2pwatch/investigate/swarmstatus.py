"""Swarm status — the answer to "is it still out there?" — from when a peer was last seen.

``alive``: some peer was seen within ``dormant_after``; ``dormant``: the last peer is older than that but
younger than ``gone_after``; ``gone``: none for longer; ``unknown``: never observed. A *revival* is a
dormant or gone swarm seen alive again, which raises an alert.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum


class SwarmStatus(Enum):
    ALIVE = "alive"
    DORMANT = "dormant"
    GONE = "gone"
    UNKNOWN = "unknown"


def swarm_status(last_seen: datetime | None, now: datetime, *, dormant_after: float, gone_after: float
                 ) -> SwarmStatus:
    if last_seen is None:
        return SwarmStatus.UNKNOWN
    age = now - last_seen
    if age <= timedelta(seconds=dormant_after):
        return SwarmStatus.ALIVE
    if age <= timedelta(seconds=gone_after):
        return SwarmStatus.DORMANT
    return SwarmStatus.GONE


def is_revival(before: SwarmStatus, after: SwarmStatus) -> bool:
    return before in (SwarmStatus.DORMANT, SwarmStatus.GONE) and after is SwarmStatus.ALIVE
