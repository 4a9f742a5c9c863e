"""The lookup's light event queue and wake-up (p2pwatch.dht.event_queue), on trio's MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pwatch.dht.event_queue import EventQueue, Wakeup


async def test_items_come_in_order_and_close_ends_iteration_after_them() -> None:
    q = EventQueue[int](4)
    got: list[int] = []

    async def consume() -> None:
        async for item in q:
            got.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        q.put_nowait(1)  # handed straight to the waiting consumer
        q.put_nowait(2)
        q.put_nowait(3)
        q.close()
    assert got == [1, 2, 3]
    with pytest.raises(trio.ClosedResourceError):
        q.put_nowait(4)


async def test_put_waits_for_room(autojump_clock: trio.testing.MockClock) -> None:
    q = EventQueue[int](2)
    put_done: list[float] = []

    async def produce() -> None:
        for i in range(4):
            await q.put(i)
            put_done.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        await trio.sleep(1.0)
        assert len(put_done) == 2 and len(q) == 2 and q.room() == 0  # the third put waits
        assert await q.get() == 0
        await trio.sleep(1.0)
        assert len(put_done) == 3
        assert [await q.get() for _ in range(3)] == [1, 2, 3]
    assert put_done[2] >= 1.0


async def test_a_cancelled_get_leaves_the_queue_usable(autojump_clock: trio.testing.MockClock) -> None:
    q = EventQueue[str](2)
    with trio.move_on_after(1.0) as scope:
        await q.get()
    assert scope.cancelled_caught
    q.put_nowait("late")
    assert len(q) == 1  # nobody was waiting any more: it is queued, not lost
    assert await q.get() == "late"


async def test_a_second_consumer_is_refused() -> None:
    q = EventQueue[int](1)
    got: list[int] = []

    async def consume() -> None:
        got.append(await q.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await q.get()
        q.put_nowait(7)
    assert got == [7]  # the first consumer still gets its item


async def test_close_wakes_a_waiting_consumer_and_a_blocked_producer(autojump_clock: trio.testing.MockClock) -> None:
    q = EventQueue[int](1)
    q.put_nowait(0)
    errors: list[type[BaseException]] = []

    async def produce() -> None:
        try:
            await q.put(1)
        except trio.ClosedResourceError as exc:
            errors.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        await trio.sleep(1.0)
        q.close()
    assert errors == [trio.ClosedResourceError]
    assert await q.get() == 0  # what was queued before the close is still delivered
    with pytest.raises(trio.EndOfChannel):
        await q.get()


async def test_wakeup_coalesces_and_wakes_one_waiter(autojump_clock: trio.testing.MockClock) -> None:
    w = Wakeup()
    w.set()
    w.set()
    with trio.fail_after(1):
        await w.wait()  # a set before the wait counts
    with trio.move_on_after(1.0) as scope:
        await w.wait()  # the two sets counted as one
    assert scope.cancelled_caught
    woke: list[float] = []

    async def waiter() -> None:
        await w.wait()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(2.0)
        assert not woke
        w.set()
    assert woke and woke[0] >= 2.0
