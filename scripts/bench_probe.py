"""Benchmark the peer probe against loopback libtorrent seeders.

Prints two figures (medians over several runs):

* probes per second, handshake + bitfield only (no metadata, no piece), against 20 seeders at
  concurrency 100 (goal: >= 200/s on 2 cores); also with MSE (encryption=prefer) for comparison;
* bytes downloaded to verify one piece from one peer, against the piece size (goal: <= 1 % overhead),
  with the metainfo given and with the metadata fetched over ut_metadata first.

Usage: python scripts/bench_probe.py [--seeders 20] [--concurrency 100] [--probes 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("P2PWATCH_NETGUARD_ALLOW", "127.0.0.0/8")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt
import trio

from p2pwatch.probe.mse import RC4
from p2pwatch.probe.peer_probe import probe_peer
from p2pwatch.testswarm.localswarm import create_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent

PIECE_LENGTH = 256 * 1024


def make_torrent(root: Path, size: int) -> bytes:
    content = root / "bench.bin"
    content.write_bytes(os.urandom(size))
    return create_torrent(content, version="v1", piece_length=PIECE_LENGTH)


def start_seeders(count: int, torrent: bytes, root: Path) -> list[tuple[str, Any, Any]]:
    base = 100 + os.getpid() % 100
    seeders = []
    for i in range(count):
        ip = f"127.{base}.{i // 250}.{i % 250 + 1}"
        session = lt.session({
            "listen_interfaces": f"{ip}:0", "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
            "enable_natpmp": False, "allow_multiple_connections_per_ip": True, "listen_queue_size": 500,
            "connections_limit": 500, "alert_mask": lt.alert_category.status | lt.alert_category.error,
        })
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(torrent))
        params.save_path = str(root)
        params.flags |= lt.torrent_flags.seed_mode
        params.flags &= ~(lt.torrent_flags.paused | lt.torrent_flags.auto_managed)  # start now, not queued
        seeders.append((ip, session, session.add_torrent(params)))
    deadline = time.monotonic() + 60
    pending = {ip for ip, _, _ in seeders}
    listening: set[str] = set()
    while pending:  # wait for every seeder to listen and seed (poll alerts and status, no blind sleep)
        for ip, session, handle in seeders:
            if any(isinstance(a, lt.listen_succeeded_alert) for a in session.pop_alerts()):
                listening.add(ip)
            if ip in listening and handle.status().is_seeding:
                pending.discard(ip)
        if time.monotonic() > deadline:
            sys.exit(f"seeders not listening: {sorted(pending)}")
        time.sleep(0.01)
    return seeders


async def probe_rate(endpoints: list[tuple[str, int]], infohash: bytes, probes: int, concurrency: int,
                     encryption: str) -> tuple[float, int]:
    limiter = trio.CapacityLimiter(concurrency)
    reached = 0

    async def one(n: int) -> None:
        nonlocal reached
        ip, port = endpoints[n % len(endpoints)]
        async with limiter:
            result = await probe_peer(ip, port, infohash, fetch_metadata=False, fetch_piece=False,
                                      encryption=encryption)
        reached += result.level >= 2

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(probes):
            nursery.start_soon(one, n)
    return probes / (time.perf_counter() - start), reached


async def piece_cost(endpoint: tuple[str, int], metainfo: Metainfo,
                     with_metadata: bool) -> tuple[int, int, int]:
    index = 0  # a full-size piece
    result = await probe_peer(endpoint[0], endpoint[1], metainfo.infohash, piece=index, encryption="off",
                              metainfo=None if with_metadata else metainfo)
    assert result.piece_verified == index, (result.error, result.flagged)
    return result.bytes_received, result.bytes_sent, metainfo.piece_size(index)


def rc4_speed() -> float:
    cipher = RC4(bytes(range(20)), backend="python")
    data = bytes(1 << 20)
    start = time.perf_counter()
    cipher.process(data)
    return len(data) / (time.perf_counter() - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeders", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torrent = make_torrent(root, 8 * PIECE_LENGTH)
        metainfo = parse_torrent(torrent)
        seeders = start_seeders(args.seeders, torrent, root)
        endpoints = [(ip, int(session.listen_port())) for ip, session, _ in seeders]
        rows: list[tuple[str, str, str]] = []
        for encryption in ("off", "prefer"):
            rates, ok = [], []
            for _ in range(args.runs):
                rate, reached = trio.run(probe_rate, endpoints, metainfo.infohash, args.probes,
                                         args.concurrency, encryption)
                rates.append(rate)
                ok.append(reached)
            label = "plaintext" if encryption == "off" else "MSE (prefer)"
            rows.append((f"probes/s, handshake+bitfield, {label}",
                         f"{statistics.median(rates):.0f}",
                         f"{args.seeders} seeders, concurrency {args.concurrency}, {args.probes} probes/run, "
                         f"level>=2 in {min(ok)}..{max(ok)} of {args.probes}"))
        for with_metadata in (False, True):
            costs = [trio.run(piece_cost, endpoints[0], metainfo, with_metadata) for _ in range(args.runs)]
            received = statistics.median(c[0] for c in costs)
            sent = statistics.median(c[1] for c in costs)
            size = costs[0][2]
            what = "metadata fetched" if with_metadata else "metainfo given"
            rows.append((f"bytes to verify one piece ({what})", f"{received:.0f}",
                         f"piece {size} B, overhead {100 * (received - size) / size:.2f} %, "
                         f"sent {sent:.0f} B"))
        rows.append(("RC4 pure Python, MB/s", f"{rc4_speed():.1f}", "one core, 1 MiB"))
        for _, session, handle in seeders:
            session.remove_torrent(handle)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>8}  notes  (runs: {args.runs}, cores: {os.cpu_count()})")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>8}  {note}")


if __name__ == "__main__":
    main()
