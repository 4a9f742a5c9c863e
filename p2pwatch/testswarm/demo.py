"""``p2pwatch demo``: the whole product, offline, on loopback, in about a minute.

Generates synthetic content (ffmpeg lavfi), registers it in a throwaway case and data directory, starts
the demo swarm (:mod:`p2pwatch.testswarm.demoswarm`), runs the monitor against it with live progress until every
registered copy is confirmed and its seeders are proven, prints the matches (method, bytes fetched), the
peers with their levels and the swarm status, then exports and verifies an evidence bundle.
Nothing leaves 127.0.0.0/8 (netguard is set to loopback only for the run).
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select

from p2pwatch import netguard
from p2pwatch.bundle import keys as keyfile
from p2pwatch.cli.reports import peer_rows
from p2pwatch.config import MonitorConfig
from p2pwatch.dht.node import DHTConfig
from p2pwatch.investigate.export import ExportRequest, export_case
from p2pwatch.investigate.registry import add_content, add_keywords, create_case
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.monitor.daemon import Monitor
from p2pwatch.storage.db import default_url, make_engine, upgrade_database, writer_sessionmaker
from p2pwatch.storage.models import Match, Observation, Torrent, Watch
from p2pwatch.testswarm.demoswarm import (
    KEYWORD,
    DemoContent,
    DemoSwarm,
    announce_absent_peer,
    open_demo_swarm,
    stop_demo_swarm,
)

CASE = "demo"
MONITOR_BIND = "127.0.44.100"
ABSENT_PEER_IP = "127.0.44.200"


@dataclass
class DemoResult:
    workdir: Path
    bundle: Path | None = None
    verified: bool = False
    seconds: float = 0.0
    matches: list[dict[str, Any]] = field(default_factory=list)
    peers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    triage: dict[str, int] = field(default_factory=dict)  # the monitor's triage and content counters
    exported: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> bundle.json torrent record


def demo_config() -> MonitorConfig:
    config = MonitorConfig()
    config.dht.allow_local = True
    config.dht.query_timeout = 2.0
    config.crawler.segments = 16
    config.crawler.sweep_interval = 5.0
    config.watcher.interval = 30.0
    config.probe.connect_timeout = 3.0
    config.probe.metadata_timeout = 10.0
    config.probe.piece_timeout = 15.0
    config.probe.encryption = "off"
    config.matcher.fetch_timeout = 60.0
    return config


def _progress(engine: Engine, demo: DemoSwarm) -> tuple[dict[str, str], set[str]]:
    """Which demo torrents are matched (label -> method) and which of those have a level-3 observation."""
    by_hash = {ident: t.label for t in demo.torrents for ident in t.dht_ids}
    with writer_sessionmaker(engine)() as session:
        matched = {by_hash.get(dht, dht): method for dht, method in session.execute(
            select(Torrent.dht_id, Match.method).join(Torrent, Torrent.id == Match.torrent_id))}
        proven = {by_hash.get(dht, dht) for (dht,) in session.execute(
            select(Torrent.dht_id).join(Observation, Observation.torrent_id == Torrent.id)
            .where(Observation.level >= 3).group_by(Torrent.dht_id))}
    return matched, proven


def _done(demo: DemoSwarm, matched: dict[str, str], proven: set[str]) -> bool:
    expected = {t.label for t in demo.torrents if t.expected}
    return expected <= set(matched) and expected <= proven


async def run_demo(workdir: Path, console: Console, *, timeout: float = 150.0) -> DemoResult:
    started = time.monotonic()
    result = DemoResult(workdir)
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)

    def lap(name: str) -> None:
        result.timings[name] = round(time.monotonic() - started, 1)

    console.print(f"[bold]p2pwatch demo[/bold] — offline, loopback only; working in {workdir}")
    content = await trio.to_thread.run_sync(DemoContent.generate, workdir / "content")
    lap("content generated")
    console.print("• generated synthetic videos with ffmpeg (lavfi mandelbrot/life/gradients; a cellauto decoy)")
    engine = make_engine(default_url(home))
    await trio.to_thread.run_sync(upgrade_database, engine)
    keyfile.save_key(keyfile.default_key_path(home), keyfile.generate_key())
    fingerprint = await trio.to_thread.run_sync(functools.partial(fingerprint_file, content.registered))
    with writer_sessionmaker(engine)() as session, session.begin():
        case = create_case(session, CASE, actor="demo")
        add_content(session, case, fingerprint, actor="demo")
        add_keywords(session, case, [KEYWORD])
    lap("registered")
    console.print(f"• case [bold]{CASE}[/bold]: registered the video as hashes only (sha256 "
                  f"{fingerprint.sha256[:16]}…, {len(fingerprint.media.frame_hashes) if fingerprint.media else 0} "
                  f"frame hashes) and the keyword {KEYWORD!r}; the file itself is not kept")
    demo = await open_demo_swarm(content)
    try:
        await announce_absent_peer(demo, ABSENT_PEER_IP, 9)
        lap("swarm up")
        console.print(f"• local swarm: {len(demo.sessions)} libtorrent DHT nodes on 127.0.44.2-9 seeding "
                      f"{len(demo.torrents)} torrents (exact, renamed multi-file, re-encoded, decoy, hybrid, v2), "
                      "and "
                      f"{ABSENT_PEER_IP}:9 listed in the DHT with nothing listening")
        await _monitor(engine, demo, home, console, result, timeout, lap)
        await _report(engine, demo, home, console, result, lap)
    finally:
        await trio.to_thread.run_sync(stop_demo_swarm, demo)
        engine.dispose()
    result.seconds = round(time.monotonic() - started, 1)
    console.print(f"\n[bold]done in {result.seconds:g} s[/bold]; every libtorrent session is stopped.")
    return result


async def _monitor(engine: Engine, demo: DemoSwarm, home: Path, console: Console, result: DemoResult,
                   timeout: float, lap: Any) -> None:
    config = demo_config()
    bootstrap = tuple((s.ip, s.port) for s in demo.sessions[5:8])
    dht = DHTConfig(bind_host=MONITOR_BIND, bind_port=0, bootstrap=bootstrap, allow_local=True,
                    state_file=home / "dht-node.json", query_timeout=2.0, short_timeout=0.5)
    monitor = Monitor(config, engine, dht, home=home, bind_ip=MONITOR_BIND)
    console.print("• monitor: crawling the DHT (BEP 51 samples + passive capture), fetching metadata, matching…")
    seen: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run, timeout)
        deadline = trio.current_time() + timeout
        while trio.current_time() < deadline:
            await trio.sleep(1.0)
            matched, proven = await trio.to_thread.run_sync(_progress, engine, demo)
            for label, method in matched.items():
                if label not in seen:
                    seen[label] = method
                    lap(f"match {label}")
                    console.print(f"  [green]✔[/green] match: {label} copy confirmed by {method} "
                                  f"({time.strftime('%H:%M:%S')})")
            if _done(demo, matched, proven):
                lap("all matches confirmed and seeders proven")
                break
        nursery.cancel_scope.cancel()
    result.triage = {name: int(value) for name, value in monitor.metrics.counters.items()
                     if name.startswith(("p2pwatch_triage_", "p2pwatch_content_"))}
    console.print(f"• monitor stopped cleanly ({monitor.state.checked} torrents' metadata checked)")


async def _report(engine: Engine, demo: DemoSwarm, home: Path, console: Console, result: DemoResult,
                  lap: Any) -> None:
    by_hash = {ident: t for t in demo.torrents for ident in t.dht_ids}
    with writer_sessionmaker(engine)() as session:
        table = Table(title="matches")
        for column in ("torrent", "file", "method", "bytes fetched", "expected"):
            table.add_column(column)
        for match, torrent in session.execute(select(Match, Torrent).join(Torrent, Torrent.id == Match.torrent_id)):
            demo_torrent = by_hash.get(torrent.dht_id)
            row: dict[str, Any] = {"label": demo_torrent.label if demo_torrent else torrent.dht_id,
                                   "file": match.file_path,
                   "method": match.method, "bytes_fetched": match.bytes_fetched,
                   "expected": demo_torrent.expected if demo_torrent else None}
            result.matches.append(row)
            table.add_row(row["label"], row["file"] or "", row["method"], f"{row['bytes_fetched']:,}",
                          str(row["expected"]))
        console.print(table)
        peers = Table(title="peers (0 listed · 1 connected · 2 advertised · 3 served a verified piece)")
        for column in ("torrent", "peer", "level", "sources", "status"):
            peers.add_column(column)
        for torrent in session.execute(select(Torrent).order_by(Torrent.id)).scalars():
            label = by_hash[torrent.dht_id].label if torrent.dht_id in by_hash else torrent.dht_id[:12]
            watch = session.execute(select(Watch).where(Watch.torrent_id == torrent.id)).scalar_one_or_none()
            status = (watch.status if watch and watch.status else "unknown")
            result.status[label] = status
            rows = peer_rows(session, torrent, 0)
            result.peers[label] = rows
            for r in rows:
                peers.add_row(label, f"{r['ip']}:{r['port']}", f"{r['level']} {r['level_name']}",
                              ",".join(r["sources"]), status)
        console.print(peers)
        count = session.scalar(select(func.count()).select_from(Observation))
        console.print(f"{count} observations in the hash chain")
    bundle = home.parent / "demo-evidence.zip"
    with writer_sessionmaker(engine)() as session, session.begin():
        summary = export_case(session, ExportRequest(CASE, bundle, home, None, demo_config().digest()))
    lap("bundle exported")
    from evidence.verify import verify_bundle

    verdict = await trio.to_thread.run_sync(verify_bundle, bundle)
    result.bundle = bundle
    result.verified = verdict.exit_code == 0
    result.exported = _exported_torrents(bundle, by_hash)
    lap("bundle verified")
    console.print(f"• evidence bundle: {bundle} ({summary.size:,} bytes, {summary.observations} observations, "
                  f"{summary.distribution_peers} peers at level 3–4, key {summary.key_fingerprint[:16]}…)")
    for label, record in sorted(result.exported.items()):
        layers = record.get("piece_layers", {})
        held = f"; piece layers held for {len(layers['present'])} file(s)" if layers.get("present") else ""
        held += f"; not held for {len(layers['missing'])} file(s)" if layers.get("missing") else ""
        console.print(f"    {label}: {record['version']} torrent as {record['file']} ({record['metainfo']}{held})")
    for check in verdict.checks:
        console.print(f"    {check.status:>4}  {check.name}")
    console.print(f"• verify: {'[green]bundle intact[/green]' if result.verified else '[red]FAILED[/red]'} — "
                  f"police can run `python -m evidence verify {bundle.name}` with the standard library alone")


def _exported_torrents(bundle: Path, by_hash: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """bundle.json's torrent records by demo label: what metainfo each copy was exported with."""
    with zipfile.ZipFile(bundle) as z:
        records = json.loads(z.read("bundle.json"))["torrents"]
    return {by_hash[r["infohash"]].label if r["infohash"] in by_hash else r["infohash"]: r for r in records}


def main_demo(workdir: Path | None, keep: bool, timeout: float = 150.0) -> DemoResult:
    console = Console()
    netguard.set_policy(netguard.NetworkPolicy.loopback_only())
    if workdir is not None:
        return trio.run(functools.partial(run_demo, workdir, console, timeout=timeout))
    tmp = tempfile.mkdtemp(prefix="p2pwatch-demo-")
    return trio.run(functools.partial(run_demo, Path(tmp), console, timeout=timeout))
