#!/usr/bin/env python3
"""Offline DHT demonstration on loopback (the main job until `p2pwatch demo` exists).

Starts eight real libtorrent sessions with DHT on 127.0.8.x (three seeding two torrents of random bytes),
then runs p2pwatch's own commands against them:

  p2pwatch dht peers INFOHASH --bootstrap ... --allow-local   (finds every seeder, with provenance)
  p2pwatch dht sample --duration 10 ...                       (BEP 51 crawl discovers the infohashes)

Everything stays on 127.0.0.0/8 (netguard is set to loopback only) and every process is stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt

from p2pwatch.localswarm import LocalSwarm, create_torrent


def run_cli(args: list[str], home: Path) -> str:
    env = dict(os.environ, P2PWATCH_NETGUARD_ALLOW="127.0.0.0/8", P2PWATCH_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "p2pwatch", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"p2pwatch {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="p2pwatch-dht-demo-") as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        (data / "first.bin").write_bytes(os.urandom(256_000))
        (data / "second.bin").write_bytes(os.urandom(128_000))
        torrents = {name: create_torrent(data / name, version="v1") for name in ("first.bin", "second.bin")}
        t0 = time.monotonic()
        with LocalSwarm(root) as swarm:
            sessions = [swarm.start_session(f"127.0.8.{i}") for i in range(2, 10)]
            for i, torrent in enumerate(torrents.values()):
                for session in sessions[i * 2 : i * 2 + 2 + i]:
                    swarm.seed(session, torrent, data)
            swarm.connect_dht()
            swarm.wait_dht_ready(min_nodes=4)
            swarm.wait_seeding()
            swarm.force_announce()
            time.sleep(2.0)
            print(f"local swarm: {len(sessions)} libtorrent DHT nodes on 127.0.8.2-9, "
                  f"{sum(len(s.torrents) for s in sessions)} seeding torrents ({time.monotonic() - t0:.1f} s)")
            boot = [f"--bootstrap={ip}:{port}" for ip, port in (s.endpoint for s in sessions[:2])]
            net = [*boot, "--allow-local", "--bind=127.0.8.100", "--timeout=20"]
            for name, torrent in torrents.items():
                infohash = str(lt.torrent_info(lt.bdecode(torrent)).info_hashes().v1)
                peers = json.loads(run_cli(["dht", "peers", infohash, "--json", *net], root / "home"))
                print(f"\n$ p2pwatch dht peers {infohash}   ({name})")
                for p in peers:
                    print(f"  {p['ip']}:{p['port']}  reported by {', '.join(p['reported_by'])}")
            print("\n$ p2pwatch dht sample --duration 10")
            samples = json.loads(run_cli(["dht", "sample", "--duration", "10", "--json", *net], root / "home"))
            for s in samples:
                print(f"  {s['infohash']}  from {s['reported_by']} ({s['message']})")
            print(f"\ndone in {time.monotonic() - t0:.1f} s; all sessions stopped.")


if __name__ == "__main__":
    main()
