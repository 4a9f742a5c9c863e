"""The budget of the content stages (issue 13): bytes per day, torrents per hour, concurrent readers, and the
priority queue in front of them.

Triage (:mod:`p2pwatch.match.triage`) queues the torrents worth content bytes; the content stages take them
highest score first, at most ``concurrent_readers`` at a time and at most ``torrents_per_hour`` in any hour.
Bytes are charged *before* a piece is requested (:class:`BudgetedSource`), so the bytes asked of the swarm in
any 24 hours never exceed ``bytes_per_day``, however many torrents arrive at once: a read that does not fit
raises :class:`BudgetExhausted` and the torrent's content stages stop there (its decision says so). A queue
that is full drops its lowest-priority entry. Windows are sliding and counted in bins; a bin leaves the
window only once all of it is older than the window, which can only under-spend.

Times come from ``trio.current_time()``, so tests drive hours of flood with ``trio.testing.MockClock``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

from p2pwatch.errors import P2PWatchError

T = TypeVar("T")
DAY = 86_400.0
HOUR = 3_600.0


class BudgetExhausted(P2PWatchError):
    """The content budget cannot pay for a piece now; the content stages of this torrent stop."""


@dataclass(frozen=True)
class BudgetSettings:
    bytes_per_day: int = 2 * 1024**3
    torrents_per_hour: int = 600
    concurrent_readers: int = 4
    queue_size: int = 1000


class SlidingWindow:
    """How much was spent in the last ``window`` seconds, against ``limit``, in ``bins`` bins."""

    def __init__(self, limit: float, window: float, bins: int = 240) -> None:
        if limit < 0 or window <= 0:
            raise ValueError("a budget needs a non-negative limit and a positive window")
        self.limit = limit
        self.window = window
        self.width = window / bins
        self._bins: deque[list[float]] = deque()  # [bin start, amount]
        self._spent = 0.0
        self.total = 0.0  # ever spent

    def _expire(self, now: float) -> None:
        while self._bins and self._bins[0][0] + self.width <= now - self.window:
            self._spent -= self._bins.popleft()[1]

    def spent(self, now: float) -> float:
        self._expire(now)
        return self._spent

    def available(self, now: float) -> float:
        return max(0.0, self.limit - self.spent(now))

    def take(self, now: float, amount: float) -> bool:
        """Spend ``amount`` now if it fits; False (nothing spent) otherwise."""
        if amount > self.available(now):
            return False
        start = math.floor(now / self.width) * self.width
        if self._bins and self._bins[-1][0] == start:
            self._bins[-1][1] += amount
        else:
            self._bins.append([start, amount])
        self._spent += amount
        self.total += amount
        return True

    def free_at(self, now: float, amount: float) -> float:
        """The earliest time at which ``amount`` fits (``inf`` if it never can)."""
        if amount > self.limit:
            return math.inf
        self._expire(now)
        need = self._spent + amount - self.limit
        if need <= 0:
            return now
        for start, spent in self._bins:
            need -= spent
            if need <= 0:
                return start + self.width + self.window
        return now  # unreachable: the bins sum to what was spent


class ContentBudget:
    """Bytes per day and torrents per hour (sliding windows) and a limit on concurrent readers."""

    def __init__(self, settings: BudgetSettings) -> None:
        self.settings = settings
        self.bytes = SlidingWindow(settings.bytes_per_day, DAY)
        self.torrents = SlidingWindow(settings.torrents_per_hour, HOUR)
        self.readers = trio.Semaphore(max(1, settings.concurrent_readers))
        self.refused = 0  # piece reads refused for want of budget
        self.peak_day_bytes = 0.0

    def charge(self, amount: int) -> bool:
        now = trio.current_time()
        ok = self.bytes.take(now, amount)
        if ok:
            self.peak_day_bytes = max(self.peak_day_bytes, self.bytes.spent(now))
        else:
            self.refused += 1
        return ok

    async def admit(self, estimate: int) -> None:
        """Wait until one more torrent fits this hour and ``estimate`` bytes fit today, then count the torrent."""
        while True:
            now = trio.current_time()
            ready = max(self.torrents.free_at(now, 1), self.bytes.free_at(now, min(estimate, self.bytes.limit)))
            if ready <= now:
                self.torrents.take(now, 1)
                return
            await trio.sleep_until(ready if math.isfinite(ready) else now + HOUR)


class BudgetedSource:
    """A piece source whose every new piece is paid for from a :class:`ContentBudget` before it is asked for.

    ``pieces_read`` counts the distinct pieces asked of the wrapped source (what the benchmark reports)."""

    def __init__(self, source: Any, budget: ContentBudget | None, piece_length: int, total_length: int, *,
                 piece_size: Callable[[int], int] | None = None) -> None:
        self.source = source
        self.budget = budget
        self.piece_length = piece_length
        self.total_length = total_length
        self.piece_size = piece_size  # a torrent's own sizes (Metainfo.piece_size: v2 file tails are short)
        self.paid: set[int] = set()
        self.charged = 0
        self.refused = False  # the budget refused a piece

    @property
    def pieces_read(self) -> int:
        return len(self.paid)

    def _piece_size(self, index: int) -> int:
        if self.piece_size is not None:
            return self.piece_size(index)
        return max(0, min(self.piece_length, self.total_length - index * self.piece_length))

    async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, Any]:
        wanted = list(wanted)
        for index in wanted:
            if index in self.paid:
                continue
            size = self._piece_size(index)
            if self.budget is not None and not self.budget.charge(size):
                self.refused = True
                raise BudgetExhausted(f"the content budget of {self.budget.settings.bytes_per_day:,} bytes a day "
                                      f"cannot pay for piece {index} ({size:,} bytes) now")
            self.paid.add(index)
            self.charged += size
        result: dict[int, Any] = await self.source.read_pieces_async(wanted, timeout)
        return result

    def downloaded(self) -> int:
        return int(self.source.downloaded())


class PriorityQueue(Generic[T]):
    """A bounded max-priority queue: ``push`` past ``size`` drops the lowest entry (returned to the caller)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._heap: list[tuple[float, int, T]] = []  # a min-heap on (score, -seq): the worst entry first
        self._seq = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, score: float, item: T) -> T | None:
        """Queue ``item``; returns what was dropped to make room (possibly ``item`` itself), else None."""
        entry = (score, -next(self._seq), item)  # among equal scores the oldest is taken first, dropped last
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
            self._lot.unpark()
            return None
        worst = self._heap[0]
        if entry[:2] <= worst[:2]:
            return item
        heapq.heapreplace(self._heap, entry)
        self._lot.unpark()
        return worst[2]

    def pop_nowait(self) -> tuple[float, T]:
        best = max(self._heap)
        self._heap.remove(best)
        heapq.heapify(self._heap)
        return best[0], best[2]

    async def pop(self) -> tuple[float, T]:
        while not self._heap:
            await self._lot.park()
        return self.pop_nowait()
