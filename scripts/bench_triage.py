"""What a torrent costs before it is known to matter (issue 13): triage, the one-keyframe screen, the index.

    python scripts/bench_triage.py --quick --json     # under 10 minutes on 2 cores, 1,000,000 indexed hashes
    python scripts/bench_triage.py --json             # the full run: more content, 10,000,000 indexed hashes

Corpus (ffmpeg lavfi sources only, generated into a temporary directory, nothing kept): ``videos`` registered
videos (p2pwatch/testswarm/media.py: three generated scenes, 12 s, 320x240, 10 fps, H.264) and ``images``
registered images, each with planted copies: the same bytes (``exact``), the same bytes renamed behind a text
file in a multi-file torrent (``renamed``), re-encoded (CRF 32), resized (176 px wide), trimmed and
re-encoded (6 s from 3.3 s), trimmed by stream copy into Matroska (6 s from 4 s); images resized and
recompressed (JPEG q70 at half size, JPEG q30, WebP q50 at 3/4), among ``decoy_videos`` and ``decoy_images``
unrelated generated ones. The registry is padded with synthetic items (p2pwatch/testswarm/synthetic_registry.py:
random fingerprints, frame-like hashes from p2pwatch/match/hash_index_measure.py, durations of 30 s to 20 min)
up to ``index_hashes`` registered hashes, so every key frame is looked up among that many.

Every candidate is a single-file v1 torrent (the renamed copies: a two-file one) with ``piece_kib`` pieces
(64 KiB: a piece holds 1.5-2 s of these videos, as libtorrent's automatic piece size does for real videos,
256 KiB for a 300 MB episode, 512 KiB for a 1.5 GB film), read through a file-backed piece source by
exactly the code the monitor runs (p2pwatch/match/screened.py: triage, exact stages, the one-keyframe screen,
the sampled confirmation of the survivors). ``nonmatch_pieces_*``: distinct pieces read per decoy torrent
that reached the content stages. Precision and recall count (candidate, registered item) pairs: a candidate
matching its own source is a true positive, matching any other item a false positive.

Also: triage of ``metadata_decoys`` metainfo-only torrents shaped like what a crawler sees (albums,
software, e-books, TV packs, films, photo sets), which never cost a byte; the pieces today's stage (no
triage, no screen) reads for a sample of decoys; a sweep of the screen's threshold over the recorded key
frame hashes (false rejections of copies against decoys surviving); the index figures of
p2pwatch/match/hash_index_measure.py; and a flood of torrents replayed under trio's MockClock against the
content budget (``budget_respected``: no 24-hour window asks more than the byte budget of the swarms).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("P2PWATCH_NETGUARD_ALLOW", "127.0.0.0/8")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import trio
import trio.testing
from triage_corpus import Candidate, build_corpus, fingerprints, metadata_decoys, pad_registry

from p2pwatch.config import MonitorConfig, TriageSettings
from p2pwatch.investigate.lookup import Screening
from p2pwatch.match import media
from p2pwatch.match.content_budget import BudgetedSource, BudgetExhausted, BudgetSettings
from p2pwatch.match.frame_lookup import FrameLookup
from p2pwatch.match.hash_index_measure import MATCHER_RADIUS, measure_index
from p2pwatch.match.keyframe import KeyframeSettings
from p2pwatch.match.matcher import MatchReport, RegisteredContent, RegistryIndex
from p2pwatch.match.media_types import ContentKind
from p2pwatch.match.perceptual import PerceptualSettings, perceptual_matches
from p2pwatch.match.screened import budgeted, screened_match
from p2pwatch.match.triage import DECISION_QUEUE, Triage, TriageDecision
from p2pwatch.monitor.content_queue import ContentJob, ContentStages
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint, synthetic_image, synthetic_video
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent

# --- running the candidates -------------------------------------------------------------------------------

class StreamSource:
    """Pieces of a torrent's data read from its files (the torrent's byte stream, pad-free v1)."""

    def __init__(self, paths: Sequence[Path], piece_length: int) -> None:
        self.paths = list(paths)
        self.sizes = [p.stat().st_size for p in self.paths]
        self.piece_length = piece_length
        self.pieces: set[int] = set()

    async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, bytes]:
        out = {}
        for index in wanted:
            out[index] = self._read(index * self.piece_length, self.piece_length)
            self.pieces.add(index)
        return out

    def _read(self, offset: int, length: int) -> bytes:
        chunks = []
        for path, size in zip(self.paths, self.sizes, strict=True):
            if offset >= size:
                offset -= size
                continue
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read(length)
            chunks.append(chunk)
            length -= len(chunk)
            offset = 0
            if length <= 0:
                break
        return b"".join(chunks)

    def downloaded(self) -> int:
        total = sum(self.sizes)
        return sum(min(self.piece_length, total - i * self.piece_length) for i in self.pieces)


def torrent_of_length(name: str, length: int, piece_length: int) -> Metainfo:
    """A single-file v1 torrent's metainfo with no data behind it (piece hashes of zeros)."""
    info = {b"name": name.encode(), b"piece length": piece_length, b"length": length,
            b"pieces": b"\0" * 20 * -(-length // piece_length)}
    return parse_torrent(bencoding.encode({b"info": info}))


def torrent_of(c: Candidate, piece_length: int) -> Metainfo:
    single = len(c.files) == 1
    name = c.files[0][0] if single else "pack"
    return parse_torrent(make_v1_torrent(name, c.files, piece_length=piece_length, single_file=single))


async def run_candidates(index: RegistryIndex, candidates: list[Candidate], piece_length: int, jobs: int,
                         keyframe: KeyframeSettings, perceptual: PerceptualSettings) -> None:
    triage = Triage(index)
    lookup = FrameLookup(index)
    limiter = trio.CapacityLimiter(jobs)

    async def one(c: Candidate) -> None:
        async with limiter:
            c.meta = await trio.to_thread.run_sync(torrent_of, c, piece_length)
            decision = triage.decide(c.meta)
            started = time.perf_counter()
            if not decision.queued:
                c.decision, c.reason = "skipped", decision.reason
                return
            source = BudgetedSource(StreamSource([p for _, p in c.files], piece_length), None, piece_length,
                                    sum(f.length for f in c.meta.files))
            report = await screened_match(index, lookup, c.meta, source, decision, perceptual=perceptual,
                                          keyframe=keyframe, timeout=60)
            assert report.triage is not None
            c.decision = report.triage["decision"]
            c.matched = {m.content_id for m in report.matches}
            c.pieces = source.pieces_read
            c.screens = report.triage["screens"]
            c.reason = report.triage["reason"]
            c.seconds = time.perf_counter() - started

    async with trio.open_nursery() as nursery:
        for c in candidates:
            nursery.start_soon(one, c)


async def baseline_pieces(index: RegistryIndex, candidates: list[Candidate], piece_length: int, jobs: int,
                          perceptual: PerceptualSettings) -> list[int]:
    """Pieces today's perceptual stage (no triage, no screen) reads for each of ``candidates``."""
    out: list[int] = []
    limiter = trio.CapacityLimiter(jobs)

    async def one(c: Candidate) -> None:
        async with limiter:
            assert c.meta is not None
            source = StreamSource([p for _, p in c.files], piece_length)
            await perceptual_matches(index, c.meta, source, set(), perceptual)
            out.append(len(source.pieces))

    async with trio.open_nursery() as nursery:
        for c in candidates:
            nursery.start_soon(one, c)
    return out


# --- metainfo-only torrents ----------------------------------------------------------------------------------

# --- the budget under a flood ---------------------------------------------------------------------------------

def flood(costs: list[int], piece_length: int, torrents: int, settings: BudgetSettings) -> dict[str, Any]:
    """Replay ``torrents`` torrents (costs drawn from ``costs``, in pieces) arriving far faster than the
    budget allows, for three simulated days, through the monitor's own content stages
    (p2pwatch/monitor/content_queue.py: its queue, admission, readers and accounting); only the reading is
    replaced, by swarms that answer every piece after 0.2 s, charged to the budget through
    p2pwatch/match/screened.py's ``budgeted``. Every piece asked of the swarms is recorded with its time."""
    asked: list[tuple[float, int]] = []
    started = 0
    triage = replace(TriageSettings(), bytes_per_day=settings.bytes_per_day,
                     torrents_per_hour=settings.torrents_per_hour, concurrent_readers=settings.concurrent_readers,
                     queue_size=settings.queue_size)
    config = replace(MonitorConfig(), triage=triage)
    metrics = Metrics()

    class Instant:
        async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, bytes]:
            pieces = list(wanted)
            asked.extend((trio.current_time(), piece_length) for _ in pieces)
            await trio.sleep(0.2)
            return {i: b"" for i in pieces}

        def downloaded(self) -> int:
            return 0

    async def swarms(index: RegistryIndex, metainfo: Metainfo, peers: list[tuple[str, int]], config: MonitorConfig,
                     *, bind_ip: str | None, allow_local: bool, screening: Screening | None = None,
                     decision: TriageDecision | None = None) -> MatchReport:
        nonlocal started
        started += 1
        assert screening is not None and screening.budget is not None
        source = budgeted(Instant(), metainfo, screening.budget)
        report = MatchReport(metainfo.infohash.hex())
        outcome = "rejected"
        try:
            for piece in range(len(metainfo.piece_hashes)):
                await source.read_pieces_async([piece])
        except BudgetExhausted:
            outcome = "budget"
        report.triage = {"decision": outcome, "reason": "flood", "pieces_read": source.pieces_read,
                         "bytes_charged": source.charged}
        return report

    metainfos = {cost: torrent_of_length(f"flood-{cost}", cost * piece_length, piece_length) for cost in set(costs)}

    async def main() -> None:
        stages = ContentStages(config, metrics, bind_ip=None, allow_local=True, matcher=swarms)
        rng = random.Random(3)

        async def finish(report: MatchReport) -> None:
            return None

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stages.run)
            for i in range(torrents):
                meta = metainfos[costs[i % len(costs)]]
                decision = TriageDecision(meta.infohash.hex(), DECISION_QUEUE, rng.random(), "flood", (0,),
                                          2 * piece_length)
                stages.submit(ContentJob(i.to_bytes(20, "big"), meta, [("127.0.0.1", 6881)], decision, finish))
                if i % 100 == 99:
                    await trio.sleep(1.0)  # 100 torrents a second
            await trio.sleep(3 * 86_400.0)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    times = [t for t, _ in asked]
    amounts = [b for _, b in asked]
    worst, lo, window = 0, 0, 0
    for hi, t in enumerate(times):  # the most bytes in any 24-hour window (times are non-decreasing)
        window += amounts[hi]
        while times[lo] <= t - 86_400.0:
            window -= amounts[lo]
            lo += 1
        worst = max(worst, window)
    refused = metrics.counters["p2pwatch_triage_budget_total"]
    return {"flood_torrents": torrents, "flood_started": started, "flood_refused_mid_read": refused,
            "flood_bytes_asked": sum(amounts), "flood_worst_day_bytes": worst,
            "flood_bytes_per_day": settings.bytes_per_day, "budget_respected": worst <= settings.bytes_per_day}


# --- the triage's profile when the registry changes ----------------------------------------------------------

def profile_updates(items: int, changes: int, seed: int = 17) -> dict[str, Any]:
    """What following one registration or withdrawal costs the triage's profile, among ``items`` synthetic
    registered videos (durations 30 s to 20 min) and images: a rebuild over the registry (``Triage(index)``, what
    the monitor did per change) against applying the change (``Triage.apply``, absent before). Medians of
    ``changes`` changes each, alternating a new item registered and withdrawn, in the same process."""
    rng = random.Random(seed)
    index = RegistryIndex([])

    def item(n: int) -> RegisteredContent:
        video = n % 5 != 4
        media = synthetic_video(rng, 4, step=rng.uniform(7.5, 300.0)) if video else synthetic_image(rng, pdq=False)
        size = rng.randrange(20_000, 300_000)  # small: the synthetic leaf hashes and tables cost memory
        return RegisteredContent(f"profile-{n}", "synthetic", synthetic_fingerprint(rng, size, media))

    for n in range(items):
        index.add(item(n))
    triage = Triage(index)
    rebuild: list[float] = []
    apply: list[float] = []
    incremental = hasattr(triage, "apply")
    for n in range(changes):
        fresh = item(items + n)
        for adding in (True, False):
            if adding:
                index.add(fresh)
            else:
                index.remove(fresh.content_id)
            started = time.perf_counter()
            Triage(index)
            rebuild.append(time.perf_counter() - started)
            if incremental:
                started = time.perf_counter()
                triage.apply(**({"added": [fresh]} if adding else {"removed": [fresh]}))
                apply.append(time.perf_counter() - started)
    out: dict[str, Any] = {"profile_items": len(index), "profile_changes": len(rebuild),
                           "profile_rebuild_ms_median": round(1000 * statistics.median(rebuild), 3),
                           "profile_rebuild_ms_p95": round(1000 * percentile_f(rebuild, 95), 3)}
    if incremental:
        out["profile_apply_us_median"] = round(1e6 * statistics.median(apply), 2)
        out["profile_apply_us_p95"] = round(1e6 * percentile_f(apply, 95), 2)
        assert triage.profile.snapshot() == Triage(index).profile.snapshot()
    return out


# --- reporting ----------------------------------------------------------------------------------------------

def percentile(values: Sequence[int], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def percentile_f(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def threshold_sweep(index: RegistryIndex, candidates: list[Candidate], registered: dict[str, str],
                    thresholds: Sequence[int]) -> list[str]:
    """From the key frames the screen hashed: copies whose key frame is farther than t from every frame of
    their own source (false rejections), decoys with a key frame within t of any registered frame."""
    lookup = FrameLookup(index)
    copies, decoys = [], []
    for c in candidates:
        if c.kind != "video" or not c.screens or c.label in ("exact", "renamed"):
            continue
        hashes = [h for h in c.keyframes]
        if not hashes:
            continue
        near = lookup.near(ContentKind.VIDEO, hashes, max(thresholds))
        if c.source is None:
            decoys.append(min(near.values(), default=65))
        else:
            copies.append(near.get(registered[c.source], 65))
    rows = ["| threshold | copies rejected (false) | decoys surviving |", "| --- | --- | --- |"]
    for t in thresholds:
        fr = sum(1 for d in copies if d > t)
        ds = sum(1 for d in decoys if d <= t)
        rows.append(f"| {t} | {fr} of {len(copies)} ({100 * fr / max(1, len(copies)):.1f} %) | "
                    f"{ds} of {len(decoys)} ({100 * ds / max(1, len(decoys)):.1f} %) |")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the JSON object last (always printed)")
    parser.add_argument("--videos", type=int)
    parser.add_argument("--images", type=int)
    parser.add_argument("--decoy-videos", type=int)
    parser.add_argument("--decoy-images", type=int)
    parser.add_argument("--metadata-decoys", type=int)
    parser.add_argument("--index-hashes", type=int)
    parser.add_argument("--piece-kib", type=int, default=64)
    parser.add_argument("--threshold", type=int, default=KeyframeSettings().threshold)
    parser.add_argument("--baseline", type=int, default=20, help="decoys also run through today's stage")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--profile-only", action="store_true",
                        help="only the cost of following a registry change in the triage's profile")
    parser.add_argument("--profile-items", type=int, default=100_000)
    parser.add_argument("--profile-changes", type=int, default=50)
    args = parser.parse_args(argv)
    if args.profile_only:
        profile = profile_updates(args.profile_items, args.profile_changes)
        print(f"triage profile, {profile['profile_items']:,} registered items, {profile['profile_changes']} "
              f"changes: rebuild median {profile['profile_rebuild_ms_median']} ms (p95 "
              f"{profile['profile_rebuild_ms_p95']}); apply median {profile.get('profile_apply_us_median', '-')} µs "
              f"(p95 {profile.get('profile_apply_us_p95', '-')})")
        print(json.dumps(profile))
        return
    quick = args.quick
    videos = args.videos or (20 if quick else 40)
    images = args.images or (16 if quick else 30)
    decoy_videos = args.decoy_videos or (250 if quick else 600)
    decoy_images = args.decoy_images or (100 if quick else 200)
    meta_decoys = args.metadata_decoys or (4000 if quick else 20_000)
    index_hashes = args.index_hashes or (1_000_000 if quick else 10_000_000)
    piece_length = args.piece_kib * 1024
    if not media.ffmpeg_available():
        parser.error("ffmpeg is needed (pip install imageio-ffmpeg)")
    began = time.perf_counter()
    figures: dict[str, Any] = {"quick": quick, "piece_length": piece_length, "keyframe_threshold": args.threshold}
    lap: dict[str, float] = {}

    measured = measure_index(index_hashes, radius=MATCHER_RADIUS, lookups=20_000)
    screen_index = measure_index(index_hashes, radius=args.threshold, lookups=5_000, exact_sample=100)
    lap["index measured"] = time.perf_counter() - began
    with tempfile.TemporaryDirectory(prefix="p2pwatch-bench-triage-") as temp:
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        sources, candidates = build_corpus(workdir, videos, images, decoy_videos, decoy_images, args.jobs)
        lap["corpus generated"] = time.perf_counter() - began
        fps = fingerprints(sources, args.jobs)
        registered = {key: fp.fingerprint_id for key, fp in fps.items()}
        index = RegistryIndex([RegisteredContent(fp.fingerprint_id, key, fp) for key, fp in fps.items()])
        real_hashes = len(index.frames) + len(index.image_phashes)
        padded = pad_registry(index, index_hashes)
        gc.collect()
        gc.freeze()  # the registry's million frame objects: out of every collection what follows triggers
        lap["registered and padded"] = time.perf_counter() - began
        keyframe = KeyframeSettings(threshold=args.threshold)
        perceptual = PerceptualSettings()
        trio.run(run_candidates, index, candidates, piece_length, args.jobs, keyframe, perceptual)
        lap["candidates matched"] = time.perf_counter() - began
        for c in candidates:  # the key frame hashes the screen took, for the sweep
            c.keyframes = [int(s["hash"], 16) for s in c.screens if s.get("hash")]
        decoys_reached = [c for c in candidates if c.source is None and c.decision != "skipped"]
        sample = decoys_reached[: args.baseline]
        base = trio.run(baseline_pieces, index, sample, piece_length, args.jobs, perceptual)
        lap["baseline"] = time.perf_counter() - began
        sweep = threshold_sweep(index, candidates, registered, [6, 8, 10, 12, 14, 16])
        lap["sweep"] = time.perf_counter() - began
    metas = metadata_decoys(meta_decoys)
    triage = Triage(index)
    started = time.perf_counter()
    meta_decisions = Counter(triage.decide(m).action for m in metas)
    triage_rate = len(metas) / (time.perf_counter() - started)
    lap["metainfo-only triage"] = time.perf_counter() - began
    costs = [c.pieces for c in decoys_reached] or [2]
    budget = BudgetSettings(bytes_per_day=1 << 30, torrents_per_hour=600, concurrent_readers=4, queue_size=1000)
    flooded = flood(costs, 1 << 20, 30_000 if quick else 100_000, budget)
    lap["flood replayed"] = time.perf_counter() - began

    # --- tallies
    tp = fp_ = fn = 0
    rows: dict[tuple[str, str], list[Candidate]] = {}
    for c in candidates:
        rows.setdefault((c.kind, c.label), []).append(c)
        own = registered.get(c.source) if c.source else None
        tp += own in c.matched if own else 0
        fn += (own not in c.matched) if own else 0
        fp_ += len(c.matched - ({own} if own else set()))
    misses = [c for c in candidates if c.source and registered[c.source] not in c.matched]
    recall = tp / max(1, tp + fn)
    precision = tp / max(1, tp + fp_)
    nonmatch = [c.pieces for c in decoys_reached]
    print(f"\ncorpus: {videos} registered videos and {images} images with planted copies, {decoy_videos} decoy videos, "
          f"{decoy_images} decoy images (lavfi), {args.piece_kib} KiB pieces; registry: {len(fps)} real items "
          f"({real_hashes:,} hashes) + {padded:,} synthetic hashes = {len(index.frames) + len(index.image_phashes):,}")
    print("\n| kind | candidates | torrents | skipped | rejected at screen | confirmed | TP | FN | FP | pieces median |"
          " pieces p95 | pieces max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (kind, label), cs in sorted(rows.items()):
        pieces = [c.pieces for c in cs if c.decision != "skipped"]
        at_screen = sum(1 for c in cs if c.screens and not any(s["survived"] for s in c.screens))
        own = [registered[c.source] if c.source else None for c in cs]
        t = sum(1 for c, o in zip(cs, own, strict=True) if o and o in c.matched)
        n = sum(1 for c, o in zip(cs, own, strict=True) if o and o not in c.matched)
        f = sum(len(c.matched - ({o} if o else set())) for c, o in zip(cs, own, strict=True))
        print(f"| {kind} | {label} | {len(cs)} | {sum(c.decision == 'skipped' for c in cs)} | {at_screen} | "
              f"{sum(c.decision == 'confirmed' for c in cs)} | {t} | {n} | {f} | "
              f"{statistics.median(pieces) if pieces else 0:g} | {percentile(pieces, 95):g} | "
              f"{max(pieces, default=0)} |")
    print("\nmissed copies:" if misses else "\nno copy missed")
    for c in misses:
        size = sum(f.length for f in c.meta.files) if c.meta else 0
        why = "; ".join(s["reason"] for s in c.screens) or c.reason
        print(f"- {c.kind} {c.label} of {c.source} ({size:,} bytes): {c.decision}: {why}")
    print(f"\nscreen threshold sweep (key frames the screen hashed; the screen ran at {args.threshold}):\n")
    print("\n".join(sweep))
    print(f"\ntoday's stage (no triage, no screen) on {len(base)} of those decoys: pieces median "
          f"{statistics.median(base) if base else 0:g}, p95 {percentile(base, 95):g}, max {max(base, default=0)}")
    print(f"metainfo-only torrents ({len(metas)}, 8 shapes): {dict(meta_decisions)}; {triage_rate:,.0f} triaged/s")
    for m in (measured, screen_index):
        print(f"index ({m['index_hashes']:,} synthetic frame-like hashes, radius {m['index_radius']}): "
              f"{m['index_lookups_per_s']:,} lookups/s single on one core, {m['index_batch_lookups_per_s']:,} "
              f"batched, exact {m['index_exact']} on {m['index_exact_sample']}, {m['index_bytes_per_hash']} "
              f"bytes/hash, built in {m['index_build_s']} s")
    print(f"flood: {flooded['flood_torrents']:,} torrents at 100/s against {budget.bytes_per_day:,} bytes/day: "
          f"{flooded['flood_started']:,} started in 3 simulated days, worst 24 h asked "
          f"{flooded['flood_worst_day_bytes']:,} bytes; respected {flooded['budget_respected']}")
    print("timings (s since start): " + ", ".join(f"{k} {v:.0f}" for k, v in lap.items()))
    false_rejections = sum(1 for c in candidates if c.source and c.screens
                           and not any(s["survived"] for s in c.screens))
    screened_copies = sum(1 for c in candidates if c.source and c.screens)
    figures.update({
        "nonmatch_pieces_median": statistics.median(nonmatch) if nonmatch else 0,
        "nonmatch_pieces_p95": percentile(nonmatch, 95), "nonmatch_pieces_max": max(nonmatch, default=0),
        "nonmatch_torrents": len(nonmatch),
        "nonmatch_rejected_at_screen": sum(1 for c in decoys_reached if c.screens
                                           and not any(s["survived"] for s in c.screens)),
        "recall": round(recall, 4), "precision": round(precision, 4), "tp": tp, "fn": fn, "fp": fp_,
        "false_rejections_at_screen": false_rejections, "copies_screened": screened_copies,
        "baseline_pieces_median": statistics.median(base) if base else 0,
        "index_hashes": len(index.frames) + len(index.image_phashes),
        "index_lookups_per_s": measured["index_lookups_per_s"], "index_radius": measured["index_radius"],
        "index_exact": measured["index_exact"] and screen_index["index_exact"],
        "screen_radius_lookups_per_s": screen_index["index_lookups_per_s"],
        "index_measured_hashes": measured["index_hashes"],
        "metadata_skipped": meta_decisions.get("skip", 0), "metadata_queued": meta_decisions.get("queue", 0),
        "budget_respected": flooded["budget_respected"], "flood_worst_day_bytes": flooded["flood_worst_day_bytes"],
        "seconds": round(time.perf_counter() - began, 1),
    })
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
