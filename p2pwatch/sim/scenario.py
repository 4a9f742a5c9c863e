"""One whole simulated run at the mainline DHT's scale (issue 12), and its report.

On trio's :class:`~trio.testing.MockClock` (``autojump_threshold=0``: a discrete-event clock) the real
:class:`~p2pwatch.dht.node.DHTNode`, configured from the monitor's ``[dht]`` defaults, runs over
:class:`~p2pwatch.sim.network.SimNetwork` while churn goes on:

1. bootstrap from a few live nodes, then warm-up lookups (the routing table fills as in a real start);
2. ``lookups`` get_peers lookups of random targets, one after the other: simulated seconds until each
   ends, and whether its result holds the true ``k`` closest nodes alive at that moment;
3. ``crawl_s`` simulated seconds of the BEP 51 :class:`~p2pwatch.dht.crawler.Crawler` feeding the monitor's
   :class:`~p2pwatch.monitor.pipeline.MetadataPipeline` (with the daemon's :class:`DHTPeerSource` and the
   simulated peers of :mod:`.peers`): discoveries and metadata per simulated minute.

Throughout, the network counts what each remote node receives from us (``max_queries_per_s_per_ip``).

Reproducible: everything random comes from the population's seed (the population, the network's and the
peers' numpy generators, our node's and the crawler's ``random.Random``), and trio's scheduler is seeded
and deterministic for the run (:mod:`.determinism`). The same seed gives the same report but for its
wall-clock and memory fields, in one process or in two.
"""

from __future__ import annotations

import random
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import trio
import trio.testing

from p2pwatch import netguard
from p2pwatch.config import DHTSettings, MetadataSettings
from p2pwatch.dht.crawler import Crawler, DiscoveredInfohash, Discovery
from p2pwatch.dht.node import DHTNode, open_dht_node
from p2pwatch.dht.node_types import config_from_settings
from p2pwatch.dht.traversal import QueryState
from p2pwatch.monitor.pipeline import DHTPeerSource, Lead, MetadataOutcome, MetadataPipeline
from p2pwatch.sim.determinism import deterministic_scheduling
from p2pwatch.sim.network import SimNetwork
from p2pwatch.sim.peers import SimPeers
from p2pwatch.sim.population import DHT_PORT, Population, PopulationSettings


@dataclass
class ScaleRun:
    population: PopulationSettings = field(default_factory=PopulationSettings)
    dht: DHTSettings = field(default_factory=DHTSettings)
    metadata: MetadataSettings = field(default_factory=MetadataSettings)
    warmup_lookups: int = 20
    lookups: int = 300
    crawl_s: float = 180.0
    churn_step: float = 1.0
    table_cache: int = 20_000
    max_peers: int = 8


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def rss_mb() -> float:
    """Peak resident set size of this process, MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


async def _churn(pop: Population, step: float) -> None:
    while True:
        await trio.sleep(step)
        pop.churn(step)


async def _lookups(node: DHTNode, pop: Population, run: ScaleRun, rng: np.random.Generator) -> dict[str, Any]:
    """Lookups one after the other. A lookup found the truth when the k closest of its responders that were
    alive all through it are the k closest nodes alive all through it: a node that churned while the lookup
    ran (died after answering, or came back after it was tried) is left out on both sides. The plain
    comparison of the result with the live closest at the end is reported too (``..._at_end``)."""
    durations: list[float] = []
    found_all = found_at_end = 0
    queries: list[int] = []
    k = pop.k
    for _ in range(run.lookups):
        target = rng.bytes(20)
        alive_at_start = pop.alive.copy()
        start = trio.current_time()
        async with node.open_get_peers(target) as stream:
            result = await stream.drain()
            candidates = stream.traversal.candidates()
        durations.append(trio.current_time() - start)
        queries.append(result.queries)
        stable = alive_at_start & pop.alive
        truth = {pop.node_id(int(i)) for i in pop.closest(int.from_bytes(target[:8], "big"), k, stable)}
        responders = [n.id for n, state in candidates if state is QueryState.RESPONDED]
        kept = [x for x in responders if (i := pop.index_of_id(x)) is not None and stable[i]][:k]
        found_all += truth <= set(kept)
        found_at_end += set(pop.true_closest_ids(target)) <= {n.id for n in result.closest}
    return {"lookups": run.lookups, "lookup_median_s": statistics.median(durations),
            "lookup_p95_s": percentile(durations, 95), "lookup_max_s": max(durations),
            "true_closest_fraction": found_all / run.lookups,
            "true_closest_fraction_at_end": found_at_end / run.lookups,
            "lookup_queries_median": statistics.median(queries)}


async def _crawl(node: DHTNode, run: ScaleRun, peers: SimPeers) -> dict[str, Any]:
    discoveries_send, discoveries = trio.open_memory_channel[Discovery](10_000)
    leads_send, leads = trio.open_memory_channel[Lead](64)
    outcomes_send, outcomes = trio.open_memory_channel[MetadataOutcome](64)
    crawler = Crawler(node, discoveries_send, passive=False, rng=random.Random(f"crawler {run.population.seed}"))
    pipeline = MetadataPipeline(DHTPeerSource(node), peers, run.metadata, max_peers=run.max_peers)
    latencies: list[float] = []

    async def forward() -> None:
        async for event in discoveries:
            if isinstance(event, DiscoveredInfohash):
                sampled = event.reported_by if event.message == "sample_infohashes" else None
                await leads_send.send(Lead(event.infohash, sampled))

    async def consume() -> None:
        async for outcome in outcomes:
            if outcome.status == "ok":
                latencies.append(outcome.finished - outcome.started)

    start = trio.current_time()
    queries_before = node.stats.queries_out
    with trio.move_on_after(run.crawl_s):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(crawler.run)
            nursery.start_soon(forward)
            nursery.start_soon(pipeline.run, leads, outcomes_send)
            nursery.start_soon(consume)
    minutes = (trio.current_time() - start) / 60.0
    st = pipeline.stats
    return {
        "crawl_minutes": round(minutes, 2),
        "discovered_per_min": crawler.stats.discovered / minutes,
        "metadata_per_min": st.ok / minutes,
        "metadata_ok": st.ok, "metadata_failed": st.failed, "metadata_timed_out": st.timed_out,
        "metadata_no_peers": st.no_peers, "metadata_direct": st.ok_direct, "metadata_lookup": st.ok_lookup,
        "metadata_libtorrent": st.libtorrent_ok, "libtorrent_busy": st.libtorrent_busy,
        "metadata_latency_median_s": statistics.median(latencies) if latencies else None,
        "pipeline_leads": st.leads, "pipeline_max_active": st.max_active,
        "pipeline_max_connections": st.max_connections,
        "pipeline_lookups": st.lookups, "crawl_lookups": crawler.stats.lookups,
        "bep51_intervals_honoured": crawler.stats.intervals_honoured,
        "crawl_queries_per_s": (node.stats.queries_out - queries_before) / (minutes * 60.0),
    }


async def _run(run: ScaleRun, report: dict[str, Any]) -> None:
    wall = time.perf_counter()
    pop = Population(run.population)
    net = SimNetwork(pop, table_cache=run.table_cache)
    peers = SimPeers(pop)
    rng = np.random.default_rng((run.population.seed, 17))
    report["setup_wall_s"] = round(time.perf_counter() - wall, 2)
    boot = tuple((pop.node_ip(i), DHT_PORT) for i in pop.random_live(rng, 8))
    config = config_from_settings(run.dht, bind_host="127.0.0.1", bind_port=DHT_PORT, bootstrap=boot,
                                  allow_local=True, rng=random.Random(f"node {run.population.seed}"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.run)
        nursery.start_soon(_churn, pop, run.churn_step)
        t0 = trio.current_time()
        async with open_dht_node(config, sock=net.socket) as node:
            report["bootstrap_s"] = round(trio.current_time() - t0, 3)
            for _ in range(run.warmup_lookups):
                await node.lookup(rng.bytes(20), "find_node")
            report["table_size"] = len(node.table)
            wall = time.perf_counter()
            report.update(await _lookups(node, pop, run, rng))
            report["lookups_wall_s"] = round(time.perf_counter() - wall, 1)
            wall = time.perf_counter()
            report.update(await _crawl(node, run, peers))
            report["crawl_wall_s"] = round(time.perf_counter() - wall, 1)
            report["queries_sent"] = node.stats.queries_out
        nursery.cancel_scope.cancel()
    report["simulated_s"] = round(trio.current_time(), 1)
    report["max_queries_per_s_per_ip"] = net.stats.max_per_second
    report["max_connections_per_s_per_peer_ip"] = peers.stats.max_per_second
    report["max_open_connections_per_peer_ip"] = peers.stats.max_open_per_ip
    report["remote_tables_built"] = net.tables.built
    report["node_flips_by_churn"] = pop.flips
    report["dead_fraction"] = round(1.0 - float(pop.alive.mean()), 4)


def run_scale(run: ScaleRun) -> dict[str, Any]:
    """Run the whole simulation; returns the report (see :mod:`scripts/bench_scale.py` for the fields)."""
    report: dict[str, Any] = {"nodes": run.population.nodes}
    wall = time.perf_counter()
    with (netguard.policy_scope(netguard.NetworkPolicy.loopback_only()),
          deterministic_scheduling(run.population.seed)):
        trio.run(_run, run, report, clock=trio.testing.MockClock(autojump_threshold=0))
    report["wall_s"] = round(time.perf_counter() - wall, 1)
    report["rss_mb"] = round(rss_mb(), 1)
    report["rss_mb_per_100k_nodes"] = round(report["rss_mb"] * 100_000 / run.population.nodes, 1)
    report["settings"] = {"population": asdict(run.population), "dht": {
        k: v for k, v in asdict(run.dht).items() if k not in ("bootstrap", "bind", "port")},
        "metadata": asdict(run.metadata)}
    return report
