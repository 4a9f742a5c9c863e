"""The monitor's content stages (p2pwatch/monitor/content_queue.py): following the registry in place, and the
workers (queue, admission, readers, accounting) driven with a matcher that reads from instant swarms, as
scripts/bench_triage.py's flood does, on trio's MockClock."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace

import trio
import trio.testing

from p2pwatch.config import MonitorConfig, TriageSettings
from p2pwatch.investigate.lookup import Screening
from p2pwatch.investigate.registry_sync import Applied
from p2pwatch.match.content_budget import BudgetExhausted
from p2pwatch.match.matcher import MatchReport, RegisteredContent, RegistryIndex
from p2pwatch.match.screened import budgeted
from p2pwatch.match.triage import DECISION_QUEUE, RegistryProfile, TriageDecision
from p2pwatch.monitor.content_queue import ContentJob, ContentStages
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint, synthetic_video
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent

PIECE = 1 << 16


def _item(rng: random.Random, size: int) -> RegisteredContent:
    fp = synthetic_fingerprint(rng, size, synthetic_video(rng, 4))
    return RegisteredContent(fp.fingerprint_id, "case", fp)


def test_a_change_in_place_is_applied_to_the_triage_not_rebuilt() -> None:
    rng = random.Random(3)
    config = MonitorConfig()
    stages = ContentStages(config, Metrics(), bind_ip=None, allow_local=True)
    first, second = _item(rng, 40_000), _item(rng, 41_000)
    index = RegistryIndex([first])
    stages.update_index(index)
    screening = stages.screening
    stages.update_index(index)  # the same index, unchanged: nothing happens
    assert stages.screening is screening

    index.add(second)
    stages.update_index(index, applied=Applied(added=[second]))
    index.remove(first.content_id)
    stages.update_index(index, applied=Applied(removed=[first]))
    assert stages.screening is screening  # followed, not rebuilt
    rules = screening.triage.settings
    assert screening.triage.profile.snapshot() == RegistryProfile.build(index, rules).snapshot()
    assert set(screening.triage.profile.sizes) == {41_000}

    stages.update_index(RegistryIndex([first]))  # a new index: built from it
    assert stages.screening is not screening and set(stages.screening.triage.profile.sizes) == {40_000}


def _meta(name: str, pieces: int) -> Metainfo:
    info = {b"name": name.encode(), b"piece length": PIECE, b"length": pieces * PIECE, b"pieces": b"\0" * 20 * pieces}
    return parse_torrent(bencoding.encode({b"info": info}))


def test_workers_admit_read_under_the_budget_and_count_each_decision() -> None:
    """Budget of 3 pieces a day, one reader; three torrents of two pieces each, one piece estimated each: the
    best-scored is read whole, the next runs out of budget on its second piece, the third waits for the day."""
    triage = replace(TriageSettings(), bytes_per_day=3 * PIECE, concurrent_readers=1, queue_size=10)
    config = replace(MonitorConfig(), triage=triage)
    metrics = Metrics()
    order: list[str] = []
    asked: list[float] = []

    class Instant:
        async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, bytes]:
            pieces = list(wanted)
            asked.extend(trio.current_time() for _ in pieces)
            await trio.sleep(0.2)
            return {i: b"" for i in pieces}

        def downloaded(self) -> int:
            return 0

    async def matcher(index: RegistryIndex, metainfo: Metainfo, peers: list[tuple[str, int]],
                      config: MonitorConfig, *, bind_ip: str | None, allow_local: bool,
                      screening: Screening | None = None, decision: TriageDecision | None = None) -> MatchReport:
        assert screening is not None and screening.budget is stages.budget and decision is not None
        source = budgeted(Instant(), metainfo, screening.budget)
        report = MatchReport(metainfo.infohash.hex())
        outcome = "rejected"
        try:
            for piece in range(len(metainfo.piece_hashes)):
                await source.read_pieces_async([piece])
        except BudgetExhausted:
            outcome = "budget"
        report.triage = {"decision": outcome, "reason": "test", "pieces_read": source.pieces_read,
                         "bytes_charged": source.charged}
        return report

    stages = ContentStages(config, metrics, bind_ip=None, allow_local=True, matcher=matcher)

    async def main() -> None:
        async def finish(report: MatchReport) -> None:
            order.append(report.infohash)

        metas = {name: _meta(name, 2) for name in ("low", "high", "mid")}
        for score, name in ((1.0, "low"), (3.0, "high"), (2.0, "mid")):
            meta = metas[name]
            decision = TriageDecision(meta.infohash.hex(), DECISION_QUEUE, score, name, (0,), PIECE)
            stages.submit(ContentJob(meta.infohash, meta, [("127.0.0.1", 6881)], decision, finish))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stages.run)
            await trio.sleep(3600.0)
            assert order == [metas["high"].infohash.hex(), metas["mid"].infohash.hex()]
            await trio.sleep(2 * 86_400.0)
            nursery.cancel_scope.cancel()
        assert order[2] == metas["low"].infohash.hex()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert metrics.counters["p2pwatch_triage_queued_total"] == 3
    assert metrics.counters["p2pwatch_triage_budget_total"] == 1
    assert metrics.counters["p2pwatch_triage_rejected_total"] == 2
    assert metrics.counters["p2pwatch_content_pieces_total"] == 5
    assert asked[:3] == [0.0, 0.2, 0.4] and asked[3] >= 86_400.0  # never more than 3 pieces in a day
