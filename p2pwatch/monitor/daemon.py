"""The monitor daemon: one nursery runs the DHT node, the crawler, metadata fetching, the matcher, the
watcher and the writer, joined by bounded channels (a slow stage pushes back; memory stays bounded).

Flow (DESIGN.md): crawler discoveries → metadata pipeline (:mod:`p2pwatch.monitor.pipeline`: the node that
sampled the infohash is asked for peers first, BEP 9 from several peers at once, then a lookup, then
libtorrent) → triage from the metainfo (zero bytes; issue 13) → the content queue under the budget
(p2pwatch/monitor/content_queue.py: exact-piece, one-keyframe screen, sampled confirmation) → confirmed
matches enter the watch list → the watcher examines watched swarms on a schedule → observations through
the one writer. Only torrents that match (or are watched) are stored: the metadata of every other torrent
the crawler sees is dropped after matching (data minimisation).

Dual stack (BEP 32, ``[dht] bind6``): an IPv6 node runs beside the IPv4 one (its own socket, routing table,
BEP 42 id and state file), each with its own crawler and per-IP rate limiter, both feeding the same
discoveries channel; the pipeline asks a sampled-from node through the node of its family, and fallback
lookups and the watcher's lookups run on both DHTs, their peers merged.

SIGINT/SIGTERM cancel the nursery: in-flight work stops, the writer commits what was queued, the DHT node
saves its id and routing table. The database holds the watch list and each watch's next due time, so a
restart (also after SIGKILL) resumes where it stopped; our own stale claims are released at start.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import signal
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from p2pwatch.config import MonitorConfig
from p2pwatch.dht.crawler import AnnouncedPeer, Crawler, DiscoveredInfohash, Discovery
from p2pwatch.dht.dualstack import open_dual_stack
from p2pwatch.dht.node import DHTConfig, DHTNode
from p2pwatch.errors import P2PWatchError
from p2pwatch.investigate.examine import Examination, add_pex_listings, observation_records
from p2pwatch.investigate.geoip import GeoLookup
from p2pwatch.investigate.lookup import run_matcher
from p2pwatch.investigate.registry import record_match, upsert_torrent
from p2pwatch.investigate.registry_sync import Applied, RegistryChanges, RegistrySync
from p2pwatch.match.matcher import Match, MatchReport, RegistryIndex, match_torrent
from p2pwatch.match.screened import skipped_report
from p2pwatch.monitor.alerts import Alerter
from p2pwatch.monitor.contain import contain
from p2pwatch.monitor.content_queue import ContentJob, ContentStages
from p2pwatch.monitor.metadata_sources import ProbeFetcher
from p2pwatch.monitor.metrics import Metrics, PerMinute, series, serve_metrics
from p2pwatch.monitor.pipeline import (
    OK,
    DHTPeerSource,
    Lead,
    MetadataOutcome,
    MetadataPipeline,
    PipelineStats,
    node_of_family,
)
from p2pwatch.monitor.watcher import Watcher, release_own_claims
from p2pwatch.probe.probe_result import ProbeResult
from p2pwatch.storage.db import session_factory
from p2pwatch.storage.ledger import ObservationRecord
from p2pwatch.storage.models import Case, Content, Keyword, Torrent, Watch
from p2pwatch.storage.writer import ObservationWriter, open_writer
from p2pwatch.torrent.compact import format_addr
from p2pwatch.torrent.metainfo import Metainfo

log = logging.getLogger("p2pwatch.monitor")

INDEX_REFRESH = 30.0
MATCH_WORKERS = 4
#: pipeline counters exported as p2pwatch_metadata_<name>_total (and the per-minute gauges of PER_MINUTE)
PIPELINE_COUNTERS = ("leads", "direct_asked", "direct_with_peers", "lookups", "fetch_attempts", "fetch_ok",
                     "fetch_failed", "fetch_timed_out", "libtorrent", "libtorrent_ok", "libtorrent_busy", "ok",
                     "failed", "timed_out", "no_peers", "pipeline_errors")
PER_MINUTE = ("p2pwatch_infohashes_discovered_total", "p2pwatch_metadata_ok_total", "p2pwatch_metadata_failed_total",
              "p2pwatch_metadata_timed_out_total", "p2pwatch_metadata_no_peers_total")


def worker_id_for(home: Path) -> str:
    """Stable per host and data directory, so a restart recognises (and releases) its own claims."""
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}:{digest}"


def outcome_probes(outcome: MetadataOutcome) -> list[ProbeResult]:
    """The BEP 9 probes of a metadata outcome: each is evidence (levels 1-2, and what its peer said over PEX)."""
    return [a.evidence for a in outcome.attempts if isinstance(a.evidence, ProbeResult)]


@dataclass
class MonitorState:
    index: RegistryIndex = field(default_factory=lambda: RegistryIndex([]))
    known: set[bytes] = field(default_factory=set)  # DHT ids already stored (matched or watched)
    watched: dict[bytes, int] = field(default_factory=dict)  # DHT id -> torrent id
    checked: int = 0
    checked_ids: set[bytes] = field(default_factory=set)  # DHT ids whose metadata was checked (both of a hybrid)
    matches: list[dict[str, object]] = field(default_factory=list)


def registry_version(session: Session) -> tuple[Any, ...]:
    """Changes whenever content, keywords or case status change (rows are added, deleted or withdrawn)."""
    return (session.execute(select(func.count(), func.max(Content.id)).select_from(Content)).one(),
            session.execute(select(func.count(), func.max(Keyword.id)).select_from(Keyword)).one(),
            session.execute(select(func.count(Case.withdrawn_at), func.count()).select_from(Case)).one())


def load_monitor_state(session: Session, previous: tuple[Any, ...] | None, registry: RegistrySync | None = None
                       ) -> tuple[RegistryChanges | None, tuple[Any, ...], set[bytes], dict[bytes, int]]:
    """The registry's changes since the last read into ``registry`` (None when ``previous`` says there are
    none; only the changed rows are parsed, never the whole registry again), the stored torrents and the
    watch list."""
    version = tuple(tuple(row) for row in registry_version(session))
    index = None if version == previous else (registry or RegistrySync()).read(session)
    known = {bytes.fromhex(h[:40]) for row in session.execute(
        select(Torrent.dht_id, Torrent.infohash_v1, Torrent.infohash_v2)) for h in row if h}
    watched = {bytes.fromhex(h[:40]): t.id for t in session.execute(  # a hybrid is announced under both its ids
        select(Torrent).join(Watch, Watch.torrent_id == Torrent.id).where(Watch.active.is_(True))).scalars()
        for h in (t.dht_id, t.infohash_v1, t.infohash_v2) if h}
    return index, version, known, watched


class Monitor:
    def __init__(self, config: MonitorConfig, engine: Engine, dht: DHTConfig, *, home: Path,
                 bind_ip: str | None = None, dht6: DHTConfig | None = None) -> None:
        self.config = config
        self.engine = engine
        self.dht_config = dht
        self.dht6_config = dht6  # None: the IPv4 DHT only
        self.home = home
        self.bind_ip = bind_ip
        self.worker_id = worker_id_for(home)
        self.state = MonitorState()
        self.metrics = Metrics()
        self.per_minute = PerMinute(PER_MINUTE)
        self.pipeline: MetadataPipeline | None = None
        self.alerter = Alerter(config.alerts.webhook, config.alerts.command)
        self.geo = GeoLookup([config.geoip_mmdb] if config.geoip_mmdb else None)
        self.node: DHTNode | None = None
        self.node6: DHTNode | None = None
        self.crawlers: list[Crawler] = []
        self.watcher: Watcher | None = None
        self.ready = trio.Event()
        self.metrics_port: int | None = None
        self._registry_version: tuple[Any, ...] | None = None
        self.writer: ObservationWriter | None = None
        self.content = ContentStages(config, self.metrics, bind_ip=bind_ip, allow_local=dht.allow_local)
        self.registry = RegistrySync(session_factory(engine))  # slim items, tables read on demand
        # registered items the index does not hold (not matched): a fingerprint that does not parse, a refusal
        self.metrics.gauges["p2pwatch_registry_unindexed_items"] = lambda: float(len(self.registry.unindexed))

    async def _read(self) -> None:
        """Read the registry's changes, the stored torrents and the watch list; apply the changes to the index.
        The registry version read is kept only once its changes are applied, so a read or an apply that
        fails is retried whole by the next call (after a failed apply whatever the version says:
        :attr:`RegistrySync.settled`). An item the index refuses is held unindexed, the rest applied, and it is
        tried again at every refresh (:attr:`RegistrySync.retrying`)."""
        sessions = session_factory(self.engine)
        # an apply that failed, or items the index refused (tried again by every apply): read again
        previous = self._registry_version if self.registry.settled and not self.registry.retrying else None

        def load() -> tuple[RegistryChanges | None, tuple[Any, ...], set[bytes], dict[bytes, int]]:
            with sessions() as session:
                changes, version, known, watched = load_monitor_state(session, previous, self.registry)
            if changes is not None and self.state.index is not self.registry.index:
                self.registry.apply(changes)  # the first load: nothing queries this index yet
                self.registry.index.prepare()
                changes = None
            return changes, version, known, watched

        changes, version, known, watched = await trio.to_thread.run_sync(load)
        applied = Applied()
        try:
            if changes is not None:  # applied here, between lookups: the index never changes under one
                self.registry.apply(changes, applied)
        finally:  # also after a failure halfway: the triage's profile follows what the index took
            self.state.index = self.registry.index
            self.content.update_index(self.state.index, applied=applied)
        self._registry_version = version
        self.state.known |= known
        self.state.watched = watched

    async def run(self, duration: float | None = None) -> MonitorState:
        """Run until ``duration`` passes, SIGINT/SIGTERM arrives (handled from the first moment), or cancel."""
        async with trio.open_nursery() as outer:
            await outer.start(self._signals, outer.cancel_scope)
            if self.config.metrics_port:  # bound first: a busy port stops the monitor before it does anything
                self.metrics_port = await outer.start(serve_metrics, self.metrics, self.config.metrics_port)
            with trio.move_on_after(duration if duration is not None else float("inf")):
                await self._run()
            outer.cancel_scope.cancel()
        return self.state

    async def _run(self) -> None:
        async with open_writer(self.engine, batch_size=self.config.store.batch_size) as writer:
            self.writer = writer
            released = await writer.run(lambda s: release_own_claims(s, self.worker_id))
            if released:
                log.info("released %d claims left by an earlier run of this monitor", released)
            await writer.audit("monitor", "monitor.start", {"worker": self.worker_id,
                                                           "config_sha256": self.config.digest()})
            await self._read()
            async with open_dual_stack(self.dht_config, self.dht6_config) as pair:
                assert pair.v4 is not None
                node, self.node, self.node6 = pair.v4, pair.v4, pair.v6
                for one in pair.nodes:
                    log.info("DHT node %s on %s, %d nodes known", one.own_id.hex(), format_addr(one.address),
                             len(one.table))
                await self._run_stages(writer, node)

    async def _run_stages(self, writer: ObservationWriter, node: DHTNode) -> None:
        m = self.metrics
        node6 = self.node6
        m.gauges["p2pwatch_dht_nodes"] = lambda: float(len(node.table))
        if node6 is not None:
            m.gauges["p2pwatch_dht6_nodes"] = lambda: float(len(node6.table))
        m.gauges["p2pwatch_watched_torrents"] = lambda: float(len(set(self.state.watched.values())))
        discoveries_send, discoveries = trio.open_memory_channel[Discovery](self.config.crawler.channel_size)
        metadata_send, metadata_receive = trio.open_memory_channel[Lead](64)
        outcomes_send, outcomes = trio.open_memory_channel[MetadataOutcome](64)
        bind_ip6 = self.dht6_config.bind_host if self.dht6_config is not None else "::"
        fetcher = ProbeFetcher(self.config.probe, bind_ip=self.bind_ip, bind_ip6=bind_ip6,
                               allow_local=self.dht_config.allow_local)
        self.pipeline = MetadataPipeline(DHTPeerSource(node, node6), fetcher, self.config.metadata,
                                         max_peers=self.config.probe.metadata_peers)
        self.per_minute.install(m)
        self.watcher = Watcher(self.config, writer, node, worker_id=self.worker_id, alerter=self.alerter,
                               metrics=m, geo=self.geo, bind_ip=self.bind_ip, node6=node6)
        async with trio.open_nursery() as nursery:
            crawlers = [Crawler(one, discoveries_send, segments=self.config.crawler.segments,
                                passive=self.config.crawler.passive,
                                sweep_interval=self.config.crawler.sweep_interval)
                        for one in (node, node6) if one is not None]  # one per DHT (BEP 32), one channel
            self.crawlers = crawlers
            if self.config.crawler.enabled:
                nursery.start_soon(self._crawl, crawlers)
            nursery.start_soon(self._discoveries, discoveries, metadata_send, writer)
            nursery.start_soon(self.pipeline.run, metadata_receive, outcomes_send)
            for _ in range(MATCH_WORKERS):
                nursery.start_soon(self._match_worker, outcomes.clone(), writer)
            nursery.start_soon(self.watcher.run)
            nursery.start_soon(self.content.run)
            nursery.start_soon(self._refresh_index)
            self.ready.set()

    async def _signals(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                       ) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s: stopping (flushing the writer, saving DHT state)", signal.Signals(signum).name)
                scope.cancel()
                return

    async def _crawl(self, crawlers: list[Crawler]) -> None:
        async with trio.open_nursery() as nursery:
            for crawler in crawlers:  # sweeps every crawler.sweep_interval, passive capture throughout
                nursery.start_soon(crawler.run)
            while True:
                await trio.sleep(5)
                self.update_metrics()

    def update_metrics(self) -> None:
        """Refresh the counters read from the stages (every 5 s while crawling)."""
        m, crawlers = self.metrics, self.crawlers
        m.counters["p2pwatch_infohashes_discovered_total"] = sum(c.stats.discovered for c in crawlers)
        if self.pipeline is not None:
            export_pipeline(m, self.pipeline.stats)
        self.per_minute.sample(m, trio.current_time())
        nodes = [n for n in (self.node, self.node6) if n is not None]  # both DHTs added up
        if nodes:
            m.counters["p2pwatch_dht_queries_received_total"] = sum(n.stats.queries_in for n in nodes)
            m.counters["p2pwatch_dht_queries_sent_total"] = sum(n.stats.queries_out for n in nodes)
        for family, one in (("ipv4", self.node), ("ipv6", self.node6)):  # and each DHT by itself (BEP 32)
            if one is None:
                continue
            for metric, count in (("queries_sent", one.stats.queries_out), ("queries_received", one.stats.queries_in),
                                  ("responses", one.stats.responses), ("timeouts", one.stats.timeouts),
                                  ("discovered", sum(c.stats.discovered for c in crawlers if c.node is one))):
                m.counters[series(f"p2pwatch_dht_family_{metric}_total", family=family)] = count

    async def _refresh_index(self) -> None:
        """Re-read the registry every INDEX_REFRESH seconds. A reload that fails (typed error or not: a
        malformed stored row, a database hiccup) is logged, counted and retried whole at the next refresh
        (:meth:`_read`); the daemon goes on. A cancel is not an ``Exception``: it still stops the loop."""
        while True:
            await trio.sleep(INDEX_REFRESH)
            try:
                await self._read()
            except Exception as exc:
                self.metrics.counters["p2pwatch_registry_reload_errors_total"] += 1
                log.warning("registry reload failed (retried in %g s): %s", INDEX_REFRESH, exc,
                            exc_info=not isinstance(exc, P2PWatchError))  # a traceback for the unexpected

    async def _discoveries(self, receive: trio.MemoryReceiveChannel[Discovery], metadata: trio.MemorySendChannel[Lead],
                           writer: ObservationWriter) -> None:
        async for event in receive:
            if isinstance(event, DiscoveredInfohash):
                if event.infohash not in self.state.known:
                    self.state.known.add(event.infohash)
                    sampled = event.reported_by if event.message == "sample_infohashes" else None
                    await metadata.send(Lead(event.infohash, sampled))  # back-pressure onto the crawler
            elif isinstance(event, AnnouncedPeer):
                torrent_id = self.state.watched.get(event.infohash)
                if torrent_id is not None:
                    to = node_of_family(event.ip, self.node, self.node6) if self.node else None  # its socket
                    reporter = f"announce to {to.address[0]}:{to.address[1]}" if to else None
                    await writer.write(ObservationRecord(torrent_id, event.ip, event.port, 0, "announce",
                                                         event.at, reporter=reporter))
                    self.metrics.by_level[0] += 1

    async def _match_worker(self, receive: trio.MemoryReceiveChannel[MetadataOutcome],
                            writer: ObservationWriter) -> None:
        async for outcome in receive:
            if outcome.status != OK or not isinstance(outcome.metainfo, Metainfo):
                log.debug("%s: no metadata (%s)", outcome.infohash.hex(), outcome.status)
                continue
            # whatever a swarm sends, one torrent's failure never stops the daemon
            with contain(f"checking torrent {outcome.infohash.hex()}", self.metrics.counters,
                         "p2pwatch_metadata_errors_total", expected=(P2PWatchError,), logger=log):
                await self._check_new(outcome, outcome.metainfo, writer)

    async def _check_new(self, outcome: MetadataOutcome, metainfo: Metainfo, writer: ObservationWriter) -> None:
        infohash = outcome.infohash
        peers = sorted(outcome.peers)
        allow_local = self.dht_config.allow_local
        layers = {root: layer for probe in outcome_probes(outcome) for root, layer in probe.piece_layers.items()}
        metainfo = metainfo.with_piece_layers(layers)  # level-3 rows on v2 pieces rest on them: stored together
        other_ids = set(metainfo.dht_ids) - {infohash}
        if other_ids & self.state.checked_ids:
            return  # a hybrid's other DHT id (BEP 52) was checked already: the same torrent
        self.state.checked_ids |= other_ids | {infohash}
        self.state.known |= other_ids
        self.metrics.counters["p2pwatch_metadata_fetched_total"] += 1
        self.state.checked += 1
        index = self.state.index
        if not len(index) and not index.keywords:
            return
        finish = functools.partial(self._finish, infohash, metainfo, outcome)
        if not self.config.triage.enabled:
            await finish(await run_matcher(index, metainfo, peers, self.config, bind_ip=self.bind_ip,
                                           allow_local=allow_local))
            return
        self.content.update_index(index)
        decision = self.content.triage(metainfo)
        if decision.queued:
            self.content.submit(ContentJob(infohash, metainfo, peers, decision, finish))
            return
        report = skipped_report(await match_torrent(index, metainfo, None), decision)
        assert report.triage is not None
        self.metrics.decision(report.triage["decision"], infohash.hex(), report.triage["reason"])
        await finish(report)

    async def _finish(self, infohash: bytes, metainfo: Metainfo, outcome: MetadataOutcome, report: MatchReport
                      ) -> None:
        """Log the candidates; store a matched torrent, its matches and observations; alert."""
        writer = self.writer
        assert writer is not None
        for candidate in report.candidates:
            log.info("keyword candidate %s in %s (case %s): %r", candidate.keyword, infohash.hex(), candidate.case,
                     candidate.text)
        if not report.matches:
            return
        torrent_id = await writer.run(lambda s: self._store_matches(s, infohash, metainfo, report.matches))
        for ident in metainfo.dht_ids | {infohash}:  # announces under either id of a hybrid are its peers
            self.state.watched[ident] = torrent_id
        exam = Examination(infohash, datetime.now(UTC))
        for peer, reporters in outcome.peers.items():
            for ip, port in reporters:
                exam.add_listing(peer, "dht", f"{ip}:{port}")
        exam.probes.extend(outcome_probes(outcome))
        add_pex_listings(exam, allow_local=self.dht_config.allow_local)  # BEP 11 heard during the metadata stage
        exam.finished_at = datetime.now(UTC)
        await writer.write_many(observation_records(torrent_id, exam, self.geo))
        for match in report.matches:
            self.metrics.counters["p2pwatch_matches_total"] += 1
            doc = {"case": match.case, "infohash": infohash.hex(), "name": metainfo.name, "file": match.file_path,
                   "method": match.method, "bytes_fetched": match.bytes_fetched}
            self.state.matches.append(doc)
            await self.alerter.emit("new-match", **doc)

    def _store_matches(self, session: Session, infohash: bytes, metainfo: Metainfo, matches: list[Match]) -> int:
        torrent = upsert_torrent(session, infohash, metainfo=metainfo, source="crawler")
        for match in matches:
            record_match(session, match, torrent, actor="monitor")
        return torrent.id


def export_pipeline(metrics: Metrics, stats: PipelineStats) -> None:
    """The pipeline's counters as ``p2pwatch_metadata_<name>_total``, its load as gauges."""
    for name in PIPELINE_COUNTERS:
        metrics.counters[f"p2pwatch_metadata_{name}_total"] = getattr(stats, name)
    metrics.gauges["p2pwatch_metadata_active"] = lambda: float(stats.active)
