"""A hostile or failing component in each stage of the monitor (p2pwatch/monitor/contain.py): the metadata
pipeline, the match workers, the content readers and the watcher go on, the failure is counted and logged
once, and a cancel still cancels. Also the pipeline's ``active`` count: a lead stops counting once it is
processed, even when its outcome waits for the matcher or it is cancelled."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from p2pwatch.config import MetadataSettings, MonitorConfig, TriageSettings
from p2pwatch.errors import RemoteProtocolError
from p2pwatch.investigate.lookup import Screening
from p2pwatch.match.matcher import MatchReport, RegistryIndex
from p2pwatch.match.triage import DECISION_QUEUE, TriageDecision
from p2pwatch.monitor.content_queue import ContentJob, ContentStages
from p2pwatch.monitor.daemon import Monitor
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.monitor.pipeline import FAILED, OK, TIMED_OUT, Addr, FetchAttempt, Lead, MetadataOutcome, MetadataPipeline
from p2pwatch.monitor.watcher import Watcher
from p2pwatch.storage.claims import Claim
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.metainfo import Metainfo, parse_info, parse_torrent
from tests.monitor.test_pipeline import NODE, FakeDHT, FakePeers, ih, peer, run_pipeline


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


class HostilePeers(FakePeers):
    """Peer 1 makes the fetcher raise what nobody expected, peer 2 a typed error; the others as FakePeers."""

    async def fetch(self, infohash: bytes, peer_addr: Addr) -> FetchAttempt:
        if peer_addr == peer(1):
            raise KeyError("a BEP 9 field nobody expected")
        if peer_addr == peer(2):
            raise RemoteProtocolError("the peer sent garbage")
        return await super().fetch(infohash, peer_addr)


# ---- the metadata pipeline -------------------------------------------------------------------------------------
async def test_a_failing_fetch_fails_its_lead_alone_counted_and_logged_once(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    dht = FakeDHT(direct={ih(n): (peer(n),) for n in (1, 2, 3)})
    pipeline = MetadataPipeline(dht, HostilePeers(good={peer(3)}), MetadataSettings())
    got = await run_pipeline(pipeline, [Lead(ih(n), NODE) for n in (1, 2, 3)])
    assert sorted((o.infohash, o.status) for o in got) == [(ih(1), FAILED), (ih(2), FAILED), (ih(3), OK)]
    st = pipeline.stats
    assert st.pipeline_errors == 1 and st.failed == 2 and st.ok == 1 and st.active == 0  # the typed one: no error
    (record,) = errors_logged(caplog)
    assert record.getMessage() == f"metadata for {ih(1).hex()} failed unexpectedly"
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)


async def test_a_fetch_failing_as_its_lead_times_out_fails_that_lead_alone(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """The deadline cancels two fetches of one lead, and one's cleanup raises: the fetch nursery raises the other's
    Cancelled and the error together (a BaseExceptionGroup, which ``except Exception`` does not catch). The error
    is contained, the deadline still ends the lead (timed out), the next lead goes on; before, the error left the
    lead's deadline scope and stopped the pipeline."""

    class BrokenOnCancel(FakePeers):
        async def fetch(self, infohash: bytes, peer_addr: Addr) -> FetchAttempt:
            if peer_addr != peer(1):
                return await super().fetch(infohash, peer_addr)
            try:
                await trio.sleep_forever()
            finally:
                raise ValueError("closing the connection failed")

    dht = FakeDHT(direct={ih(1): (peer(1), peer(3)), ih(2): (peer(2),)})
    pipeline = MetadataPipeline(dht, BrokenOnCancel(good={peer(2)}, hang={peer(3)}),
                                MetadataSettings(deadline=5.0, peers_at_once=2))
    got = await run_pipeline(pipeline, [Lead(ih(1), NODE), Lead(ih(2), NODE)])
    assert sorted((o.infohash, o.status) for o in got) == [(ih(1), TIMED_OUT), (ih(2), OK)]
    assert pipeline.stats.pipeline_errors == 1 and pipeline.stats.active == 0
    (record,) = errors_logged(caplog)
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_a_cancelled_pipeline_stops(autojump_clock: trio.testing.MockClock,
                                          caplog: pytest.LogCaptureFixture) -> None:
    dht = FakeDHT(direct={ih(n): (peer(n),) for n in range(10)})
    pipeline = MetadataPipeline(dht, FakePeers(hang={peer(n) for n in range(10)}), MetadataSettings())
    lead_send, lead_recv = trio.open_memory_channel[Lead](10)
    out_send, out_recv = trio.open_memory_channel[MetadataOutcome](10)
    for n in range(10):
        lead_send.send_nowait(Lead(ih(n), NODE))
    with trio.move_on_after(1.0) as scope:  # well inside the leads' deadline: every fetch still hangs
        await pipeline.run(lead_recv, out_send)
    assert scope.cancelled_caught and pipeline.stats.leads == 10 and pipeline.stats.active == 0
    assert pipeline.stats.pipeline_errors == 0 and not errors_logged(caplog)
    assert [o async for o in out_recv] == []  # cancelled, not timed out or failed


async def test_an_outcome_waiting_for_the_matcher_is_not_active_but_holds_its_slot(
        autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDHT(direct={ih(n): (peer(n),) for n in (1, 2)})
    pipeline = MetadataPipeline(dht, FakePeers(good={peer(1), peer(2)}), MetadataSettings(active=1))
    lead_send, lead_recv = trio.open_memory_channel[Lead](2)
    out_send, out_recv = trio.open_memory_channel[MetadataOutcome](0)  # nobody reads yet
    lead_send.send_nowait(Lead(ih(1), NODE))
    lead_send.send_nowait(Lead(ih(2), NODE))
    st = pipeline.stats
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run, lead_recv, out_send)
        await trio.sleep(30)
        assert (st.ok, st.active, st.leads) == (1, 0, 1)  # done, waiting to send; the second lead waits for the slot
        first = await out_recv.receive()
        await trio.sleep(30)
        assert first.infohash == ih(1) and (st.ok, st.active, st.leads) == (2, 0, 2)
        nursery.cancel_scope.cancel()  # the second outcome is still waiting to be sent: cancelled there
    assert st.active == 0 and st.max_active == 1


async def test_a_lead_cancelled_while_processed_is_no_longer_active(autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDHT(direct={ih(1): (peer(1),)})
    pipeline = MetadataPipeline(dht, FakePeers(hang={peer(1)}), MetadataSettings())
    lead_send, lead_recv = trio.open_memory_channel[Lead](1)
    out_send, _out_recv = trio.open_memory_channel[MetadataOutcome](1)
    lead_send.send_nowait(Lead(ih(1), NODE))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run, lead_recv, out_send)
        await trio.sleep(5)
        assert pipeline.stats.active == 1
        nursery.cancel_scope.cancel()
    assert pipeline.stats.active == 0 and pipeline.stats.leads == 1


# ---- the match workers -----------------------------------------------------------------------------------------
def bare_monitor() -> Monitor:
    monitor = Monitor.__new__(Monitor)
    monitor.metrics = Metrics()
    return monitor


METAINFO = parse_info(bencoding.encode({b"name": b"x", b"piece length": 16384, b"length": 1,
                                        b"pieces": b"\x00" * 20}))


async def test_a_failing_check_is_counted_and_logged_once_and_the_worker_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    monitor = bare_monitor()
    done: list[bytes] = []

    async def check_new(outcome: MetadataOutcome, *_args: Any) -> None:
        if outcome.infohash == ih(1):
            raise KeyError("an info dict field nobody expected")
        if outcome.infohash == ih(2):
            raise RemoteProtocolError("typed: logged, not counted")
        done.append(outcome.infohash)

    monitor._check_new = check_new  # type: ignore[method-assign,assignment]
    send, receive = trio.open_memory_channel[MetadataOutcome](3)
    async with send:
        for n in (1, 2, 3):
            send.send_nowait(MetadataOutcome(ih(n), OK, METAINFO))
    with trio.fail_after(5):
        await monitor._match_worker(receive, None)  # type: ignore[arg-type]
    assert done == [ih(3)] and monitor.metrics.counters["p2pwatch_metadata_errors_total"] == 1
    (record,) = errors_logged(caplog)
    assert record.getMessage() == f"checking torrent {ih(1).hex()} failed unexpectedly"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        f"checking torrent {ih(2).hex()} failed: typed: logged, not counted"]


async def test_a_cancelled_match_worker_stops(autojump_clock: trio.testing.MockClock) -> None:
    monitor = bare_monitor()
    started: list[bytes] = []

    async def check_new(outcome: MetadataOutcome, *_args: Any) -> None:
        started.append(outcome.infohash)
        await trio.sleep_forever()

    monitor._check_new = check_new  # type: ignore[method-assign,assignment]
    send, receive = trio.open_memory_channel[MetadataOutcome](2)
    send.send_nowait(MetadataOutcome(ih(1), OK, METAINFO))
    send.send_nowait(MetadataOutcome(ih(2), OK, METAINFO))
    with trio.move_on_after(10) as scope:
        await monitor._match_worker(receive, None)  # type: ignore[arg-type]
    assert scope.cancelled_caught and started == [ih(1)]  # the cancel was not contained: ih(2) never started
    assert monitor.metrics.counters["p2pwatch_metadata_errors_total"] == 0


# ---- the content readers ---------------------------------------------------------------------------------------
def _meta(name: str) -> Metainfo:
    info = {b"name": name.encode(), b"piece length": 16384, b"length": 16384, b"pieces": b"\0" * 20}
    return parse_torrent(bencoding.encode({b"info": info}))


async def test_a_failing_content_stage_is_counted_and_the_readers_go_on(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    config = replace(MonitorConfig(), triage=replace(TriageSettings(), concurrent_readers=1, queue_size=10))
    metrics = Metrics()
    finished: list[str] = []

    async def matcher(index: RegistryIndex, metainfo: Metainfo, peers: list[tuple[str, int]],
                      config: MonitorConfig, *, bind_ip: str | None, allow_local: bool,
                      screening: Screening | None = None, decision: TriageDecision | None = None) -> MatchReport:
        if metainfo.name == "hostile":
            raise IndexError("a piece index nobody expected")
        if metainfo.name == "typed":
            raise RemoteProtocolError("the swarm sent garbage")
        report = MatchReport(metainfo.infohash.hex())
        report.triage = {"decision": "rejected", "reason": "test"}
        return report

    async def finish(report: MatchReport) -> None:
        finished.append(report.infohash)

    stages = ContentStages(config, metrics, bind_ip=None, allow_local=True, matcher=matcher)
    metas = [_meta(name) for name in ("hostile", "typed", "fine")]
    for score, meta in zip((3.0, 2.0, 1.0), metas, strict=True):
        decision = TriageDecision(meta.infohash.hex(), DECISION_QUEUE, score, meta.name, (0,), 16384)
        stages.submit(ContentJob(meta.infohash, meta, [("127.0.0.1", 6881)], decision, finish))
    with trio.move_on_after(60) as scope:
        await stages.run()
    assert scope.cancelled_caught and finished == [metas[2].infohash.hex()]
    assert metrics.counters["p2pwatch_content_errors_total"] == 1
    assert metrics.counters["p2pwatch_triage_rejected_total"] == 2  # the typed failure and "fine"
    (record,) = errors_logged(caplog)
    assert record.getMessage() == f"content stages of {metas[0].infohash.hex()} failed unexpectedly"


# ---- the watcher -----------------------------------------------------------------------------------------------
class ClaimsOnce:
    """A writer that hands out claims of torrents 1 and 2 once, then none."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, _func: Any) -> Any:
        self.calls += 1
        until = datetime.now(UTC) + timedelta(minutes=5)
        return [Claim(1, 1, until), Claim(2, 2, until)] if self.calls == 1 else []


def bare_watcher(metrics: Metrics) -> Watcher:
    return Watcher(MonitorConfig(), ClaimsOnce(), None, worker_id="w", alerter=None, metrics=metrics,  # type: ignore[arg-type]
                   geo=None, bind_ip=None)  # type: ignore[arg-type]


async def test_a_failing_examination_is_counted_and_logged_once(autojump_clock: trio.testing.MockClock,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    watcher = bare_watcher(metrics)
    checked: list[int] = []

    async def check(torrent_id: int) -> None:
        if torrent_id == 1:
            raise ExceptionGroup("examine", [ValueError("a swarm state nobody expected")])
        checked.append(torrent_id)

    watcher._check = check  # type: ignore[method-assign]
    with trio.move_on_after(30):
        await watcher.run()
    assert checked == [2] and metrics.counters["p2pwatch_examination_errors_total"] == 1
    (record,) = errors_logged(caplog)
    assert record.getMessage() == "examination of torrent 1 failed unexpectedly"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)  # the leaf, unwrapped


async def test_a_cancelled_watcher_stops(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    watcher = bare_watcher(metrics)
    after: list[int] = []

    async def check(torrent_id: int) -> None:
        await trio.sleep_forever()
        after.append(torrent_id)

    watcher._check = check  # type: ignore[method-assign]
    with trio.move_on_after(30) as scope:
        await watcher.run()
    assert scope.cancelled_caught and after == [] and metrics.counters["p2pwatch_examination_errors_total"] == 0
