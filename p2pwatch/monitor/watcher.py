"""The watcher: re-examines every watched torrent on its schedule and records what it finds.

Peers heard of by PEX (BEP 11) in the last ``dormant_after`` seconds are probed again at the next checks even
when nobody lists them any more (they may be on no tracker and the DHT), under the same netguard and
local-address rules as fresh PEX candidates.

Each round claims due watches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several monitor hosts never
examine one torrent at once), examines each swarm (:mod:`p2pwatch.investigate.examine`: DHT harvest, tracker
announce+scrape on every tracker of its metainfo or magnet, probes with a budget of verified pieces),
writes the observations and a swarm sample through the one writer, updates the swarm status and releases
the claim with the next due time. A dormant or gone swarm seen alive again raises an alert.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from p2pwatch.config import MonitorConfig
from p2pwatch.dht.node import DHTNode
from p2pwatch.errors import P2PWatchError
from p2pwatch.investigate.examine import Examination, examine, observation_records, swarm_samples
from p2pwatch.investigate.geoip import GeoLookup
from p2pwatch.investigate.registry import upgrade_metainfo
from p2pwatch.investigate.swarmstatus import SwarmStatus, is_revival, swarm_status
from p2pwatch.monitor.alerts import Alerter
from p2pwatch.monitor.contain import contain
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.probe.trackers import TrackerConfig
from p2pwatch.storage.claims import claim_due_watches, recent_listings, release_watch
from p2pwatch.storage.ledger import ObservationRecord
from p2pwatch.storage.models import Torrent, Watch
from p2pwatch.storage.writer import ObservationWriter
from p2pwatch.torrent.magnet import parse_magnet
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
#: most PEX listings of earlier checks the watcher probes again (BEP 11 peers nobody else may list)
REMEMBERED_PEX = 200


@dataclass(frozen=True)
class WatchTarget:
    torrent_id: int
    dht_id: bytes
    name: str | None
    metainfo: Metainfo | None
    trackers: tuple[str, ...]
    status: str | None
    last_peer_at: datetime | None
    #: ((ip, port), reporter) of the PEX listings of the last ``dormant_after`` seconds
    remembered_pex: tuple[tuple[tuple[str, int], str | None], ...] = ()


def _target(session: Session, torrent_id: int, extra_trackers: list[str], pex_since: datetime) -> WatchTarget:
    torrent = session.get(Torrent, torrent_id)
    watch = session.execute(select(Watch).where(Watch.torrent_id == torrent_id)).scalar_one()
    assert torrent is not None
    metainfo = None
    trackers: list[str] = []
    if torrent.metainfo:
        try:
            metainfo = parse_torrent(torrent.metainfo, require_layers=False)
            trackers += [url for tier in metainfo.trackers for url in tier]
        except P2PWatchError as exc:
            log.warning("stored metainfo of %s unusable: %s", torrent.dht_id, exc)
    if torrent.magnet:
        with contextlib.suppress(P2PWatchError):
            trackers += list(parse_magnet(torrent.magnet).trackers)
    pex = recent_listings(session, torrent_id, "pex", pex_since, REMEMBERED_PEX)
    return WatchTarget(torrent_id, bytes.fromhex(torrent.dht_id), torrent.name, metainfo,
                       tuple(dict.fromkeys(trackers + extra_trackers)), watch.status, watch.last_peer_at,
                       tuple(((ip, port), reporter) for ip, port, reporter in pex))


def _store_layers(session: Session, torrent_id: int, metainfo: Metainfo) -> None:
    torrent = session.get(Torrent, torrent_id)
    if torrent is not None:
        upgrade_metainfo(torrent, metainfo)


def release_own_claims(session: Session, worker_id: str) -> int:
    """After a crash, our own leases would block our watches until they expire: drop them at start."""
    result = session.execute(update(Watch).where(Watch.claimed_by == worker_id)
                             .values(claimed_by=None, claimed_until=None).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class Watcher:
    def __init__(self, config: MonitorConfig, writer: ObservationWriter, node: DHTNode | None, *, worker_id: str,
                 alerter: Alerter, metrics: Metrics, geo: GeoLookup, bind_ip: str | None, poll: float = 2.0,
                 node6: DHTNode | None = None) -> None:
        self.config = config
        self.writer = writer
        self.node = node
        self.node6 = node6  # dual stack (BEP 32): watched swarms are looked up on the IPv6 DHT too
        self.worker_id = worker_id
        self.alerter = alerter
        self.metrics = metrics
        self.geo = geo
        self.bind_ip = bind_ip
        self.poll = poll
        self.examined: list[Examination] = []

    async def run(self) -> None:
        while True:
            now = datetime.now(UTC)
            claims = await self.writer.run(
                functools.partial(claim_due_watches, worker_id=self.worker_id, now=now, limit=4, lease=LEASE))
            if claims:
                async with trio.open_nursery() as nursery:
                    for claim in claims:
                        nursery.start_soon(self._check_safely, claim.torrent_id)
            else:
                await trio.sleep(self.poll)

    async def _check_safely(self, torrent_id: int) -> None:
        """One watch's failure, whatever the swarm did, is logged and counted; the daemon and the other
        watches go on (the lease expires, so the watch is examined again later)."""
        with contain(f"examination of torrent {torrent_id}", self.metrics.counters,
                     "p2pwatch_examination_errors_total", logger=log):  # typed errors too: the check did not finish
            await self._check(torrent_id)

    async def _check(self, torrent_id: int) -> None:
        extra = list(self.config.watcher.trackers)
        pex_since = datetime.now(UTC) - timedelta(seconds=self.config.watcher.dormant_after)
        target = await self.writer.run(lambda s: _target(s, torrent_id, extra, pex_since))
        exam = Examination(target.dht_id, datetime.now(UTC))
        tracker_config = TrackerConfig(timeout=20.0, local_address=self.bind_ip)
        try:
            nodes = [n for n in (self.node, self.node6) if n is not None]
            await examine(exam, node=nodes, trackers=target.trackers, metainfo=target.metainfo,
                          settings=self.config.probe, tracker_config=tracker_config,
                          probe_limit=self.config.watcher.probes_per_torrent,
                          pieces_budget=self.config.watcher.verified_pieces_per_torrent, bind_ip=self.bind_ip,
                          allow_local=self.config.dht.allow_local, remembered_pex=target.remembered_pex)
        except P2PWatchError as exc:
            log.warning("examination of %s failed: %s", target.dht_id.hex(), exc)
        self.examined.append(exam)
        if len(self.examined) > 100:
            del self.examined[:50]
        if target.metainfo is not None and exam.piece_layers():  # the level-3 rows on v2 pieces rest on them
            metainfo = target.metainfo.with_piece_layers(exam.piece_layers())
            await self.writer.run(lambda s: _store_layers(s, torrent_id, metainfo))
        records: list[Any] = observation_records(torrent_id, exam, self.geo)
        await self.writer.write_many(records + swarm_samples(torrent_id, exam))
        self._count(records)
        now = datetime.now(UTC)
        seen = exam.last_peer_seen() or target.last_peer_at
        status = swarm_status(seen, now, dormant_after=self.config.watcher.dormant_after,
                              gone_after=self.config.watcher.gone_after)
        previous = SwarmStatus(target.status) if target.status else SwarmStatus.UNKNOWN
        next_at = now + timedelta(seconds=self.config.watcher.interval)
        await self.writer.run(lambda s: release_watch(s, torrent_id, self.worker_id, now=now, next_check_at=next_at,
                                                      peer_seen_at=exam.last_peer_seen(), status=status.value))
        self.metrics.counters["p2pwatch_examinations_total"] += 1
        if is_revival(previous, status):
            await self.alerter.emit("swarm-revived", infohash=target.dht_id.hex(), name=target.name,
                                    previous=previous.value, peers=len(exam.listed))
        log.info("examined %s (%s): %d listed, %d probed, best level %d, status %s", target.dht_id.hex(),
                 target.name or "?", len(exam.listed), len(exam.probes),
                 max((p.level for p in exam.probes), default=0), status.value)

    def _count(self, records: list[Any]) -> None:
        for record in records:
            if isinstance(record, ObservationRecord):
                self.metrics.by_level[record.level] += 1
