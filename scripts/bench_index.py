"""Benchmark the registered-hash index and the registry at scale (issue 13, items 3 and 4).

Index (p2pwatch/match/hash_index_measure.py: ``measure_index``, also what scripts/bench_triage.py reports):
synthetic frame-like 64-bit hashes in items of 100, looked up one at a time (one thread) at the perceptual
stage's frame threshold (8 bits); half the queries near a registered frame, half unrelated. ``index_exact``:
every lookup of a sample returns exactly what a numpy brute-force scan over all hashes returns.
1,000,000 hashes with ``--quick``; 1,000,000 and 10,000,000 otherwise. Goal: >= 10,000 exact lookups/s.

Registry (SQLite, the store's settings): 100,000 registered items (synthetic fingerprints of random hashes,
files of 20-300 KB; 20 % videos with 100 frame hashes, 10 % images) bulk-inserted, then through the code
the CLI and the monitor use:

* ``register``: one ``add_content`` + commit per item, with 100,000 items stored;
* ``withdraw``: one ``withdraw_case`` + commit per case (cases of two items);
* ``monitor first load``: :class:`RegistrySync` reading and indexing all 100,000 (once, at start);
* ``monitor refresh``: the same after one registration (only the new row is read), and after a withdrawal;
* ``full reload``: what the monitor did before on every change (``load_index``: every fingerprint parsed);
* ``exact stages``: ``exact_metadata_matches`` plus the content-stage test of ``run_matcher``, per torrent of
  10 files whose sizes are registered sizes (one of them a real registered file: it must match).

Usage: python scripts/bench_index.py [--quick] [--json] [--items 100000]
Prints a table and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio
from sqlalchemy import insert

from p2pwatch.investigate.registry import add_content, create_case, get_case, load_index, withdraw_case
from p2pwatch.investigate.registry_sync import RegistrySync
from p2pwatch.match.fingerprint import Fingerprint, fingerprint_file
from p2pwatch.match.hash_index_measure import measure_index
from p2pwatch.match.matcher import exact_metadata_matches
from p2pwatch.storage.db import make_engine, session_factory, upgrade_database
from p2pwatch.storage.models import Case, Content
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint, synthetic_image, synthetic_video
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import parse_torrent

GOAL_LOOKUPS = 10_000
BULK_CASES = 1000


def _fingerprint(rng: random.Random, n: int) -> Fingerprint:
    size = rng.randrange(20_000, 300_000)
    kind = n % 10
    media = synthetic_video(rng, 100) if kind < 2 else synthetic_image(rng) if kind == 2 else None
    return synthetic_fingerprint(rng, size, media)


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_registry(items: int, work: Path) -> dict[str, Any]:
    rng = random.Random(13)
    engine = make_engine(f"sqlite:///{work / 'p2pwatch.db'}")
    upgrade_database(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    real_file = work / "registered.bin"
    real_file.write_bytes(rng.randbytes(200_000))
    real = fingerprint_file(real_file, media=False)
    start = time.perf_counter()
    with sessions() as session:
        session.execute(insert(Case), [{"name": f"bulk-{i:04d}", "created_at": now} for i in range(BULK_CASES)])
        session.commit()
        case_ids = [c.id for c in session.query(Case).order_by(Case.id)]
        sizes: list[int] = []
        batch: list[dict[str, Any]] = []
        for n in range(items):
            fp = real if n == items // 2 else _fingerprint(rng, n)
            sizes.append(fp.size)
            batch.append({"case_id": case_ids[n % BULK_CASES], "fingerprint_id": fp.fingerprint_id,
                          "kind": fp.kind.value, "size": fp.size, "label": None, "fingerprint": fp.to_json(),
                          "created_at": now})
            if len(batch) == 2000:
                session.execute(insert(Content), batch)
                batch = []
        if batch:
            session.execute(insert(Content), batch)
        session.commit()
    setup = time.perf_counter() - start

    sync = RegistrySync(sessions)  # slim items: the tables are read for the sizes a torrent selects
    rss_before = _rss()
    with sessions() as session:
        read_s, changes = _timed(sync.read, session)
    apply_s, _ = _timed(lambda: (sync.apply(changes), sync.index.prepare()))
    first_load = read_s + apply_s
    rss_index = _rss() - rss_before
    with sessions() as session:
        full_reload, _ = _timed(load_index, session)

    register_ms = []
    with sessions() as session:
        extra = create_case(session, "bench-register", actor="bench")
        session.commit()
        for n in range(200):
            fp = _fingerprint(rng, n)
            t, _ = _timed(lambda fp=fp: (add_content(session, extra, fp, actor="bench"), session.commit()))
            register_ms.append(t * 1000)
    refresh_ms = []
    for n in range(20):
        with sessions() as session:
            case = get_case(session, "bench-register")
            add_content(session, case, _fingerprint(rng, n), actor="bench")
            session.commit()
        start = time.perf_counter()
        with sessions() as session:
            changes = sync.read(session)
        sync.apply(changes)
        refresh_ms.append((time.perf_counter() - start) * 1000)
        assert len(changes.added) == 1 + (200 if n == 0 else 0)

    withdraw_ms = []
    with sessions() as session:
        for n in range(50):
            case = create_case(session, f"bench-withdraw-{n}", actor="bench")
            for _ in range(2):
                add_content(session, case, _fingerprint(rng, n), actor="bench")
        session.commit()
    with sessions() as session:
        sync.apply(sync.read(session))
    for n in range(50):
        with sessions() as session:
            t, _ = _timed(lambda n=n: (withdraw_case(session, f"bench-withdraw-{n}", actor="bench"),
                                       session.commit()))
        withdraw_ms.append(t * 1000)
    start = time.perf_counter()
    with sessions() as session:
        changes = sync.read(session)
    sync.apply(changes)
    refresh_withdraw_ms = (time.perf_counter() - start) * 1000
    assert len(changes.removed) == 100

    files = []
    for k, size in enumerate(rng.sample(sizes, 9)):
        path = work / f"decoy-{k}.bin"
        path.write_bytes(rng.randbytes(size))
        files.append((f"d/decoy-{k}.bin", path))
    meta = parse_torrent(make_v1_torrent("bench", [("d/registered.bin", real_file), *files], piece_length=16384))
    index = sync.index
    rounds = 2000

    async def exact_rounds() -> list[Any]:
        found: list[Any] = []
        for _ in range(rounds):
            found = await exact_metadata_matches(index, meta)
            any(index.by_size.get(f.length) for f in meta.files)
        return found

    start = time.perf_counter()
    found = trio.run(exact_rounds)
    exact_us = (time.perf_counter() - start) / rounds * 1e6
    with sessions() as session:
        stored = session.query(Content).count()
        case_count = session.query(Case).count()
    engine.dispose()
    return {
        "registry_items": stored, "registry_cases": case_count, "registry_setup_s": round(setup, 1),
        "register_ms_median": round(statistics.median(register_ms), 2),
        "register_ms_p95": round(sorted(register_ms)[int(0.95 * len(register_ms))], 2),
        "withdraw_case_ms_median": round(statistics.median(withdraw_ms), 2),
        "monitor_first_load_s": round(first_load, 2), "monitor_index_rss_bytes": rss_index,
        "monitor_refresh_after_register_ms": round(statistics.median(refresh_ms[1:]), 2),
        "monitor_refresh_after_withdraw_ms": round(refresh_withdraw_ms, 2),
        "full_reload_s": round(full_reload, 2), "registry_frame_hashes": len(index.frames),
        "exact_stage_us_per_torrent": round(exact_us, 1), "exact_match_found": [m.content_id for m in found] != [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the index at 1,000,000 hashes only")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    parser.add_argument("--registry-only", action="store_true", help="skip the hash index part")
    parser.add_argument("--items", type=int, default=100_000, help="registered items in the store")
    args = parser.parse_args()
    sizes = [] if args.registry_only else [1_000_000] if args.quick else [1_000_000, 10_000_000]
    results = []
    for n in sizes:
        results.append(measure_index(n))
        r = results[-1]
        print(f"index {n:>11,} hashes: {r['index_lookups_per_s']:>8,} lookups/s single per CPU second "
              f"({r['index_lookups_per_s_wall']:,} per wall second), "
              f"{r['index_batch_lookups_per_s']:>8,}/s batched, exact={r['index_exact']} "
              f"({r['index_exact_sample']} checked; brute force {r['brute_force_ms_per_lookup']} ms each), "
              f"build {r['index_build_s']} s, {r['index_bytes'] / 1e6:.0f} MB ({r['index_bytes_per_hash']} B/hash), "
              f"add item {r['index_add_item_ms']} ms, remove item {r['index_remove_item_ms']} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="p2pwatch-bench-index-") as work:
        reg = bench_registry(args.items, Path(work))
    print(f"registry {reg['registry_items']:,} items in SQLite (bulk setup {reg['registry_setup_s']} s):")
    rows = [
        ("register one item (add_content + commit)", f"{reg['register_ms_median']} ms median, "
                                                     f"{reg['register_ms_p95']} ms p95"),
        ("withdraw one case of 2 items", f"{reg['withdraw_case_ms_median']} ms median"),
        ("monitor first load (read + index all)", f"{reg['monitor_first_load_s']} s, "
                                                  f"{reg['monitor_index_rss_bytes'] / 1e6:.0f} MB resident"),
        ("monitor refresh after a registration", f"{reg['monitor_refresh_after_register_ms']} ms"),
        ("monitor refresh after a withdrawal", f"{reg['monitor_refresh_after_withdraw_ms']} ms"),
        ("full reload (before: on every change)", f"{reg['full_reload_s']} s"),
        ("exact stages per 10-file torrent", f"{reg['exact_stage_us_per_torrent']} us "
                                             f"(registered copy matched: {reg['exact_match_found']})"),
    ]
    for name, value in rows:
        print(f"  {name:<42} {value}")
    big = results[-1] if results else {}
    out: dict[str, Any] = {
        "index_hashes": big.get("index_hashes"), "index_lookups_per_s": big.get("index_lookups_per_s"),
        "index_exact": all(r["index_exact"] for r in results),
        "index_goal_met": all(r["index_lookups_per_s"] >= GOAL_LOOKUPS for r in results),
        "index": results, **reg, "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
