"""Per-IP token buckets (sans-IO: ``now`` is an argument), bounded in memory by LRU eviction.

Used by the node driver for politeness on the real DHT: incoming queries above the rate are dropped
without a reply (as libtorrent does), outgoing queries above the rate wait for a token.
"""

from __future__ import annotations

from collections import OrderedDict


class PerIPRateLimiter:
    """``rate`` tokens per second per IP, bursts up to ``burst``; remembers at most ``max_ips`` IPs."""

    def __init__(self, rate: float, burst: float | None = None, max_ips: int = 65_536) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.max_ips = max_ips
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, ip: str, now: float) -> float:
        entry = self._buckets.get(ip)
        if entry is None:
            return self.burst
        tokens, stamp = entry
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def allow(self, ip: str, now: float) -> bool:
        """Take one token for ``ip`` if there is one."""
        tokens = self._level(ip, now)
        if tokens < 1.0:
            self._buckets[ip] = (tokens, now)
            return False
        self._buckets[ip] = (tokens - 1.0, now)
        self._buckets.move_to_end(ip)
        if len(self._buckets) > self.max_ips:
            self._buckets.popitem(last=False)
        return True

    def delay(self, ip: str, now: float) -> float:
        """Seconds until ``ip`` has a token (0 when it has one now)."""
        tokens = self._level(ip, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)
