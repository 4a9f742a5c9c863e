"""Benchmark the evidence store: observations per second through the writer, on SQLite and PostgreSQL.

Prints a table of medians over ``--runs`` runs, each into a fresh database:

* ``writer``: records handed to the trio writer (``write_many`` in chunks of ``--chunk``), batched commits
  of up to ``--batch`` rows, seq and both SHA-256 of the chain computed in the writer, peers upserted,
  transcripts stored, until ``flush()`` returns. Goal: >= 50,000/s on SQLite, >= 20,000/s on PostgreSQL.
* ``raw executemany``: the same rows (same columns, hashes left empty) inserted with the driver's
  executemany in the same batch sizes, without the chain, peers or transcripts: the baseline.
* ``iter`` / ``verify``: streaming the table back with ``iter_observations`` and recomputing the chain
  with ``verify_chain``, rows per second.

Two mixes: ``leads`` (level-0 DHT/tracker listings only) and ``mixed`` (10 % level 1-3 probes carrying a
~300-byte transcript). Peer addresses repeat over ``--peers`` distinct addresses, as a watched swarm does.
SQLite runs with the store's settings (WAL, synchronous=FULL). PostgreSQL is a throwaway server started
from Debian's binaries (tests/pg.py) with fsync on, unless ``--pg-url`` names a database to use (its
observations table must be empty).

Usage: python scripts/bench_store.py [--count 200000] [--runs 3] [--batch 5000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pwatch.storage.db import make_engine, session_factory, upgrade_database
from p2pwatch.storage.ledger import ObservationRecord, iter_observations, verify_chain
from p2pwatch.storage.models import Torrent
from p2pwatch.storage.writer import open_writer

T0 = datetime(2024, 1, 1, tzinfo=UTC)
GOALS = {"sqlite": 50_000, "postgresql": 20_000}


def make_records(count: int, torrent_id: int, peers: int, mixed: bool) -> list[ObservationRecord]:
    records = []
    for n in range(count):
        p = n % peers
        probe = mixed and n % 10 == 0
        level = 1 + n % 3 if probe else 0
        records.append(ObservationRecord(
            torrent_id=torrent_id, ip=f"10.{p // 65536 % 256}.{p // 256 % 256}.{p % 256}", port=6881 + p % 1000,
            level=level, source="probe" if probe else ("dht" if n % 2 else "tracker"),
            observed_at=T0 + timedelta(milliseconds=n),
            reporter=None if probe else ("192.0.2.1:6881" if n % 2 else "udp://tracker.example:1337/announce"),
            client="qBittorrent 4.6.2" if probe else None, peer_id=f"2d7142343632302d{p:024x}" if probe else None,
            have_fraction=0.5 if level >= 2 else None,
            transcript=[{"t": n, "event": "handshake", "reserved": "0000000000100005"},
                        {"event": "bitfield", "pieces": 812, "have": 406},
                        {"event": "extended", "client": "qBittorrent/4.6.2", "metadata_size": 21877}]
            if probe else None))
    return records


class Database:
    """A fresh, migrated database per run."""

    def __init__(self, backend: str, workdir: Path, pg: Any) -> None:
        self.backend, self.workdir, self.pg = backend, workdir, pg
        self.runs = 0

    def fresh(self) -> str:
        self.runs += 1
        if self.backend == "sqlite":
            url = f"sqlite:///{self.workdir / f'bench{self.runs}.db'}"
        elif isinstance(self.pg, str):
            return self.pg
        else:
            url = self.pg.create_database(f"bench{self.runs}")
        engine = make_engine(url)
        upgrade_database(engine)
        engine.dispose()
        return url


def add_torrent(url: str) -> int:
    engine = make_engine(url)
    with session_factory(engine)() as session, session.begin():
        torrent = Torrent(dht_id="ab" * 20, first_seen=T0, source="bench")
        session.add(torrent)
        session.flush()
        tid = torrent.id
    engine.dispose()
    return tid


def run_writer(url: str, records: list[ObservationRecord], batch: int, chunk: int) -> float:
    engine = make_engine(url)

    async def main() -> float:
        async with open_writer(engine, batch_size=batch) as writer:
            start = time.perf_counter()
            for i in range(0, len(records), chunk):
                await writer.write_many(records[i:i + chunk])
            last = await writer.flush()
            elapsed = time.perf_counter() - start
        assert last == len(records), (last, len(records))
        return elapsed

    try:
        return len(records) / trio.run(main)
    finally:
        engine.dispose()


def run_raw(url: str, records: list[ObservationRecord], batch: int) -> float:
    engine = make_engine(url)
    columns = ("seq", "torrent_id", "ip", "port", "reporter", "addr_salt", "addr_digest", "level", "source", "client",
               "peer_id", "have_fraction", "transcript_id", "observed_at", "prev_hash", "row_hash")
    sqlite = engine.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    sql = f"INSERT INTO observations ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    rows = [(n + 1, r.torrent_id, r.ip, r.port, r.reporter, "", "", r.level, r.source, r.client, r.peer_id,
             r.have_fraction, None,
             r.observed_at.replace(tzinfo=None).isoformat(sep=" ") if sqlite else r.observed_at.replace(tzinfo=None),
             "", "") for n, r in enumerate(records)]
    try:
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            with engine.begin() as conn:
                conn.exec_driver_sql(sql, rows[i:i + batch])
        return len(rows) / (time.perf_counter() - start)
    finally:
        engine.dispose()


def read_rates(url: str) -> tuple[float, float]:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            start = time.perf_counter()
            count = sum(1 for _ in iter_observations(session))
            iter_rate = count / (time.perf_counter() - start)
            start = time.perf_counter()
            report = verify_chain(session)
            verify_rate = report.checked / (time.perf_counter() - start)
        assert report.ok
        return iter_rate, verify_rate
    finally:
        engine.dispose()


def median_of(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5_000, help="most rows per commit")
    parser.add_argument("--chunk", type=int, default=1_000, help="records per write_many call")
    parser.add_argument("--peers", type=int, default=10_000, help="distinct peer addresses")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=None, help="use this PostgreSQL database instead of a throwaway one")
    args = parser.parse_args()

    server = None
    pg: Any = args.pg_url
    backends = args.backends.split(",")
    if "postgresql" in backends and pg is None:
        from tests.pg import TemporaryPostgres, find_postgres_bin

        bin_dir = find_postgres_bin()
        if bin_dir is None:
            sys.exit("PostgreSQL binaries not found; install Debian's postgresql package or pass --pg-url")
        server = TemporaryPostgres(bin_dir, fsync=True)
        server.start()
        pg = server
    lines = []
    try:
        with tempfile.TemporaryDirectory(prefix="p2pwatch-bench-") as tmp:
            for backend in backends:
                db = Database(backend, Path(tmp), pg)
                for mix in ("leads", "mixed"):
                    start = time.perf_counter()
                    sample = make_records(args.count, 1, args.peers, mix == "mixed")
                    make_rate = args.count / (time.perf_counter() - start)
                    last_url = ""

                    def writer_once(sample: list[ObservationRecord] = sample, db: Database = db) -> float:
                        nonlocal last_url
                        last_url = db.fresh()
                        add_torrent(last_url)
                        return run_writer(last_url, sample, args.batch, args.chunk)

                    def raw_once(sample: list[ObservationRecord] = sample, db: Database = db) -> float:
                        url = db.fresh()
                        add_torrent(url)
                        return run_raw(url, sample, args.batch)

                    writer_rate = median_of(args.runs, writer_once)
                    iter_rate, verify_rate = read_rates(last_url)
                    raw_rate = median_of(args.runs, raw_once)
                    lines.append((backend, mix, writer_rate, raw_rate, GOALS[backend], iter_rate, verify_rate,
                                  make_rate))
                    print(f"  {backend}/{mix}: writer {writer_rate:,.0f}/s, raw {raw_rate:,.0f}/s", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()

    print(f"observations per second, median of {args.runs} runs of {args.count:,} rows "
          f"(batch {args.batch}, {args.peers:,} distinct peers)")
    header = ("backend", "mix", "writer (chain)", "raw executemany", "goal", "writer/goal", "iter", "verify",
              "records built")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for backend, mix, writer_rate, raw_rate, goal, iter_rate, verify_rate, make_rate in lines:
        print(f"{backend} | {mix} | {writer_rate:,.0f} | {raw_rate:,.0f} | {goal:,} | "
              f"{'ok' if writer_rate >= goal else 'MISSED'} {writer_rate / goal:.2f}x | {iter_rate:,.0f} | "
              f"{verify_rate:,.0f} | {make_rate:,.0f}")


if __name__ == "__main__":
    main()
