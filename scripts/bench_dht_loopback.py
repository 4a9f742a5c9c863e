#!/usr/bin/env python3
"""Loopback DHT lookup benchmark (issue 12): `p2pwatch dht peers` against libtorrent, with a dead contact.

Sixteen libtorrent sessions on their own 127.x addresses form a DHT; three seed one torrent; a node whose id is
the infohash but for one bit joins, is listed by the others, then goes silent (port bound, never read): a dead
contact in the closest set. Each round (alternating, same DHT, same run):

* ``cli``: ``python -m p2pwatch dht peers`` as a subprocess with a fresh home (cold: start-up, bootstrap,
  lookup); time to the first seeder line on stdout, to every seeder, and to exit.
* ``node``: p2pwatch's streaming lookup in this process on a bootstrapped node (warm and idle, like the
  libtorrent session: it waits ``SETTLE`` s after its bootstrap, while the libtorrent nodes verify it with
  their own queries): time from the start of the lookup to the first seeder, to every seeder, and to its end.
* ``libtorrent``: a libtorrent session of the same DHT (not a seeder) runs ``dht_get_peers``; time to the
  first ``dht_get_peers_reply_alert`` naming a seeder and to every seeder (alerts polled every millisecond).

Goals: cli exit <= 2 s median, every seeder listed in every run, node's first seeder within 2x libtorrent's.
Prints a table of medians and, last line, one JSON object. Run it under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt
import trio

from p2pwatch import netguard
from p2pwatch.dht.node import DHTConfig, PeersFound, open_dht_node
from p2pwatch.testswarm.deadcontact import dead_id_for, plant_dead_contact
from p2pwatch.testswarm.localswarm import LocalSwarm, SwarmSession, random_torrent

Addr = tuple[str, int]
BASE = "127.0.77."
SETTLE = 1.0  # seconds a bootstrapped p2pwatch node idles before its timed lookup


def ip(n: int) -> str:
    return f"{BASE}{n}"


def cli_run(infohash: bytes, bootstrap: Addr, bind: str, want: set[Addr]) -> dict[str, float | bool]:
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, P2PWATCH_HOME=home, P2PWATCH_NETGUARD_ALLOW="127.0.0.0/8")
        args = [sys.executable, "-m", "p2pwatch", "dht", "peers", infohash.hex(), f"--bootstrap={bootstrap[0]}:"
                f"{bootstrap[1]}", "--allow-local", f"--bind={bind}", "--timeout=20"]
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=str(Path(__file__).resolve().parent.parent))
        assert proc.stdout is not None
        first = every = float("nan")
        seen: set[Addr] = set()
        for line in proc.stdout:
            if "reported by" not in line:
                continue
            host, _, port = line.split()[0].rpartition(":")
            peer = (host, int(port))
            seen.add(peer)
            now = time.perf_counter() - start
            if peer in want and first != first:
                first = now
            if want <= seen and every != every:
                every = now
        code = proc.wait()
        total = time.perf_counter() - start
        if code != 0:
            print(f"cli failed: {proc.stderr.read() if proc.stderr else ''}", file=sys.stderr)
    return {"first": first, "every": every, "end": total, "all": want <= seen}


def startup_run() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "p2pwatch", "dht", "--help"], capture_output=True, check=True,
                   cwd=str(Path(__file__).resolve().parent.parent))
    return time.perf_counter() - start


async def node_run(infohash: bytes, bootstrap: Addr, bind: str, want: set[Addr]) -> dict[str, float | bool]:
    config = DHTConfig(bind_host=bind, bind_port=0, bootstrap=(bootstrap,), allow_local=True,
                       query_timeout=5.0, short_timeout=0.5, maintenance_interval=3600)
    async with open_dht_node(config) as node:
        await trio.sleep(SETTLE)  # warm and idle, like the libtorrent session: libtorrent's checks of us are over
        start = trio.current_time()
        first = every = float("nan")
        seen: set[Addr] = set()
        async with node.open_get_peers(infohash) as stream:
            async for event in stream:
                if os.environ.get("BENCH_DEBUG"):
                    print(f"{(trio.current_time() - start) * 1000:8.3f} ms {event}", file=sys.stderr)
                if isinstance(event, PeersFound):
                    now = trio.current_time() - start
                    seen.update(event.new)
                    if first != first and want & set(event.new):
                        first = now
                    if every != every and want <= seen:
                        every = now
        end = trio.current_time() - start
    return {"first": first, "every": every, "end": end, "all": want <= seen}


def libtorrent_run(asker: SwarmSession, infohash: bytes, want: set[Addr], limit: float = 10.0
                   ) -> dict[str, float | bool]:
    ses = asker.session
    ses.pop_alerts()
    start = time.perf_counter()
    ses.dht_get_peers(lt.sha1_hash(infohash))
    first = every = float("nan")
    seen: set[Addr] = set()
    while time.perf_counter() - start < limit and not want <= seen:
        ses.wait_for_alert(1)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.dht_get_peers_reply_alert) and bytes(alert.info_hash.to_bytes()) == infohash:
                now = time.perf_counter() - start
                peers = {(h, p) for h, p in alert.peers()}
                seen |= peers
                if first != first and want & peers:
                    first = now
                if every != every and want <= seen:
                    every = now
    return {"first": first, "every": every, "end": float("nan"), "all": want <= seen}


def med(runs: list[dict[str, float | bool]], key: str) -> float:
    values = [float(r[key]) for r in runs if float(r[key]) == float(r[key])]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--nodes", type=int, default=16)
    args = parser.parse_args()
    netguard.set_policy(netguard.NetworkPolicy.loopback_only())
    workdir = Path(tempfile.mkdtemp(prefix="bench-dht-loopback-"))
    data, torrent, infohash = random_torrent(workdir, 300_000)
    with LocalSwarm(workdir) as local:
        sessions = [local.start_session(ip(10 + i)) for i in range(args.nodes)]
        seeders, asker = sessions[:3], sessions[-1]
        for s in seeders:
            local.seed(s, torrent, data)
        local.start_dht(min_nodes=8, timeout=60)
        swarm = [s.endpoint for s in sessions]
        silent = trio.run(lambda: plant_dead_contact(ip(200), infohash, swarm))
        want = {s.endpoint for s in seeders}
        for _ in range(60):  # wait until the announces are stored: libtorrent itself lists every seeder
            if libtorrent_run(asker, infohash, want, limit=2.0)["all"]:
                break
            time.sleep(0.5)
        bootstrap = sessions[8].endpoint
        cli: list[dict[str, float | bool]] = []
        node: list[dict[str, float | bool]] = []
        ltr: list[dict[str, float | bool]] = []
        startup = []
        for i in range(args.runs):
            startup.append(startup_run())
            cli.append(cli_run(infohash, bootstrap, ip(100 + i), want))
            node.append(trio.run(node_run, infohash, bootstrap, ip(150 + i), want))
            ltr.append(libtorrent_run(asker, infohash, want))
        silent.close()
    rows = [("p2pwatch dht peers (cli, cold, incl. start-up)", cli), ("p2pwatch streaming lookup (in process, warm)",
            node), ("libtorrent dht_get_peers (session, warm)", ltr)]
    print(f"{args.nodes}-node loopback libtorrent DHT, 3 seeders, 1 dead contact in the closest set, "
          f"{args.runs} runs, medians")
    print(f"{'':48} {'first seeder':>13} {'every seeder':>13} {'end':>9} {'all listed':>11}")
    for name, runs in rows:
        print(f"{name:48} {med(runs, 'first') * 1000:10.1f} ms {med(runs, 'every') * 1000:10.1f} ms "
              f"{med(runs, 'end'):7.3f} s {sum(bool(r['all']) for r in runs):>5}/{len(runs)}")
    print(f"{'python -m p2pwatch dht --help (start-up alone)':48} {'':13} {'':13} {statistics.median(startup):7.3f} s")
    ratio = med(node, "first") / med(ltr, "first")
    result = {
        "nodes": args.nodes, "runs": args.runs, "seeders": len(want), "dead_contacts": 1,
        "cli_end_median_s": round(med(cli, "end"), 4),
        "cli_first_seeder_median_s": round(med(cli, "first"), 4),
        "cli_all_seeders_runs": sum(bool(r["all"]) for r in cli),
        "startup_median_s": round(statistics.median(startup), 4),
        "node_first_seeder_median_ms": round(med(node, "first") * 1000, 3),
        "node_every_seeder_median_ms": round(med(node, "every") * 1000, 3),
        "node_end_median_s": round(med(node, "end"), 4),
        "libtorrent_first_seeder_median_ms": round(med(ltr, "first") * 1000, 3),
        "libtorrent_every_seeder_median_ms": round(med(ltr, "every") * 1000, 3),
        "libtorrent_all_seeders_runs": sum(bool(r["all"]) for r in ltr),
        "first_seeder_ratio_node_to_libtorrent": round(ratio, 3),
        "goal_cli_le_2s": med(cli, "end") <= 2.0,
        "goal_every_seeder": all(r["all"] for r in cli + node),
        "goal_first_within_2x_libtorrent": ratio <= 2.0,
        "dead_contact_id": dead_id_for(infohash).hex(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
