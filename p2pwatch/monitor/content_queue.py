"""The monitor's content stages behind triage (issue 13): a priority queue and readers under one budget.

The metadata workers triage every torrent (:mod:`p2pwatch.match.triage`): a skipped one gets the zero-byte
stages there and then; a queued one waits here, highest score first, until one of ``concurrent_readers``
readers, a torrent slot of the hour and the estimated bytes of the day are free
(:class:`~p2pwatch.match.content_budget.ContentBudget`). Its content stages (exact-piece, one-keyframe screen,
sampled confirmation of the survivors: :mod:`p2pwatch.match.screened`) charge every piece to the budget;
the result goes to the job's ``finish`` (store, watch, alert). Each decision is counted and logged with its
reason (:meth:`p2pwatch.monitor.metrics.Metrics.decision`). A full queue drops its lowest-scored torrent.
An unexpected error in one torrent's stages (or its ``finish``) is logged and counted
(``p2pwatch_content_errors_total``, :func:`p2pwatch.monitor.contain.contain`); the readers go on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from p2pwatch.config import MonitorConfig
from p2pwatch.errors import P2PWatchError
from p2pwatch.investigate.lookup import Screening, budget_settings, run_matcher
from p2pwatch.investigate.registry_sync import Applied
from p2pwatch.match.content_budget import ContentBudget, PriorityQueue
from p2pwatch.match.matcher import MatchReport, RegistryIndex
from p2pwatch.match.triage import TriageDecision
from p2pwatch.monitor.contain import contain
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.torrent.metainfo import Metainfo

log = logging.getLogger(__name__)


@dataclass
class ContentJob:
    infohash: bytes
    metainfo: Metainfo
    peers: list[tuple[str, int]]
    decision: TriageDecision
    finish: Callable[[MatchReport], Awaitable[None]]


class Matcher(Protocol):
    """The content stages of one torrent: :func:`~p2pwatch.investigate.lookup.run_matcher`'s signature."""

    async def __call__(self, index: RegistryIndex, metainfo: Metainfo, peers: list[tuple[str, int]],
                       config: MonitorConfig, *, bind_ip: str | None, allow_local: bool,
                       screening: Screening | None = None, decision: TriageDecision | None = None) -> MatchReport: ...


class ContentStages:
    def __init__(self, config: MonitorConfig, metrics: Metrics, *, bind_ip: str | None, allow_local: bool,
                 matcher: Matcher = run_matcher) -> None:
        """``matcher``: the monitor's is :func:`run_matcher` (libtorrent readers); scripts/bench_triage.py's
        flood replaces it with swarms that answer at once, to drive these workers under trio's MockClock."""
        self.config = config
        self.matcher = matcher
        self.metrics = metrics
        self.bind_ip = bind_ip
        self.allow_local = allow_local
        self.budget = ContentBudget(budget_settings(config))
        self.queue: PriorityQueue[ContentJob] = PriorityQueue(config.triage.queue_size)
        self._index: RegistryIndex | None = None
        self.screening = Screening.for_index(RegistryIndex([]), config, self.budget)
        metrics.gauges["p2pwatch_content_queue_length"] = lambda: float(len(self.queue))
        metrics.gauges["p2pwatch_content_bytes_last_day"] = self._spent_today

    def _spent_today(self) -> float:
        try:
            return self.budget.bytes.spent(trio.current_time())
        except RuntimeError:  # rendered outside trio
            return 0.0

    def update_index(self, index: RegistryIndex, *, changed: bool = False, applied: Applied | None = None) -> None:
        """Follow the registry: a new index (the triage's profile is built from it), or this one changed in
        place, with the items it lost and gained (``applied``: the profile follows them, O(changes)). Changed
        without ``applied`` rebuilds. The hash indexes are the index's own."""
        if index is self._index and applied is not None:
            self.screening.triage.apply(applied.added, applied.removed)
            return
        if index is self._index and not changed:
            return
        self.screening = Screening.for_index(index, self.config, self.budget)
        self._index = index

    def triage(self, metainfo: Metainfo) -> TriageDecision:
        return self.screening.triage.decide(metainfo)

    def submit(self, job: ContentJob) -> None:
        self.metrics.decision("queued", job.infohash.hex(), f"score {job.decision.score:g}: {job.decision.reason}")
        dropped = self.queue.push(job.decision.score, job)
        if dropped is not None:
            self.metrics.decision("dropped", dropped.infohash.hex(),
                                  f"queue of {self.queue.size} full; score {dropped.decision.score:g} is the lowest")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(max(1, self.config.triage.concurrent_readers)):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        while True:
            _, job = await self.queue.pop()
            await self.budget.admit(job.decision.estimate_bytes)
            async with self.budget.readers:
                # a typed failure is this torrent's decision; anything else is contained: the readers go on
                with contain(f"content stages of {job.infohash.hex()}", self.metrics.counters,
                             "p2pwatch_content_errors_total", logger=log):
                    try:
                        await self._examine(job)
                    except P2PWatchError as exc:
                        self.metrics.decision("rejected", job.infohash.hex(), f"content stages failed: {exc}")

    async def _examine(self, job: ContentJob) -> None:
        index = self._index or RegistryIndex([])
        report = await self.matcher(index, job.metainfo, job.peers, self.config, bind_ip=self.bind_ip,
                                    allow_local=self.allow_local, screening=self.screening, decision=job.decision)
        triage = report.triage or {}
        self.metrics.counters["p2pwatch_content_pieces_total"] += int(triage.get("pieces_read", 0))
        self.metrics.counters["p2pwatch_content_bytes_total"] += int(triage.get("bytes_charged", 0))
        decision = str(triage.get("decision", "rejected"))
        if decision == "skipped":  # no peer to read from
            decision = "rejected"
        self.metrics.decision(decision, job.infohash.hex(),
                              f"{triage.get('reason', '')} ({triage.get('pieces_read', 0)} pieces)")
        await job.finish(report)

