#!/usr/bin/env python3
"""DHT benchmarks (issue 2). Prints one table; loopback only, no timed assertions anywhere.

1. KRPC throughput: p2pwatch's node (one process, one core) answers a mix of ping / find_node / get_peers /
   announce_peer queries sent by a load generator in a second process from 16 loopback source addresses.
   Baseline in the same run: a bare trio UDP echo loop on the same socket code (receive + send only), and
   the decode rate alone of bencode.py (the old path) against krpc's dedicated decoder (the one it uses).
2. Simulated 100,000-node DHT with 10 % silent nodes: 1,000 get_peers lookups (p2pwatch.dht.simulation).
3. Crawler dedup memory for 10,000,000 infohashes (p2pwatch.dht.dedup), against a plain Python set of
   1,000,000 as the baseline.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import socket
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from p2pwatch import netguard
from p2pwatch.dht import krpc
from p2pwatch.dht.node import DHTConfig, open_dht_node
from p2pwatch.dht.nodeinfo import NodeInfo

SERVER_IP = "127.0.9.1"
CLIENT_IPS = [f"127.0.9.{i}" for i in range(10, 26)]


def _queries(count: int) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for i in range(count):
        tid = i.to_bytes(4, "big")
        sender = rng.randbytes(20)
        kind = i % 4
        if kind == 0:
            q: krpc.Query = krpc.Ping(tid, sender)
        elif kind == 1:
            q = krpc.FindNode(tid, sender, rng.randbytes(20))
        elif kind == 2:
            q = krpc.GetPeers(tid, sender, rng.randbytes(20))
        else:
            q = krpc.GetPeers(tid, sender, rng.randbytes(20), scrape=True)
        out.append(krpc.encode(q))
    return out


def _generator(server: tuple[str, int], duration: float, window: int, result: mp.Queue) -> None:  # type: ignore[type-arg]
    """Keep ``window`` queries in flight per socket; count replies."""
    socks = []
    for ip in CLIENT_IPS:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        s.setblocking(False)
        socks.append(s)
    payloads = _queries(4096)
    sent = received = 0
    outstanding = [0] * len(socks)
    deadline = time.monotonic() + duration
    i = 0
    while time.monotonic() < deadline:
        progress = False
        for n, s in enumerate(socks):
            while outstanding[n] < window:
                try:
                    s.sendto(payloads[i % len(payloads)], server)
                except BlockingIOError:
                    break
                i += 1
                sent += 1
                outstanding[n] += 1
                progress = True
            while True:
                try:
                    s.recvfrom(2048)
                except BlockingIOError:
                    break
                received += 1
                outstanding[n] -= 1
                progress = True
        if not progress:
            # replies lost (buffer overflow) would stall the window forever: reset it slowly
            time.sleep(0.001)
            outstanding = [max(0, o - 1) for o in outstanding]
    result.put((sent, received))


async def _serve_echo(ready: trio.Event, stop: trio.Event, counter: list[int]) -> None:
    sock = await netguard.open_udp_socket(SERVER_IP, 0)
    counter.append(sock.getsockname()[1])
    ready.set()
    async with trio.open_nursery() as nursery:

        async def loop() -> None:
            while True:
                handled = 0
                while handled < 64:
                    item = sock.try_recvfrom(2048)
                    if item is None:
                        break
                    handled += 1
                    counter[0] += 1
                    if not sock.try_sendto(item[0], item[1]):
                        await sock.sendto(item[0], item[1])
                if handled < 64:
                    await sock.wait_readable()
                else:
                    await trio.lowlevel.checkpoint()

        nursery.start_soon(loop)
        await stop.wait()
        nursery.cancel_scope.cancel()
    sock.close()


def _measure(server_kind: str, duration: float) -> tuple[float, float]:
    """Queries answered per second by the server (node or echo) in this process: per second of wall clock,
    and per second of this process's CPU time (the core it had, whatever else ran on the machine)."""
    queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    answered: list[int] = [0]

    async def main() -> tuple[float, float]:
        if server_kind == "echo":
            ready, stop = trio.Event(), trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_echo, ready, stop, answered)
                await ready.wait()
                port = answered[1]
                rate = await _drive((SERVER_IP, port), lambda: answered[0], duration, queue)
                stop.set()
                return rate
        config = DHTConfig(bind_host=SERVER_IP, bind_port=0, allow_local=True, inbound_rate=1e9,
                           maintenance_interval=3600)
        async with open_dht_node(config, bootstrap=False) as node:
            rng = random.Random(3)
            for _ in range(300):  # a realistic routing table so find_node/get_peers return 8 nodes
                ip = f"127.1.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                node.table.heard_from(NodeInfo(rng.randbytes(20), ip, rng.randrange(1024, 65535)),
                                      trio.current_time(), responded=True)
            return await _drive(node.address, lambda: node.stats.queries_in, duration, queue)

    return trio.run(main)


async def _drive(server: tuple[str, int], count: object, duration: float,
                 queue: mp.Queue) -> tuple[float, float]:  # type: ignore[type-arg]
    proc = mp.get_context("fork").Process(target=_generator, args=(server, duration, 64, queue))
    get = count  # callable returning the served count
    proc.start()
    await trio.sleep(0.5)
    start_n, start_t, start_cpu = get(), time.perf_counter(), time.process_time()  # type: ignore[operator]
    await trio.sleep(duration - 1.0)
    end_n, end_t, end_cpu = get(), time.perf_counter(), time.process_time()  # type: ignore[operator]
    await trio.to_thread.run_sync(proc.join)
    queue.get()
    return (end_n - start_n) / (end_t - start_t), (end_n - start_n) / max(end_cpu - start_cpu, 1e-9)


def bench_throughput(runs: int, duration: float) -> list[tuple[str, str, str]]:
    node_runs: list[tuple[float, float]] = []
    echo_runs: list[tuple[float, float]] = []
    for _ in range(runs):  # node and echo runs alternate, so each pair saw about the same machine load
        node_runs.append(_measure("node", duration))
        echo_runs.append(_measure("echo", duration))
    node_rates, node_cpu = [r[0] for r in node_runs], [r[1] for r in node_runs]
    echo_rates, echo_cpu = [r[0] for r in echo_runs], [r[1] for r in echo_runs]
    ratios = [n / e for n, e in zip(node_rates, echo_rates, strict=True)]
    nodes = tuple(NodeInfo(os.urandom(20), "1.2.3.4", 6881) for _ in range(8))
    values = tuple(("5.6.7.8", 1000 + i) for i in range(8))
    reply = krpc.encode(krpc.Response(b"aa", os.urandom(20), nodes=nodes, values=values, token=b"12345678"))
    query = _queries(3)[2]  # a get_peers query, as the node receives them
    decode_rates = {name: (_decode_rate(decode, reply), _decode_rate(decode, query))
                    for name, decode in _DECODERS.items()}
    return [
        ("KRPC queries answered/s, p2pwatch node (median)", f"{statistics.median(node_rates):,.0f}",
         "goal >= 25,000; runs: " + ", ".join(f"{r:,.0f}" for r in node_rates)),
        ("same, per CPU-second of the node process (median)", f"{statistics.median(node_cpu):,.0f}",
         "CPU time includes sys; runs: " + ", ".join(f"{r:,.0f}" for r in node_cpu)),
        ("node rate / echo rate of the same round (median)", f"{statistics.median(ratios):.3f}",
         "less swayed than either rate by other work on the machine; runs: "
         + ", ".join(f"{r:.3f}" for r in ratios)),
        ("baseline: bare UDP echo, same socket loop (median)", f"{statistics.median(echo_rates):,.0f}",
         "runs: " + ", ".join(f"{r:,.0f}" for r in echo_rates)),
        ("baseline: bare UDP echo, per CPU-second (median)", f"{statistics.median(echo_cpu):,.0f}",
         "runs: " + ", ".join(f"{r:,.0f}" for r in echo_cpu)),
    ] + [
        (f"{name} of a get_peers reply /s (query /s)", f"{rates[0]:,.0f}", f"query: {rates[1]:,.0f}/s; one core")
        for name, rates in decode_rates.items()
    ]


def _bencode_py_decode(data: bytes) -> object:
    from p2pwatch import limits
    from p2pwatch.torrent import bencoding

    return bencoding.decode(data, max_size=limits.MAX_DATAGRAM, max_depth=limits.MAX_KRPC_DEPTH)


def _fast_decode(data: bytes) -> object:
    from p2pwatch.dht import krpc_bdecode

    return krpc_bdecode.decode(data)


#: the old decode path (bencode.py through p2pwatch.torrent.bencoding) against the one krpc uses now
_DECODERS = {"baseline: bencode.py decode": _bencode_py_decode, "krpc fast decode (krpc_bdecode)": _fast_decode}


def _decode_rate(decode: object, data: bytes, n: int = 20000) -> float:
    assert callable(decode)
    decode(data)
    t = time.perf_counter()
    for _ in range(n):
        decode(data)
    return n / (time.perf_counter() - t)


def bench_simulation(nodes: int, lookups: int) -> list[tuple[str, str, str]]:
    from p2pwatch.dht.simulation import benchmark_lookups

    stats = benchmark_lookups(n_nodes=nodes, silent_fraction=0.1, lookups=lookups, seed=1)
    rows = []
    for key, value in stats.items():
        rows.append((f"simulated {nodes:,} nodes, 10% silent: {key}", f"{value:,.3f}" if isinstance(value, float)
                     else f"{value}", ""))
    return rows


def bench_dedup(count: int) -> list[tuple[str, str, str]]:
    from p2pwatch.dht.dedup import InfohashDedup

    tracemalloc.start()
    dedup = InfohashDedup()
    rng = random.Random(5)
    t = time.perf_counter()
    for _ in range(count):
        dedup.add(rng.randbytes(20))
    dedup.flush()
    elapsed = time.perf_counter() - t
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    baseline = {rng.randbytes(20) for _ in range(1_000_000)}
    base_current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del baseline
    return [
        (f"crawler dedup, {count:,} infohashes: memory held", f"{current / 1e6:,.1f} MB",
         f"goal <= 100 MB; peak during merges {peak / 1e6:,.1f} MB; {count / elapsed:,.0f} adds/s"),
        ("baseline: Python set of 1,000,000 infohashes", f"{base_current / 1e6:,.1f} MB",
         f"(x10 would be ~{base_current * 10 / 1e6:,.0f} MB)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--sim-nodes", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--dedup", type=int, default=10_000_000)
    parser.add_argument("--only", choices=["throughput", "simulation", "dedup"], default=None)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    if args.only in (None, "throughput"):
        rows += bench_throughput(args.runs, args.duration)
    if args.only in (None, "simulation"):
        rows += bench_simulation(args.sim_nodes, args.lookups)
    if args.only in (None, "dedup"):
        rows += bench_dedup(args.dedup)
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | value | notes |")
    print(f"|{'-' * (width + 2)}|-------|-------|")
    for name, value, note in rows:
        print(f"| {name:<{width}} | {value} | {note} |")


if __name__ == "__main__":
    main()
