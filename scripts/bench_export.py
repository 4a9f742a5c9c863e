#!/usr/bin/env python3
"""Export and verify a case with 1,000,000 observations (issue 5), through the real store and exporter.

Fills a fresh SQLite store: one case, one matched torrent (a real .torrent of random bytes), 1,000,000
observations of 20,000 peers (levels 0–3, level 1+ with transcripts; 10 % of the chain belongs to another
case and is exported redacted), then in separate processes:
* ``p2pwatch export`` (wall time and peak RSS of the process; goal <= 30 s, <= 500 MB);
* ``python -m evidence verify`` (wall time and peak RSS; goal <= 30 s).
Baselines in the same run: ``sha256sum`` of the bundle (reading it once), and, with ``--baseline-rev REV``
(default: 0ea856d, the exporter before the row-tuple fast path), the export of the same store by that git
revision's p2pwatch and evidence packages (extracted with ``git archive`` into the temporary directory; the
working tree is not touched). The two bundles are compared member by member (uncompressed contents).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evidence.zipcanon import iter_content, scan
from p2pwatch.bundle import keys as keyfile
from p2pwatch.investigate.registry import add_content, create_case, record_match, upsert_torrent
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.matcher import Match
from p2pwatch.storage.db import default_url, make_engine, upgrade_database, writer_sessionmaker
from p2pwatch.storage.ledger import ObservationRecord, append_observations
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import parse_torrent

REPO = Path(__file__).resolve().parent.parent


def fill(home: Path, rows: int) -> None:
    engine = make_engine(default_url(home))
    upgrade_database(engine)
    keyfile.save_key(keyfile.default_key_path(home), keyfile.generate_key())
    data = home / "content.bin"
    data.write_bytes(os.urandom(40 * 32768 + 77))
    raw = make_v1_torrent("content.bin", [("content.bin", data)], piece_length=32768, single_file=True)
    other_raw = make_v1_torrent("other.bin", [("content.bin", data)], piece_length=65536, single_file=True)
    meta, other = parse_torrent(raw), parse_torrent(other_raw)
    fp = fingerprint_file(data, media=False)
    sessions = writer_sessionmaker(engine)
    with sessions() as s, s.begin():
        case = create_case(s, "big")
        content, _ = add_content(s, case, fp)
        torrent = upsert_torrent(s, meta.infohash, metainfo=meta)
        other_torrent = upsert_torrent(s, other.infohash, metainfo=other)
        proof = {"kind": "v1-piece-table", "piece_length": 32768, "first_piece": 0,
                 "pieces_compared": len(meta.piece_hashes), "piece_hashes": [h.hex() for h in meta.piece_hashes],
                 "file_length": fp.size}
        record_match(s, Match("big", str(content.id), meta.infohash.hex(), 0, "content.bin", "exact-metadata",
                              proof, 0), torrent)
        tid, oid = torrent.id, other_torrent.id
    rng = random.Random(1)
    peers = [(f"10.{i // 65536}.{(i // 256) % 256}.{i % 256 or 1}", 6881 + i % 1000) for i in range(20_000)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch: list[ObservationRecord] = []
    for n in range(rows):
        ip, port = peers[n % len(peers)]
        level = (0, 0, 0, 1, 2, 3)[rng.randrange(6)] if n % 7 == 0 else 0
        transcript = None
        if level:
            piece = n % len(meta.piece_hashes)
            transcript = {"ip": ip, "port": port, "infohash": meta.infohash.hex(), "level": level,
                          "client": "qBittorrent/4.6.2", "have_fraction": 1.0,
                          "piece_verified": piece if level == 3 else None,
                          "piece_hash": meta.piece_hashes[piece].hex() if level == 3 else None,
                          "piece_hash_algorithm": "sha1" if level == 3 else None,
                          "transcript": [{"at": "2026-01-01T00:00:00+00:00", "direction": "out",
                                          "message": "handshake", "detail": {"n": n}}]}
        batch.append(ObservationRecord(oid if n % 10 == 9 else tid, ip, port, level,
                                       "probe" if level else "dht", start + timedelta(seconds=n),
                                       reporter=None if level else "192.0.2.1:6881",
                                       client="qBittorrent/4.6.2" if level else None,
                                       have_fraction=1.0 if level else None, transcript=transcript))
        if len(batch) == 20_000:
            with sessions() as s, s.begin():
                append_observations(s, batch)
            batch = []
    if batch:
        with sessions() as s, s.begin():
            append_observations(s, batch)
    engine.dispose()


WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def timed(args: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float, int]:
    """Wall time, peak RSS (MB) and exit code of one command, measured by a fresh wrapper process."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], env=env, capture_output=True, text=True, cwd=cwd)
    elapsed = time.perf_counter() - t
    peak_kb, rc = proc.stdout.split()
    return elapsed, int(peak_kb) / 1024, int(rc)


def same_contents(a: Path, b: Path) -> bool:
    """Whether two bundles hold the same members, with the same uncompressed bytes in observations.jsonl,
    torrents/, transcripts/ and pieces/ (the others record the time of export)."""
    def digests(path: Path) -> list[tuple[str, str]]:
        out = []
        with open(path, "rb") as f:
            for entry in scan(f, path.stat().st_size):
                h = hashlib.sha256()
                for chunk in iter_content(f, entry):
                    h.update(chunk)
                timed_member = "/" not in entry.name and entry.name != "observations.jsonl"
                out.append((entry.name, "" if timed_member else h.hexdigest()))
        return out

    return digests(a) == digests(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rev", default="0ea856d",
                        help="git revision whose exporter to time on the same store ('' to skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pwatch-bench-export-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        t = time.perf_counter()
        fill(home, args.rows)
        fill_s = time.perf_counter() - t
        env = dict(os.environ, P2PWATCH_HOME=str(home))
        bundle = Path(tmp) / "big.zip"
        old = None
        if args.baseline_rev:
            root = Path(tmp) / "baseline"
            root.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline_rev, "p2pwatch", "evidence"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
            old_bundle = Path(tmp) / "baseline.zip"
            old = timed([sys.executable, "-m", "p2pwatch", "export", "--case", "big", "-o", str(old_bundle)],
                        dict(env, PYTHONPATH=str(root)), cwd=root)
        export_s, export_mb, export_rc = timed([sys.executable, "-m", "p2pwatch", "export", "--case", "big", "-o",
                                                str(bundle)], env)
        same = same_contents(old_bundle, bundle) if old is not None and old[2] == 0 else None
        verify_s, verify_mb, verify_rc = timed([sys.executable, "-m", "evidence", "verify", str(bundle)], env)
        t = time.perf_counter()
        hashlib.sha256(bundle.read_bytes()).hexdigest()
        sha_s = time.perf_counter() - t
        size = bundle.stat().st_size
    print("| measure | value | goal |")
    print("|---|---|---|")
    print(f"| observations in the store (fill time) | {args.rows:,} ({fill_s:.1f} s) | |")
    print(f"| export: wall / peak RSS / exit | {export_s:.1f} s / {export_mb:.0f} MB / {export_rc} "
          "| <= 30 s, <= 500 MB |")
    if old is not None:
        print(f"| baseline export ({args.baseline_rev}): wall / peak RSS / exit | {old[0]:.1f} s / {old[1]:.0f} MB / "
              f"{old[2]} | |")
        print(f"| export speed-up over the baseline | {old[0] / export_s:.2f}x | |")
        print(f"| observations.jsonl, torrents/, transcripts/, pieces/ identical to the baseline's | {same} | |")
    print(f"| bundle size | {size / 1e6:.0f} MB | |")
    print(f"| verify: wall / peak RSS / exit | {verify_s:.1f} s / {verify_mb:.0f} MB / {verify_rc} | <= 30 s |")
    print(f"| baseline: SHA-256 of the bundle in this process | {sha_s:.2f} s | |")


if __name__ == "__main__":
    main()
