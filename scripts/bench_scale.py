#!/usr/bin/env python3
"""The mainline DHT at scale, simulated on one machine (issue 12): lookups, crawling and metadata.

The real DHT node (traversal, routing table, per-IP rate limiter), the BEP 51 crawler and the monitor's
metadata pipeline run on a simulated clock over a simulated network (p2pwatch/sim): 1,000,000 nodes
(``--quick``: 100,000), half of them dead at any time, churn, log-normal link RTTs (median 150 ms), BEP 51
in 30 % of the nodes, two torrents per node with peers of which 40 % hand out metadata. No socket is opened.

Goals (issue 12): lookup median ≤ 1.5 s and p95 ≤ 4 s (simulated), ≥ 99 % of lookups find the true 8
closest live nodes, ≥ 1,000 metadata a minute while no node receives more than 1 query/s from us, and
≤ 200 MB of memory per 100,000 simulated nodes.

Prints a table, then (``--json``) one JSON object as the last line.

Reproducible: the same ``--seed`` gives the same JSON in any process, but for the wall-clock and memory fields
(``wall_s``, ``setup_wall_s``, ``lookups_wall_s``, ``crawl_wall_s``, ``rss_mb``, ``rss_mb_per_100k_nodes``, and
through the memory goal ``goals_met``): the run draws everything from the seed and seeds trio's scheduler
(``p2pwatch/sim/determinism.py``). The script re-executes itself with ``PYTHONHASHSEED=0`` when that is unset,
so no set of strings can iterate in another order (none matters today; a future one would not show in an
in-process test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pwatch.config import DHTSettings
from p2pwatch.sim.population import PopulationSettings
from p2pwatch.sim.scenario import ScaleRun, run_scale

GOALS = [  # (field, label, goal text, passes)
    ("lookup_median_s", "lookup median (simulated s)", "≤ 1.5", lambda v: v <= 1.5),
    ("lookup_p95_s", "lookup p95 (simulated s)", "≤ 4", lambda v: v <= 4.0),
    ("true_closest_fraction", "lookups finding the true 8 closest live", "≥ 0.99", lambda v: v >= 0.99),
    ("metadata_per_min", "metadata per simulated minute", "≥ 1000", lambda v: v >= 1000),
    ("max_queries_per_s_per_ip", "most queries/s one node got from us", "≤ 1", lambda v: v <= 1),
    ("rss_mb_per_100k_nodes", "peak RSS per 100,000 nodes (MB)", "≤ 200", lambda v: v <= 200),
]
INFO = [
    ("nodes", "simulated nodes"), ("dead_fraction", "dead fraction (end of run)"),
    ("node_flips_by_churn", "nodes that died or came back (churn)"), ("table_size", "our routing table"),
    ("true_closest_fraction_at_end", "  same, churned nodes not left out"),
    ("lookup_queries_median", "queries per lookup (median)"), ("lookup_max_s", "slowest lookup (s)"),
    ("discovered_per_min", "infohashes discovered per minute"), ("crawl_lookups", "BEP 51 sampling lookups"),
    ("bep51_intervals_honoured", "BEP 51 intervals honoured (find_node instead)"),
    ("metadata_ok", "metadata ok"), ("metadata_direct", "  of which from the sampling node's peers"),
    ("metadata_lookup", "  of which after a full lookup"), ("metadata_libtorrent", "  of which by libtorrent"),
    ("metadata_failed", "metadata failed"), ("metadata_timed_out", "metadata timed out"),
    ("metadata_no_peers", "no peers found"), ("libtorrent_busy", "libtorrent fallback busy (given up)"),
    ("metadata_latency_median_s", "lead → metadata, median (s)"), ("pipeline_max_active", "leads in flight (max)"),
    ("pipeline_max_connections", "BEP 9 connections open (max)"),
    ("max_connections_per_s_per_peer_ip", "most connections/s to one peer IP"),
    ("max_open_connections_per_peer_ip", "most open connections to one peer IP"),
    ("crawl_queries_per_s", "our DHT queries per second while crawling"), ("queries_sent", "DHT queries sent"),
    ("simulated_s", "simulated seconds"), ("wall_s", "wall seconds"), ("rss_mb", "peak RSS (MB)"),
]


def fix_hash_seed() -> None:
    """Re-execute this script with ``PYTHONHASHSEED=0`` unless it is set (str and bytes hashing fixed)."""
    if os.environ.get("PYTHONHASHSEED") is None:
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main() -> None:
    fix_hash_seed()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 nodes and fewer lookups (a few minutes)")
    parser.add_argument("--json", action="store_true", help="print the JSON object as the last line")
    parser.add_argument("--nodes", type=int, help="override the number of simulated nodes")
    parser.add_argument("--lookups", type=int, help="override the number of measured lookups")
    parser.add_argument("--crawl-seconds", type=float, help="override the simulated crawl time")
    parser.add_argument("--loss", type=float, default=0.0, help="datagram loss probability (default 0)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the whole run: the same seed gives the same report (default 1)")
    parser.add_argument("--slow-grace", type=float, help="override the [dht] slow_grace (seconds)")
    parser.add_argument("--lookup-width", type=int, help="override the [dht] lookup_width")
    parser.add_argument("--eager", type=int, help="override the [dht] lookup_eager")
    parser.add_argument("--alpha", type=int, help="override the [dht] alpha")
    args = parser.parse_args()
    nodes = args.nodes or (100_000 if args.quick else 1_000_000)
    dht = DHTSettings()
    if args.slow_grace is not None:
        dht.slow_grace = args.slow_grace
    if args.eager is not None:
        dht.lookup_eager = args.eager
    if args.alpha is not None:
        dht.alpha = args.alpha
    if args.lookup_width is not None:
        dht.lookup_width = args.lookup_width
    run = ScaleRun(population=PopulationSettings(nodes=nodes, loss=args.loss, seed=args.seed), dht=dht,
                   lookups=args.lookups or (300 if args.quick else 500),
                   crawl_s=args.crawl_seconds or (180.0 if args.quick else 300.0))
    report = run_scale(run)
    report["quick"] = args.quick
    print(f"{'measure':<48} {'value':>12}  goal")
    for key, label, goal, ok in GOALS:
        value = report[key]
        print(f"{label:<48} {value:>12.3f}  {goal} {'ok' if ok(value) else 'MISSED'}")
    for key, label in INFO:
        value = report.get(key)
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{label:<48} {text:>12}")
    report["goals_met"] = all(ok(report[key]) for key, _, _, ok in GOALS)
    if args.json:
        print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
