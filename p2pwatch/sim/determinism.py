"""Reproducible simulated runs (issue 12): trio's scheduler made deterministic and seeded for one run.

trio runs each batch of runnable tasks in an order drawn from a module-level ``random.Random`` that nothing
seeds (``trio._core._run._r``: half of the batches are reversed), so two simulations with the same seed part
ways at the first batch of two tasks. Seeding it is not enough: a batch is in the order its tasks became
runnable, and that order depends on memory addresses (trio breaks ties between cancel scopes with the same
deadline by ``id()``, and keeps the tasks of a cancel scope in a set). trio's deterministic mode, meant for
Hypothesis (``_ALLOW_DETERMINISTIC_SCHEDULING``), removes both: each batch is sorted by task creation order,
then shuffled with ``_r``. Every task of a batch still runs before any task of the next one.

Both names are private: :func:`deterministic_scheduling` is the one place that touches them. It restores them
on exit, and when a trio version has neither it warns and runs the simulation as before (not reproducible).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import trio

FLAG = "_ALLOW_DETERMINISTIC_SCHEDULING"


def trio_scheduler() -> ModuleType | None:
    """trio's run loop module, when it has the seedable generator and the deterministic mode (trio 0.35)."""
    run = getattr(getattr(trio, "_core", None), "_run", None)
    if isinstance(run, ModuleType) and isinstance(getattr(run, "_r", None), random.Random) and hasattr(run, FLAG):
        return run
    return None


@contextmanager
def deterministic_scheduling(seed: int) -> Iterator[bool]:
    """Within the block, trio orders each batch of runnable tasks by creation order and a generator seeded
    with ``seed``; yields False (and warns) when this trio version does not allow it."""
    run = trio_scheduler()
    if run is None:
        warnings.warn("trio's scheduler cannot be seeded: this simulated run is not reproducible", stacklevel=3)
        yield False
        return
    rng: random.Random = run._r
    state, flag = rng.getstate(), getattr(run, FLAG)
    rng.seed(seed)
    setattr(run, FLAG, True)
    try:
        yield True
    finally:
        setattr(run, FLAG, flag)
        rng.setstate(state)
