"""``p2pwatch demo`` (docs/CLI.md)."""

from __future__ import annotations

from pathlib import Path

import click

from p2pwatch.cli.options import emit_json, fail, handle_errors


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where to put the throwaway data directory and the bundle (default: a new temporary directory)")
@click.option("--timeout", type=float, default=150.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary at the end")
@handle_errors
def demo(workdir: Path | None, timeout: float, as_json: bool) -> None:
    """Offline demonstration on loopback: content, registry, swarm, monitor, matches, peers, bundle."""
    from p2pwatch.testswarm.demo import main_demo

    result = main_demo(workdir, keep=True, timeout=timeout)
    if as_json:
        emit_json({"workdir": str(result.workdir), "bundle": str(result.bundle), "verified": result.verified,
                   "seconds": result.seconds, "matches": result.matches, "status": result.status,
                   "timings": result.timings,
                   "exported": {k: {"file": v["file"], "version": v["version"], "metainfo": v["metainfo"]}
                                for k, v in result.exported.items()},
                   "peers": {k: [{"ip": p["ip"], "port": p["port"], "level": p["level"], "sources": p["sources"]}
                                 for p in v] for k, v in result.peers.items()}})
    if not result.verified:
        fail("the demo's evidence bundle did not verify", 1)
