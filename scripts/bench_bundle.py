"""Benchmark evidence bundles: write and verify a bundle of N synthetic observations.

Goals (issue 5): a bundle of 1,000,000 observations written in <= 30 s with <= 500 MB peak memory, and
verified in <= 30 s. Each phase runs in its own process, so the peak resident set (ru_maxrss) is that
phase's alone. The observations are generated on the fly (as the store would stream them), hash-chained
with p2pwatch.storage.chain, 10 % of the chain belonging to other cases (exported as redacted rows);
generating them is timed separately and included in the write time.

Usage: python scripts/bench_bundle.py [--rows 1000000] [--runs 1] [--small 100000 --small-runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

PEERS = 20_000
TORRENTS = 5
PIECE_LENGTH = 262_144
PIECES = 16
CREATED = "2025-01-02T03:04:05.000000Z"


def _bencode(value: Any) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(_bencode(v) for v in value) + b"e"
    return b"d" + b"".join(_bencode(k) + _bencode(v) for k, v in sorted(value.items())) + b"e"


def _torrents() -> list[tuple[bytes, str, list[bytes]]]:
    out = []
    for t in range(TORRENTS):
        pieces = [hashlib.sha1(b"piece %d %d" % (t, i)).digest() for i in range(PIECES)]
        info = {b"name": b"bench-%d.bin" % t, b"piece length": PIECE_LENGTH, b"length": PIECE_LENGTH * PIECES,
                b"pieces": b"".join(pieces)}
        raw = _bencode({b"info": info, b"creation date": 0})
        out.append((raw, hashlib.sha1(_bencode(info)).hexdigest(), pieces))
    return out


def _transcript(ip: str, port: int, infohash: str, level: int, pieces: list[bytes], p: int) -> dict[str, Any]:
    index = p % PIECES
    return {"ip": ip, "port": port, "infohash": infohash, "level": level, "client": "qBittorrent/4.6.2",
            "piece_verified": index if level >= 3 else None,
            "piece_hash": pieces[index].hex() if level >= 3 else None,
            "piece_hash_algorithm": "sha1" if level >= 3 else None,
            "transcript": [{"at": CREATED, "direction": "out", "message": "handshake", "detail": {}}]}


def generate(rows: int, transcripts: dict[str, str], anchor: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Chain rows as the store exports them; fills ``transcripts`` (sha256 -> body) on the way, and ``anchor``
    with the chain head (the last row) at the end."""
    from evidence import hashchain as fast  # the same hashes as p2pwatch.storage.chain (tested), computed faster
    from p2pwatch.storage import chain as sc

    rng = random.Random(5)
    torrents = _torrents()
    prev, seq, made = sc.GENESIS_HASH, 0, 0
    base = 1_735_689_600
    while made < rows:
        seq += 1
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + seq)) + ".000000Z"
        if seq % 10 == 0:
            fields = sc.observation_fields(seq=seq, observed_at=when, torrent="ff" * 20, addr="ee" * 32, level=0,
                                           source="dht", client=None, peer_id=None, have_fraction=None,
                                           transcript=None)
            body = fast.body_hash(fields)
            prev = fast.link_hash(prev, body)
            yield {"seq": seq, "redacted": True, "body_hash": body.hex()}
            continue
        made += 1
        p = rng.randrange(PEERS)
        ip, port = f"10.{p // 65536}.{(p // 256) % 256}.{p % 256}", 6881 + p % 1000
        _, infohash, pieces = torrents[p % TORRENTS]
        roll = rng.random()
        level = 0 if roll < 0.90 else 1 if roll < 0.95 else 2 if roll < 0.98 else 3
        tsha = None
        if level:
            body_text = fast.canonical_bytes(_transcript(ip, port, infohash, level, pieces, p)).decode()
            tsha = hashlib.sha256(body_text.encode()).hexdigest()
            transcripts[tsha] = body_text
        source = "probe" if level else "dht"
        reporter = None if level else "192.0.2.1:6881"
        salt = f"{rng.getrandbits(128):032x}"
        fields = sc.observation_fields(seq=seq, observed_at=when, torrent=infohash,
                                       addr=fast.address_digest(salt, ip, port, reporter), level=level, source=source,
                                       client="qBittorrent/4.6.2" if level else None, peer_id=None,
                                       have_fraction=0.5 if level >= 2 else None, transcript=tsha)
        digest = fast.row_hash(fields, prev)
        yield {**fields, "prev_hash": prev, "row_hash": digest, "ip": ip, "port": port, "reporter": reporter,
               "addr_salt": salt}
        prev = digest
    anchor.update(head_seq=seq, head_hash=prev)


def phase_generate(rows: int) -> dict[str, Any]:
    transcripts: dict[str, str] = {}
    start = time.perf_counter()
    for _ in generate(rows, transcripts, {}):
        pass
    return {"seconds": time.perf_counter() - start}


def phase_write(rows: int, out: Path) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from p2pwatch.bundle import PieceRecord, TorrentRecord, write_bundle

    torrents = _torrents()
    transcripts: dict[str, str] = {}
    anchor: dict[str, Any] = {}
    rows_iter = generate(rows, transcripts, anchor)
    start = time.perf_counter()
    summary = write_bundle(
        out, case={"name": "bench"}, contents=[{"id": "c1", "kind": "video", "size": PIECE_LENGTH * PIECES}],
        torrents=[TorrentRecord(raw, ih, f"bench-{i}") for i, (raw, ih, _) in enumerate(torrents)],
        matches=[{"id": "m1", "content_id": "c1", "infohash": torrents[0][1], "file_index": 0,
                  "method": "exact-metadata", "bytes_fetched": 0,
                  "proof": {"kind": "v1-piece-table", "piece_length": PIECE_LENGTH, "first_piece": 0,
                            "piece_hashes": [h.hex() for h in torrents[0][2]]}}],
        peers=[], observations=rows_iter, chain_anchor=anchor,
        transcripts=_lazy(transcripts), pieces=[PieceRecord(ih, i, hash=pieces[i].hex())
                                                for _, ih, pieces in torrents for i in range(PIECES)],
        samples=[{"at": CREATED, "infohash": ih, "source": "dht", "dht_peers": 10} for _, ih, _ in torrents],
        signing_key=Ed25519PrivateKey.from_private_bytes(bytes(32)), config_hash="00" * 32,
        tool_version="bench", created_at=CREATED)
    return {"seconds": time.perf_counter() - start, "size": summary.size, "files": summary.files,
            "rows": summary.observations, "redacted": summary.redacted, "peers": summary.peers}


def _lazy(transcripts: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Transcripts are read after the observations (the dict is full by then), as the store would page them."""
    yield from sorted(transcripts.items())


def phase_verify(path: Path) -> dict[str, Any]:
    from evidence.verify import Options, verify_bundle

    start = time.perf_counter()
    result = verify_bundle(path, Options())
    return {"seconds": time.perf_counter() - start, "exit_code": result.exit_code,
            "failed": [c.summary for c in result.failed]}


def _child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"benchmark phase {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(rows: int, runs: int, workdir: Path) -> dict[str, Any]:
    out = workdir / f"bench-{rows}.zip"
    gen = [_child(["--phase", "generate", "--rows", str(rows)]) for _ in range(runs)]
    write = [_child(["--phase", "write", "--rows", str(rows), "--out", str(out)]) for _ in range(runs)]
    verify = [_child(["--phase", "verify", "--out", str(out)]) for _ in range(runs)]
    if any(v["exit_code"] != 0 for v in verify):
        raise SystemExit(f"the benchmark bundle did not verify: {verify[0]['failed']}")
    return {
        "rows": rows, "runs": runs, "size_mb": write[0]["size"] / 1e6, "files": write[0]["files"],
        "generate_s": statistics.median(g["seconds"] for g in gen),
        "write_s": statistics.median(w["seconds"] for w in write),
        "write_peak_mb": max(w["peak_mb"] for w in write),
        "write_cpu_s": statistics.median(w["cpu_s"] for w in write),
        "verify_cpu_s": statistics.median(v["cpu_s"] for v in verify),
        "verify_s": statistics.median(v["seconds"] for v in verify),
        "verify_peak_mb": max(v["peak_mb"] for v in verify),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--small", type=int, default=100_000, help="a smaller size measured --small-runs times")
    parser.add_argument("--small-runs", type=int, default=3)
    parser.add_argument("--phase", choices=["generate", "write", "verify"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        if args.phase == "generate":
            result = phase_generate(args.rows)
        elif args.phase == "write":
            result = phase_write(args.rows, args.out)
        else:
            result = phase_verify(args.out)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["peak_mb"] = usage.ru_maxrss / 1024
        result["cpu_s"] = usage.ru_utime + usage.ru_stime
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        sizes = [(args.small, args.small_runs)] if args.small else []
        results = [measure(n, r, Path(tmp)) for n, r in [*sizes, (args.rows, args.runs)]]
    print(f"{'rows':>10} {'runs':>4} {'bundle MB':>9} {'generate s':>10} {'write s':>8} {'(cpu s)':>8} "
          f"{'write peak MB':>13} {'verify s':>8} {'(cpu s)':>8} {'verify peak MB':>14}")
    for r in results:
        print(f"{r['rows']:>10} {r['runs']:>4} {r['size_mb']:>9.1f} {r['generate_s']:>10.1f} {r['write_s']:>8.1f} "
              f"{r['write_cpu_s']:>8.1f} {r['write_peak_mb']:>13.0f} {r['verify_s']:>8.1f} {r['verify_cpu_s']:>8.1f} "
              f"{r['verify_peak_mb']:>14.0f}")
    print("goals at 1,000,000 rows: write <= 30 s (generation included) and <= 500 MB peak; verify <= 30 s.")
    print("write s includes generating the rows on the fly (generate s alone), as an export streams them from "
          "the store.")
    print("cpu s: CPU time of the whole phase process (imports and, for write, generation included); on a "
          "shared machine wall-clock times vary with the load, CPU times much less.")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
