"""``p2pwatch lookup``: everything about one infohash or magnet, within a time limit.

DHT peers (with the nodes that listed them) and tracker counts, then the metadata (from a listed peer,
verified against the infohash; libtorrent's magnet fetch as fallback), the file list, the registry match
(all four matcher stages, behind triage and the one-keyframe screen: p2pwatch/match/screened.py), and probes
of some peers with the level each reached. With ``record`` it is all stored: the torrent, matches, level-0
listings and probe observations, a swarm sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import trio

from p2pwatch.config import MonitorConfig
from p2pwatch.dht.node import DHTConfig, open_dht_node
from p2pwatch.investigate.examine import Examination, harvest_dht, harvest_trackers, probe_listed, probe_pex_listed
from p2pwatch.investigate.geoip import GeoLookup
from p2pwatch.investigate.metadata_fetch import fetch_metadata
from p2pwatch.match.content_budget import BudgetSettings, ContentBudget
from p2pwatch.match.frame_lookup import FrameLookup
from p2pwatch.match.keyframe import KeyframeSettings
from p2pwatch.match.matcher import MatchReport, RegistryIndex, match_torrent, zero_byte_stages
from p2pwatch.match.perceptual import PerceptualSettings, perceptual_matches
from p2pwatch.match.screened import budgeted, screened_match, skipped_report
from p2pwatch.match.triage import Triage, TriageDecision, TriageRules
from p2pwatch.probe.bulk_fetch import FetchOptions, open_torrent_reader
from p2pwatch.probe.trackers import TrackerConfig
from p2pwatch.torrent.metainfo import Metainfo

log = logging.getLogger(__name__)


@dataclass
class LookupOutcome:
    infohash: bytes
    exam: Examination
    metainfo: Metainfo | None = None
    metadata_source: str | None = None
    report: MatchReport | None = None
    notes: list[str] = field(default_factory=list)
    timed_out: bool = False


def perceptual_settings(config: MonitorConfig) -> PerceptualSettings:
    m = config.matcher
    return PerceptualSettings(samples=m.samples, frame_threshold=m.frame_threshold, min_frames=m.min_frames,
                              image_threshold=m.image_threshold, max_image_bytes=m.max_image_bytes,
                              piece_timeout=m.fetch_timeout, max_fetch_fraction=m.max_fetch_fraction,
                              min_fetch_bytes=m.min_fetch_bytes, strict_budget=m.strict_budget)


def triage_rules(config: MonitorConfig) -> TriageRules:
    t = config.triage
    return TriageRules(min_video_kbps=t.min_video_kbps, max_video_kbps=t.max_video_kbps,
                       min_clip_seconds=t.min_clip_seconds, duration_slack=t.duration_slack,
                       max_image_bytes=config.matcher.max_image_bytes, max_files=t.max_files)


def keyframe_settings(config: MonitorConfig) -> KeyframeSettings:
    t = config.triage
    return KeyframeSettings(threshold=t.keyframe_threshold, image_threshold=t.image_threshold,
                            preview_pieces=t.preview_pieces, attempts=t.keyframe_attempts,
                            corroborate=t.keyframe_corroborate,
                            piece_timeout=config.matcher.fetch_timeout)


def budget_settings(config: MonitorConfig) -> BudgetSettings:
    t = config.triage
    return BudgetSettings(bytes_per_day=t.bytes_per_day, torrents_per_hour=t.torrents_per_hour,
                          concurrent_readers=t.concurrent_readers, queue_size=t.queue_size)


@dataclass
class Screening:
    """What the triaged content stages need, built once per registry: the triage, every registered frame hash
    (p2pwatch/match/frame_lookup.py) and, in the monitor, the budget shared by all torrents."""

    triage: Triage
    lookup: FrameLookup
    budget: ContentBudget | None = None

    @classmethod
    def for_index(cls, index: RegistryIndex, config: MonitorConfig, budget: ContentBudget | None = None
                  ) -> Screening:
        return cls(Triage(index, triage_rules(config), preview_pieces=config.triage.preview_pieces),
                   FrameLookup(index), budget)


async def run_matcher(index: RegistryIndex, metainfo: Metainfo, peers: list[tuple[str, int]], config: MonitorConfig,
                      *, bind_ip: str | None, allow_local: bool, screening: Screening | None = None,
                      decision: TriageDecision | None = None, zero_byte: MatchReport | None = None) -> MatchReport:
    """All matcher stages; content stages read through one libtorrent reader fed with the listed peers.
    ``zero_byte``: the names and exact-metadata stages' report when the caller ran them already
    (:func:`~p2pwatch.match.matcher.zero_byte_stages`); each stage runs once.

    With ``triage.enabled`` (the default) the torrent is first triaged from its metainfo (``decision``, when
    the caller triaged it already); a skipped torrent gets the zero-byte stages only, a queued one the
    exact-piece stage, the one-keyframe screen and the sampled confirmation of the survivors
    (p2pwatch/match/screened.py), every piece charged to ``screening.budget`` when there is one."""
    if not config.triage.enabled:
        return await _run_unscreened(index, metainfo, peers, config, bind_ip=bind_ip, allow_local=allow_local,
                                     zero_byte=zero_byte)
    screening = screening or Screening.for_index(index, config)
    decision = decision or screening.triage.decide(metainfo)
    if not decision.queued or not peers:
        return skipped_report(await zero_byte_stages(index, metainfo, zero_byte), decision)
    options = FetchOptions(bind_ip=bind_ip or "0.0.0.0", peers=tuple(peers), allow_local=allow_local,
                           timeout=config.matcher.fetch_timeout)
    async with open_torrent_reader(metainfo, options) as reader:
        source = budgeted(reader, metainfo, screening.budget)
        return await screened_match(index, screening.lookup, metainfo, source, decision,
                                    perceptual=perceptual_settings(config), keyframe=keyframe_settings(config),
                                    timeout=config.matcher.fetch_timeout, zero_byte=zero_byte)


async def _run_unscreened(index: RegistryIndex, metainfo: Metainfo, peers: list[tuple[str, int]],
                          config: MonitorConfig, *, bind_ip: str | None, allow_local: bool,
                          zero_byte: MatchReport | None) -> MatchReport:
    """Before issue 13: every image or video torrent goes to the sampled perceptual stage."""
    needs_content = any(index.by_size.get(f.length) for f in metainfo.files) or index.has_media()
    if not needs_content or not peers:
        return await zero_byte_stages(index, metainfo, zero_byte)
    options = FetchOptions(bind_ip=bind_ip or "0.0.0.0", peers=tuple(peers), allow_local=allow_local,
                           timeout=config.matcher.fetch_timeout)
    settings = perceptual_settings(config)

    async def perceptual(idx: RegistryIndex, meta: Metainfo, source: Any, done: set[tuple[int, str]]) -> list[Any]:
        return await perceptual_matches(idx, meta, source, done, settings)

    async with open_torrent_reader(metainfo, options) as reader:
        return await match_torrent(index, metainfo, reader, perceptual, timeout=config.matcher.fetch_timeout,
                                   zero_byte=zero_byte)


async def lookup(infohash: bytes, *, config: MonitorConfig, dht: DHTConfig | None, trackers: list[str],
                 metainfo: Metainfo | None, index: RegistryIndex | None, timeout: float, probe_limit: int = 8,
                 bind_ip: str | None = None, geo: GeoLookup | None = None) -> LookupOutcome:
    exam = Examination(infohash, datetime.now(UTC))
    outcome = LookupOutcome(infohash, exam, metainfo)
    allow_local = bool(dht and dht.allow_local) or config.dht.allow_local
    tracker_config = TrackerConfig(timeout=min(20.0, timeout / 2), local_address=bind_ip)
    with trio.move_on_after(timeout) as scope:
        async with trio.open_nursery() as nursery:
            if trackers:
                nursery.start_soon(harvest_trackers, trackers, exam, tracker_config)
            if dht is not None:
                async with open_dht_node(dht) as node:
                    if len(node.table) == 0:
                        outcome.notes.append("no DHT node answered; check --bootstrap")
                    else:
                        others = sorted(metainfo.dht_ids - {infohash}) if metainfo is not None else []
                        await harvest_dht(node, exam, other_ids=others)  # a hybrid's other id too
        peers = sorted(exam.listed)
        if outcome.metainfo is None and peers:
            fetched = await fetch_metadata(infohash, peers, config.probe, bind_ip=bind_ip, allow_local=allow_local)
            outcome.metainfo = fetched.metainfo
            outcome.metadata_source = fetched.source
            exam.probes.extend(fetched.probes)
            if fetched.error:
                outcome.notes.append(fetched.error)
        elif outcome.metainfo is not None:
            outcome.metadata_source = "given"
        if outcome.metainfo is not None and index is not None:
            # the zero-byte stages first: peers that vanish or stall the content stages until the timeout
            # must not cost the matches the metadata alone proves
            outcome.report = await zero_byte_stages(index, outcome.metainfo)
            outcome.report = await run_matcher(index, outcome.metainfo, peers, config, bind_ip=bind_ip,
                                               allow_local=allow_local, zero_byte=outcome.report)
        # peers already proven to level 3 (or flagged) are not probed again; metadata-only probes are
        probed = {(p.ip, p.port) for p in exam.probes if p.level >= 3 or p.flagged}
        await probe_listed(exam, outcome.metainfo, config.probe, limit=probe_limit,
                           pieces_budget=config.watcher.verified_pieces_per_torrent, bind_ip=bind_ip, skip=probed)
        await probe_pex_listed(exam, outcome.metainfo, config.probe, limit=probe_limit,
                               pieces_budget=config.watcher.verified_pieces_per_torrent, bind_ip=bind_ip,
                               allow_local=allow_local)
    exam.finished_at = datetime.now(UTC)
    if outcome.metainfo is not None and exam.piece_layers():
        outcome.metainfo = outcome.metainfo.with_piece_layers(exam.piece_layers())
    if scope.cancelled_caught:
        outcome.timed_out = True
        outcome.notes.append(f"stopped at the {timeout:g} s timeout; results are partial")
    if not exam.listed:
        outcome.notes.append("no peer is listed for this infohash on the DHT or the trackers asked")
    return outcome


def outcome_json(outcome: LookupOutcome, geo: GeoLookup | None) -> dict[str, Any]:
    meta = outcome.metainfo
    best: dict[tuple[str, int], Any] = {}
    for result in outcome.exam.probes:
        key = (result.ip, result.port)
        if key not in best or result.level > best[key].level:
            best[key] = result
    peers = []
    for (ip, port) in sorted(set(outcome.exam.listed) | set(best)):
        claims = outcome.exam.listed.get((ip, port), set())
        probe = best.get((ip, port))
        info = geo.lookup(ip) if geo else None
        peers.append({
            "ip": ip, "port": port, "level": probe.level if probe else 0,
            "sources": sorted({s for s, _ in claims} | ({"probe"} if probe else set())),
            "reported_by": sorted(r for _, r in claims),
            "client": probe.client if probe else None, "flagged": probe.flagged if probe else None,
            "piece_verified": probe.piece_verified if probe else None,
            "country": info.country if info else None, "asn": info.asn if info else None,
        })
    report = outcome.report
    return {
        "infohash": outcome.infohash.hex(),
        "name": meta.name if meta else None,
        "metadata_source": outcome.metadata_source,
        "files": [{"path": f.display_path, "length": f.length} for f in meta.files if not f.pad] if meta else [],
        "dht_peers": outcome.exam.dht_peers,
        "dht_scrape": {"seeders": outcome.exam.dht_seeds_estimate, "leechers": outcome.exam.dht_leechers_estimate},
        "trackers": [{"tracker": t.tracker, "seeders": t.seeders, "leechers": t.leechers, "completed": t.completed,
                      "peers": len(t.peers)} for t in outcome.exam.trackers]
        + [{"tracker": url, "error": err} for url, err in outcome.exam.tracker_errors.items()],
        "peers": peers,
        "matches": [{"case": m.case, "content": m.content_id, "file": m.file_path, "method": m.method,
                     "bytes_fetched": m.bytes_fetched} for m in (report.matches if report else [])],
        "candidates": [{"case": c.case, "keyword": c.keyword, "text": c.text}
                       for c in (report.candidates if report else [])],
        "triage": report.triage if report else None,
        "notes": outcome.notes + (report.errors if report else []),
        "timed_out": outcome.timed_out,
    }
