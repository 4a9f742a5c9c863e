#!/usr/bin/env python3
"""Monitor benchmark on the demo swarm (issue 6). Loopback only; prints one table.

* seconds from ``p2pwatch monitor`` start to the last expected match confirmed (goal <= 30 s), per run and
  median; the monitor discovers the torrents by crawling alone;
* peak memory of the daemon process (VmHWM, goal <= 300 MB);
* CPU seconds per minute while idle (the matches are made, the watch list is not due, the DHT keeps
  answering and maintaining its table) — measured over ``--idle`` seconds from /proc/PID/stat.
Baseline in the same run: the same numbers for a bare ``python -c 'import p2pwatch.cli'`` interpreter.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select

from p2pwatch.storage.db import default_url, make_engine, writer_sessionmaker
from p2pwatch.storage.models import Match, Torrent
from p2pwatch.testswarm.demoswarm import DemoContent, start_demo_swarm, stop_demo_swarm

TICKS = os.sysconf("SC_CLK_TCK")


def cli(home: Path, *args: str) -> None:
    env = dict(os.environ, P2PWATCH_HOME=str(home), P2PWATCH_NETGUARD_ALLOW="127.0.0.0/8")
    subprocess.run([sys.executable, "-m", "p2pwatch", *args], env=env, check=True, capture_output=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def matched(home: Path, expected: set[str]) -> bool:
    engine = make_engine(default_url(home))
    try:
        with writer_sessionmaker(engine)() as s:
            found = set(s.execute(select(Torrent.dht_id).join(Match, Match.torrent_id == Torrent.id)).scalars())
    finally:
        engine.dispose()
    return expected <= found


def one_run(content: DemoContent, work: Path, n: int, idle: float) -> tuple[float, float, float]:
    home = work / f"home{n}"
    cli(home, "db", "upgrade")
    cli(home, "case", "create", "b")
    cli(home, "register", "--case", "b", str(content.registered))
    demo = start_demo_swarm(content, prefix=f"127.0.{50 + n}")
    try:
        expected = {t.infohash for t in demo.torrents if t.expected}
        # the demo swarm is tiny: sweep the keyspace every 5 s instead of the production 300 s
        env = dict(os.environ, P2PWATCH_HOME=str(home), P2PWATCH_NETGUARD_ALLOW="127.0.0.0/8",
                   P2PWATCH_CRAWLER_SWEEP_INTERVAL="5", P2PWATCH_CRAWLER_SEGMENTS="16")
        args = [sys.executable, "-m", "p2pwatch", "monitor", "--allow-local", f"--bind=127.0.{50 + n}.100:0",
                *(f"--bootstrap={b}" for b in demo.bootstrap)]
        start = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = float("nan")
        while time.monotonic() - start < 120:
            if matched(home, expected):
                elapsed = time.monotonic() - start
                break
            time.sleep(0.25)
        time.sleep(10)  # let the watcher's first examinations finish
        before = cpu_seconds(proc.pid)
        time.sleep(idle)
        idle_cpu = (cpu_seconds(proc.pid) - before) * 60 / idle
        peak = peak_rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        return elapsed, peak, idle_cpu
    finally:
        stop_demo_swarm(demo)


def baseline(idle: float) -> tuple[float, float]:
    proc = subprocess.Popen([sys.executable, "-c", "import p2pwatch.cli, time; time.sleep(3600)"])
    time.sleep(3)
    before = cpu_seconds(proc.pid)
    time.sleep(min(idle, 10))
    cpu = (cpu_seconds(proc.pid) - before) * 60 / min(idle, 10)
    peak = peak_rss_mb(proc.pid)
    proc.kill()
    proc.wait()
    return peak, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pwatch-bench-monitor-") as tmp:
        work = Path(tmp)
        content = DemoContent.generate(work / "content")
        runs = [one_run(content, work, n, args.idle) for n in range(args.runs)]
    base_peak, base_cpu = baseline(args.idle)
    times = [r[0] for r in runs]
    print("| measure | median | runs | goal |")
    print("|---|---|---|---|")
    print(f"| seconds from monitor start to the last expected match | {statistics.median(times):.1f} | "
          f"{', '.join(f'{t:.1f}' for t in times)} | <= 30 |")
    print(f"| peak memory of the daemon (VmHWM, MB) | {statistics.median(r[1] for r in runs):.0f} | "
          f"{', '.join(f'{r[1]:.0f}' for r in runs)} | <= 300 |")
    print(f"| CPU seconds per minute when idle | {statistics.median(r[2] for r in runs):.2f} | "
          f"{', '.join(f'{r[2]:.2f}' for r in runs)} | |")
    print(f"| baseline: bare interpreter with p2pwatch imported, MB / CPU s per min | {base_peak:.0f} / "
          f"{base_cpu:.2f} | | |")


if __name__ == "__main__":
    main()
