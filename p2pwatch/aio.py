"""Small structured-concurrency helpers shared by the trio drivers.

trio wraps every exception that leaves a nursery in an ``ExceptionGroup``. Service context managers
(``open_dht_node`` and friends) run the caller's block inside their nursery, so a plain error raised by the
caller would come back wrapped; :func:`unwrap_single` gives it back unwrapped when it is the only one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(leaves(exc))
        else:
            out.append(exc)
    return out


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Re-raise a group that holds exactly one exception as that exception."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1:
            raise found[0] from None
        raise
