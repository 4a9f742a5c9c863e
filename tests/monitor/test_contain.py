"""p2pwatch/monitor/contain.py: one unit of work's failure is logged once, counted, and never stops its caller;
a cancel, a KeyboardInterrupt and the Cancelled part of a mixed group pass through untouched."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from p2pwatch.errors import LocalProtocolError, RemoteProtocolError
from p2pwatch.monitor.contain import contain

LOGGER = "p2pwatch.monitor.contain"


@dataclass
class Stats:
    errors: int = 0


def errors_logged(caplog: pytest.LogCaptureFixture, where: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and where in r.getMessage()]


def test_an_error_is_logged_once_with_its_traceback_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    counters: Counter[str] = Counter()
    stats = Stats()
    after: list[str] = []
    with contain("job 1", counters, "p2pwatch_x_errors_total") as guard:
        raise KeyError("a field nobody expected")
    after.append("went on")
    with contain("job 2", stats, "errors") as second:
        int("not a number")
    assert after == ["went on"] and guard.failed and isinstance(guard.error, KeyError)
    assert counters["p2pwatch_x_errors_total"] == 1 and stats.errors == 1 and isinstance(second.error, ValueError)
    (record,) = errors_logged(caplog, "job 1")
    assert record.getMessage() == "job 1 failed unexpectedly" and record.exc_info is not None
    assert record.exc_info[1] is guard.error  # the error itself, not a wrapping group
    assert len(errors_logged(caplog, "job 2")) == 1


def test_nothing_raised_is_nothing_counted(caplog: pytest.LogCaptureFixture) -> None:
    counters: Counter[str] = Counter()
    with contain("job", counters, "e") as guard:
        pass
    assert not guard.failed and counters["e"] == 0 and not caplog.records


def test_an_expected_typed_error_is_one_line_and_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    counters: Counter[str] = Counter()
    with contain("lead", counters, "e", expected=(RemoteProtocolError,)) as guard:
        raise RemoteProtocolError("the peer sent garbage")
    with contain("grouped", counters, "e", expected=(RemoteProtocolError,)) as grouped:
        raise ExceptionGroup("nursery", [RemoteProtocolError("one"), RemoteProtocolError("two")])
    assert guard.failed and isinstance(grouped.error, ExceptionGroup) and counters["e"] == 0
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records] == [
        (logging.INFO, "lead failed: the peer sent garbage", None), (logging.INFO, "grouped failed: one; two", None)]


def test_a_group_with_one_unexpected_error_is_unexpected(caplog: pytest.LogCaptureFixture) -> None:
    counters: Counter[str] = Counter()
    with contain("mixed", counters, "e", expected=(RemoteProtocolError,)) as guard:
        raise ExceptionGroup("nursery", [RemoteProtocolError("fine"), ZeroDivisionError("bug")])
    assert counters["e"] == 1 and isinstance(guard.error, ExceptionGroup) and len(errors_logged(caplog, "mixed")) == 1


async def test_a_cancel_passes_through_uncounted_and_unlogged(caplog: pytest.LogCaptureFixture) -> None:
    counters: Counter[str] = Counter()
    reached: list[str] = []
    with trio.CancelScope() as scope:
        with contain("job", counters, "e"):
            scope.cancel()
            await trio.sleep_forever()
        reached.append("after the block")  # a contained cancel would get here
    assert scope.cancelled_caught and reached == [] and counters["e"] == 0 and not caplog.records


async def test_a_failure_during_a_cancel_is_counted_and_the_cancel_still_cancels(
        caplog: pytest.LogCaptureFixture) -> None:
    """A nursery whose scope is cancelled while one child fails raises a group of Cancelled and the error:
    the error is contained, the Cancelled part re-raised to the cancelled scope."""
    counters: Counter[str] = Counter()
    reached: list[str] = []

    async def fails_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("cleanup failed")

    with trio.CancelScope() as scope:
        with contain("job", counters, "e"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                nursery.start_soon(fails_when_cancelled)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        reached.append("after the block")
    assert scope.cancelled_caught and reached == [] and counters["e"] == 1
    (record,) = errors_logged(caplog, "job")
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


def test_keyboard_interrupt_passes_through() -> None:
    counters: Counter[str] = Counter()
    with pytest.raises(KeyboardInterrupt), contain("job", counters, "e"):
        raise KeyboardInterrupt
    assert counters["e"] == 0


def test_a_counter_that_does_not_exist_is_refused_at_once() -> None:
    with pytest.raises(LocalProtocolError, match="no counter 'erors'"), contain("job", Stats(), "erors"):
        pass
    with pytest.raises(LocalProtocolError), contain("job", Counter(), None):
        pass
