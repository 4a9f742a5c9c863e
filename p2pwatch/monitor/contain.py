"""Containment of one unit of work's failure (ARCHITECTURE principle 8: garbage from a remote peer is counted
and logged, never fatal to the daemon).

``with contain(where, stats, key):`` around one lead, one torrent or one watch: an ``Exception`` raised inside
(also one wrapped in a nursery's ``ExceptionGroup``) is logged once with its traceback, counted as
``stats[key]`` (a ``Counter`` such as :attr:`Metrics.counters`) or ``stats.key`` (a stats dataclass), and
kept on the returned :class:`Contained`; the code after the block goes on. Errors of the ``expected`` types
(typed errors, e.g. a peer's :class:`~p2pwatch.errors.P2PWatchError`) are logged on one line without a
traceback and not counted: they are outcomes, not faults.

Everything that is not an ``Exception`` passes through untouched: ``trio.Cancelled`` (a deadline, a stopping
daemon), ``KeyboardInterrupt``, ``SystemExit``. From a group that holds both, the ``Exception`` part is
contained and the rest re-raised (``except*``), so a cancel that coincides with a failure still cancels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass

from p2pwatch.aio import leaves
from p2pwatch.errors import LocalProtocolError

log = logging.getLogger(__name__)


@dataclass
class Contained:
    """What a :func:`contain` block caught: the error (one exception, or the group when there were several)."""

    error: Exception | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@contextmanager
def contain(where: str, stats: MutableMapping[str, int] | object | None = None, key: str | None = None, *,
            expected: tuple[type[Exception], ...] = (), logger: logging.Logger = log) -> Iterator[Contained]:
    """Contain an ``Exception`` raised in the block (see the module docstring); ``where`` names the work in the
    log line ("metadata for <infohash>")."""
    if stats is not None and (key is None or not (isinstance(stats, MutableMapping) or hasattr(stats, key))):
        raise LocalProtocolError(f"contain({where!r}): no counter {key!r} in {type(stats).__name__}")
    guard = Contained()
    try:
        yield guard
    except* Exception as group:
        found = leaves(group)
        guard.error = error = found[0] if len(found) == 1 and isinstance(found[0], Exception) else group
        if expected and all(isinstance(one, expected) for one in found):
            logger.info("%s failed: %s", where, "; ".join(str(one) for one in found))
        else:
            logger.error("%s failed unexpectedly", where, exc_info=error)
            _count(stats, key)


def _count(stats: MutableMapping[str, int] | object | None, key: str | None) -> None:
    if stats is None or key is None:
        return
    if isinstance(stats, MutableMapping):
        stats[key] = stats.get(key, 0) + 1
    else:
        setattr(stats, key, getattr(stats, key) + 1)
