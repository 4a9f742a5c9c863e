"""A simulated run is reproducible (issue 12): the same seed gives the same report, in one process too."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from p2pwatch.sim import determinism
from p2pwatch.sim.population import PopulationSettings
from p2pwatch.sim.scenario import ScaleRun, run_scale

WALL_CLOCK = ("wall_s", "setup_wall_s", "lookups_wall_s", "crawl_wall_s", "rss_mb", "rss_mb_per_100k_nodes",
              "goals_met")


@pytest.fixture
def plain_trio(monkeypatch: pytest.MonkeyPatch) -> None:
    """trio as a script like bench_scale.py gets it: under pytest, Hypothesis's trio plugin has already turned
    the deterministic mode on for the whole session."""
    monkeypatch.setattr(trio._core._run, determinism.FLAG, False)


def small_run(seed: int) -> dict[str, Any]:
    report = run_scale(ScaleRun(population=PopulationSettings(nodes=1_000, seed=seed), warmup_lookups=5,
                                lookups=10, crawl_s=15.0))
    return {key: value for key, value in report.items() if key not in WALL_CLOCK}


@pytest.mark.usefixtures("plain_trio")
def test_the_same_seed_gives_the_same_report_and_another_seed_another() -> None:
    first, again, other = small_run(5), small_run(5), small_run(6)
    assert first["metadata_ok"] > 0 and first["crawl_lookups"] > 0  # the crawl's concurrent tasks ran
    assert first == again
    different = [key for key in ("lookup_median_s", "lookup_max_s", "queries_sent", "discovered_per_min",
                                 "metadata_ok") if first[key] != other[key]]
    assert len(different) >= 3, different


async def _wake_together(order: list[int]) -> None:
    async def sleeper(i: int) -> None:
        await trio.sleep_until(1.0)
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(sleeper, i)


@pytest.mark.usefixtures("plain_trio")
def test_tasks_woken_at_one_deadline_run_in_one_order_whatever_the_memory_layout() -> None:
    """trio breaks deadline ties by ``id()``: freed cancel scopes, reused in another order, shift the ids of
    the sleepers' scopes. Seeding trio's generator alone gives a different order almost every time."""
    orders = set()
    for layout in range(6):
        holes = [trio.CancelScope() for _ in range(64)]
        random.Random(layout).shuffle(holes)
        del holes[:]
        order: list[int] = []
        with determinism.deterministic_scheduling(3):
            trio.run(_wake_together, order, clock=trio.testing.MockClock(autojump_threshold=0))
        orders.add(tuple(order))
    assert len(orders) == 1, orders


@pytest.mark.usefixtures("plain_trio")
def test_the_scheduler_is_restored_after_the_run() -> None:
    run = determinism.trio_scheduler()
    assert run is not None  # this trio has the seedable scheduler: a failure here means trio changed
    before, flag = run._r.getstate(), getattr(run, determinism.FLAG)
    with determinism.deterministic_scheduling(7) as seeded:
        assert seeded and getattr(run, determinism.FLAG) is True
        assert run._r.random() == random.Random(7).random()
    assert run._r.getstate() == before and getattr(run, determinism.FLAG) is flag


def test_a_trio_without_the_switch_runs_unseeded_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(trio._core._run, determinism.FLAG)
    with pytest.warns(UserWarning, match="not reproducible"), determinism.deterministic_scheduling(7) as seeded:
        assert not seeded
