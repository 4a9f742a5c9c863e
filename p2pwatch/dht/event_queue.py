"""Two small trio primitives for a lookup's hot path (issue 12): a bounded one-consumer event queue and a
coalescing wake-up.

A streaming lookup makes both for every lookup, and the first seeder reaches the caller through them. A
trio memory channel pair does the same work, but it is a general many-to-many channel (attrs objects,
statistics, clones), and after an idle spell every object and line touched for the first time costs
tens of microseconds (measured in docs/DECISIONS.md, "i12-lat"). These keep to what a lookup needs.

* :class:`EventQueue`: any number of producers, **one** consumer. ``put_nowait`` never blocks (the caller
  checks :meth:`EventQueue.room` first when it must not exceed the bound); ``put`` waits for room
  (back-pressure). ``close`` ends the consumer's iteration once the queued items are taken. Checkpoints
  follow trio's rules: ``get`` and ``put`` are checkpoints whether or not they block.
* :class:`Wakeup`: ``set`` wakes the one waiting task, or makes its next ``wait`` return at once; several
  ``set`` calls before a ``wait`` count as one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import outcome
import trio

__all__ = ["EventQueue", "Wakeup"]

T = TypeVar("T")
_END = object()  # handed to a waiting consumer by close()


async def _park(owner: object, slot: str) -> Any:
    """Sleep until rescheduled; the value it was rescheduled with. ``owner.<slot>`` holds this task; a
    cancellation clears it (the waker then finds nobody waiting)."""

    def abort(_: object) -> trio.lowlevel.Abort:
        setattr(owner, slot, None)
        return trio.lowlevel.Abort.SUCCEEDED

    return await trio.lowlevel.wait_task_rescheduled(abort)


class EventQueue(Generic[T]):
    """A bounded FIFO with one consumer; see the module docstring."""

    __slots__ = ("_closed", "_consumer", "_items", "_putters", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._consumer: trio.lowlevel.Task | None = None
        self._putters: trio.lowlevel.ParkingLot | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def room(self) -> int:
        """How many more items fit before the bound."""
        return self.capacity - len(self._items)

    def put_nowait(self, item: T) -> None:
        """Queue ``item`` (even beyond the bound: check :meth:`room` first); wakes the consumer."""
        if self._closed:
            raise trio.ClosedResourceError("the lookup's event queue is closed")
        consumer = self._consumer
        if consumer is not None:
            self._consumer = None
            trio.lowlevel.reschedule(consumer, outcome.Value(item))
        else:
            self._items.append(item)

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting while the queue is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self._items) >= self.capacity and not self._closed:
            if self._putters is None:
                self._putters = trio.lowlevel.ParkingLot()
            await self._putters.park()
        self.put_nowait(item)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def get(self) -> T:
        """The next item; raises :class:`trio.EndOfChannel` once closed and empty."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._items:
            item = self._items.popleft()
            if self._putters is not None:
                self._putters.unpark()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        if self._closed:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise trio.EndOfChannel
        if self._consumer is not None:
            raise trio.BusyResourceError("a lookup's event queue has one consumer")
        self._consumer = trio.lowlevel.current_task()
        got = await _park(self, "_consumer")
        if got is _END:
            raise trio.EndOfChannel
        return got

    def close(self) -> None:
        """No more items: the consumer takes what is queued, then its iteration ends. Never a checkpoint."""
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            trio.lowlevel.reschedule(consumer, outcome.Value(_END))
        if self._putters is not None:
            self._putters.unpark_all()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.get()
            except trio.EndOfChannel:
                return
            yield item


class Wakeup:
    """A coalescing wake-up for one waiting task; see the module docstring."""

    __slots__ = ("_pending", "_waiter")

    def __init__(self) -> None:
        self._pending = False
        self._waiter: trio.lowlevel.Task | None = None

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        else:
            self._pending = True

    async def wait(self) -> None:
        """Return after the next :meth:`set` (at once if one came since the last wait). A checkpoint."""
        if self._pending:
            self._pending = False
            await trio.lowlevel.checkpoint()
            return
        if self._waiter is not None:
            raise trio.BusyResourceError("a wake-up has one waiting task")
        self._waiter = trio.lowlevel.current_task()
        await _park(self, "_waiter")
