"""Examine one torrent's swarm: DHT harvest, tracker announce/scrape, and peer probes.

``lookup`` runs it once; the monitor's watcher runs it on a schedule. The result is turned into
observations by :func:`observation_records`: every listing is a level-0 claim naming who made it (the
DHT node or the tracker), every probe an observation at the level it reached, with its transcript.

Peer exchange (BEP 11): the peers a probed peer lists over ut_pex become listings too (source ``pex``, the
reporting peer as reporter), and :func:`probe_pex_listed` probes them, chosen by
:func:`p2pwatch.probe.pex.pex_candidates` (netguard, local-address policy, per-reporter cap, one port per
IP), for up to ``MAX_PEX_ROUNDS`` rounds (peers named by peers named by the listed ones). The watcher also
passes the PEX listings it recorded lately (``remembered``): they are probed again under the same rules, but
not listed again, since nobody listed them this time.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from p2pwatch.config import ProbeSettings
from p2pwatch.dht.bloom import bloom_estimate, bloom_union
from p2pwatch.dht.node import DHTNode
from p2pwatch.errors import P2PWatchError
from p2pwatch.investigate.geoip import GeoLookup
from p2pwatch.investigate.metadata_fetch import probe_timeouts
from p2pwatch.netguard import is_acceptable_remote
from p2pwatch.probe.peer_probe import ProbeResult, probe_peer
from p2pwatch.probe.pex import PexPeer, pex_candidates
from p2pwatch.probe.trackers import TrackerConfig, TrackerProbe, probe_tracker
from p2pwatch.storage.ledger import ObservationRecord, SwarmSampleRecord
from p2pwatch.torrent.compact import format_addr
from p2pwatch.torrent.metainfo import Metainfo

log = logging.getLogger(__name__)

Endpoint = tuple[str, int]
#: rounds of probing PEX-named peers in one examination (each round probes what the previous one heard)
MAX_PEX_ROUNDS = 2


def parse_endpoint_text(text: str | None) -> Endpoint | None:
    """The inverse of :func:`p2pwatch.torrent.compact.format_addr`; None for anything else."""
    host, sep, port = (text or "").rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass
class Examination:
    infohash: bytes
    started_at: datetime
    #: every listed peer and who listed it ("dht ip:port" / "tracker URL" / "announce ip:port")
    listed: dict[Endpoint, set[tuple[str, str]]] = field(default_factory=dict)
    dht_peers: int | None = None
    dht_seeds_estimate: int | None = None  # BEP 33 bloom-filter estimates
    dht_leechers_estimate: int | None = None
    trackers: list[TrackerProbe] = field(default_factory=list)
    tracker_errors: dict[str, str] = field(default_factory=dict)
    probes: list[ProbeResult] = field(default_factory=list)
    finished_at: datetime | None = None
    #: peers listed only under another DHT id of the torrent (a hybrid's v1 / truncated v2, BEP 52): the id
    #: to greet them with, since a v2-only client knows the torrent by its v2 id alone
    listed_as: dict[Endpoint, bytes] = field(default_factory=dict)

    def add_listing(self, peer: Endpoint, source: str, reporter: str) -> None:
        self.listed.setdefault(peer, set()).add((source, reporter))

    def piece_layers(self) -> dict[bytes, bytes]:
        """The v2 piece layers the probed peers handed over (BEP 52 hash requests), each already verified
        against its pieces root; store them with the metainfo, since level-3 rows on v2 pieces rest on them."""
        return {root: layer for probe in self.probes for root, layer in probe.piece_layers.items()}

    def last_peer_seen(self) -> datetime | None:
        return self.finished_at if self.listed or any(p.level >= 1 for p in self.probes) else None


async def harvest_dht(node: DHTNode, exam: Examination, *, scrape: bool = True, other_ids: Sequence[bytes] = ()
                      ) -> None:
    """get_peers for the listings, then (BEP 33) a scrape lookup for the swarm-size estimate.

    Two lookups, because libtorrent answers a ``scrape`` get_peers with bloom filters instead of values.
    ``other_ids``: the torrent's other DHT ids (a hybrid's); their listings count too, and a peer found only
    under one of them is probed under it (:attr:`Examination.listed_as`).
    """
    result = await node.get_peers(exam.infohash)
    for peer, reporters in result.peers.items():
        for ip, port in reporters:
            exam.add_listing(peer, "dht", f"{ip}:{port}")
    only_other = 0  # counted here, not as a difference of exam.listed_as: another node's harvest adds to it too
    for other in other_ids:
        for peer, reporters in (await node.get_peers(other)).peers.items():
            if peer not in exam.listed:
                exam.listed_as[peer] = other
                only_other += 1
            for ip, port in reporters:
                exam.add_listing(peer, "dht", f"{ip}:{port}")
    # added up over the nodes that harvest (BEP 32: the IPv4 and the IPv6 DHT list disjoint peers)
    exam.dht_peers = (exam.dht_peers or 0) + len(result.peers) + only_other
    if scrape:
        counted = await node.get_peers(exam.infohash, scrape=True, seeds=result.closest)
        if counted.bf_seeds or counted.bf_peers:
            seeds = round(bloom_estimate(bloom_union(counted.bf_seeds))) if counted.bf_seeds else 0
            leechers = round(bloom_estimate(bloom_union(counted.bf_peers))) if counted.bf_peers else 0
            exam.dht_seeds_estimate = (exam.dht_seeds_estimate or 0) + seeds
            exam.dht_leechers_estimate = (exam.dht_leechers_estimate or 0) + leechers


async def harvest_trackers(urls: Sequence[str], exam: Examination, config: TrackerConfig) -> None:
    async def one(url: str) -> None:
        try:
            probe = await probe_tracker(url, exam.infohash, config=config)
        except (P2PWatchError, OSError) as exc:
            exam.tracker_errors[url] = f"{type(exc).__name__}: {exc}"
            return
        exam.trackers.append(probe)
        for peer in probe.peers:
            exam.add_listing((peer.ip, peer.port), "tracker", url)

    async with trio.open_nursery() as nursery:
        for url in dict.fromkeys(urls):
            nursery.start_soon(one, url)


async def probe_listed(exam: Examination, metainfo: Metainfo | None, settings: ProbeSettings, *, limit: int,
                       pieces_budget: int, bind_ip: str | None = None,
                       skip: set[Endpoint] | None = None, targets: Sequence[Endpoint] | None = None) -> None:
    """Probe up to ``limit`` listed peers (or ``targets``); the first ``pieces_budget`` of them also fetch one
    piece (level 3). Each probe waits up to ``settings.pex_wait`` for a BEP 11 message from its peer."""
    if targets is None:
        targets = [p for p in sorted(exam.listed) if not skip or p not in skip]
    targets = list(targets)[:limit]
    timeouts = dataclasses.replace(probe_timeouts(settings), pex=settings.pex_wait)
    limiter = trio.CapacityLimiter(max(1, settings.concurrent_probes))
    budget = [pieces_budget]

    async def one(ip: str, port: int) -> None:
        async with limiter:
            want_piece = metainfo is not None and budget[0] > 0
            if want_piece:
                budget[0] -= 1
            wire_id = exam.listed_as.get((ip, port), exam.infohash)
            result = await probe_peer(ip, port, wire_id, metainfo=metainfo, fetch_metadata=metainfo is None,
                                      fetch_piece=want_piece, timeouts=timeouts, encryption=settings.encryption,
                                      local_address=bind_ip)
            exam.probes.append(result)

    async with trio.open_nursery() as nursery:
        for ip, port in targets:
            nursery.start_soon(one, ip, port)


def add_pex_listings(exam: Examination, *, allow_local: bool) -> None:
    """Every peer a probed peer listed over ut_pex becomes a listing ("pex" via that peer); non-global
    addresses only when ``allow_local`` (BEP 11 data is untrusted: a peer must not fill the store with them)."""
    for probe in exam.probes:
        for peer in probe.pex_peers:
            if is_acceptable_remote(peer.ip, allow_local):
                exam.add_listing(peer.endpoint, "pex", format_addr((probe.ip, probe.port)))


def _remembered_reports(remembered: Sequence[tuple[Endpoint, str | None]]) -> list[tuple[Endpoint, list[PexPeer]]]:
    by_reporter: dict[Endpoint, list[PexPeer]] = {}
    for (ip, port), reporter in remembered:
        by_reporter.setdefault(parse_endpoint_text(reporter) or ("", 0), []).append(PexPeer(ip, port))
    return list(by_reporter.items())


async def probe_pex_listed(exam: Examination, metainfo: Metainfo | None, settings: ProbeSettings, *, limit: int,
                           pieces_budget: int, bind_ip: str | None = None, allow_local: bool = False,
                           remembered: Sequence[tuple[Endpoint, str | None]] = ()) -> None:
    """Record the PEX listings of the probes so far, then probe up to ``limit`` PEX-named peers in all, never
    one netguard refuses or one already probed, sharing what is left of ``pieces_budget``. ``remembered``
    (peer, reporter text) pairs from earlier examinations join the first round's candidates."""
    probed_before = len(exam.probes)
    earlier = _remembered_reports(remembered)
    for _ in range(MAX_PEX_ROUNDS):
        add_pex_listings(exam, allow_local=allow_local)
        room = limit - (len(exam.probes) - probed_before)
        reports = [((p.ip, p.port), list(p.pex_peers)) for p in exam.probes if p.pex_peers] + earlier
        earlier = []
        if room <= 0 or not reports:
            break
        chosen = pex_candidates(reports, known={(p.ip, p.port) for p in exam.probes}, allow_local=allow_local,
                                limit=room)
        if not chosen:
            break
        pieces_left = pieces_budget - sum(1 for p in exam.probes if p.piece_verified is not None)
        await probe_listed(exam, metainfo, settings, limit=room, pieces_budget=max(0, pieces_left), bind_ip=bind_ip,
                           targets=[peer.endpoint for peer, _ in chosen])
    add_pex_listings(exam, allow_local=allow_local)


async def examine(exam: Examination, *, node: DHTNode | Sequence[DHTNode] | None, trackers: Sequence[str],
                  metainfo: Metainfo | None, settings: ProbeSettings, tracker_config: TrackerConfig,
                  probe_limit: int, pieces_budget: int,
                  bind_ip: str | None = None, allow_local: bool = False,
                  remembered_pex: Sequence[tuple[Endpoint, str | None]] = ()) -> Examination:
    async with trio.open_nursery() as nursery:
        nodes = [] if node is None else list(node) if isinstance(node, Sequence) else [node]
        others = sorted(metainfo.dht_ids - {exam.infohash}) if metainfo is not None else []
        for one in nodes:  # a dual-stack monitor (BEP 32) harvests the IPv4 and the IPv6 DHT at once
            nursery.start_soon(functools.partial(harvest_dht, one, exam, other_ids=others))
        if trackers:
            nursery.start_soon(harvest_trackers, trackers, exam, tracker_config)
    await probe_listed(exam, metainfo, settings, limit=probe_limit, pieces_budget=pieces_budget, bind_ip=bind_ip)
    await probe_pex_listed(exam, metainfo, settings, limit=probe_limit - len(exam.probes),
                           pieces_budget=pieces_budget, bind_ip=bind_ip, allow_local=allow_local,
                           remembered=remembered_pex)
    exam.finished_at = datetime.now(UTC)
    return exam


def _transcript(probe: ProbeResult) -> dict[str, object]:
    doc = probe.to_json()
    doc.pop("metadata", None)
    return doc


def observation_records(torrent_id: int, exam: Examination, geo: GeoLookup | None = None
                        ) -> list[ObservationRecord]:
    """Level-0 claims for every listing (one per reporter) and one observation per probe."""
    records: list[ObservationRecord] = []
    at = exam.finished_at or datetime.now(UTC)
    for (ip, port), claims in sorted(exam.listed.items()):
        info = geo.lookup(ip) if geo else None
        for source, reporter in sorted(claims):
            records.append(ObservationRecord(torrent_id, ip, port, 0, source, at, reporter=reporter,
                                             country=info.country if info else None,
                                             org=info.asn if info else None))
    for probe in exam.probes:
        if probe.level < 1 and not probe.flagged:
            continue  # nothing beyond the listing was proven; the listing is already recorded
        info = geo.lookup(probe.ip) if geo else None
        finished = datetime.fromisoformat(probe.finished_at) if probe.finished_at else at
        records.append(ObservationRecord(torrent_id, probe.ip, probe.port, probe.level, "probe", finished,
                                         reporter="p2pwatch", client=probe.client,
                                         peer_id=probe.peer_id.hex() if probe.peer_id else None,
                                         have_fraction=probe.have_fraction, transcript=_transcript(probe),
                                         country=info.country if info else None, org=info.asn if info else None))
    return records


def swarm_samples(torrent_id: int, exam: Examination) -> list[SwarmSampleRecord]:
    at = exam.finished_at or datetime.now(UTC)
    by_level: dict[int, int] = {}
    for probe in exam.probes:
        by_level[probe.level] = by_level.get(probe.level, 0) + 1
    samples = [SwarmSampleRecord(torrent_id, at, "dht", dht_peers=exam.dht_peers, seeders=exam.dht_seeds_estimate,
                                 leechers=exam.dht_leechers_estimate, probed=by_level)]
    for t in exam.trackers:
        samples.append(SwarmSampleRecord(torrent_id, at, f"tracker {t.tracker}", seeders=t.seeders,
                                         leechers=t.leechers))
    return samples
