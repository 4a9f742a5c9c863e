"""BEP 11 against real libtorrent: a probe of ONE seeder of a meshed loopback swarm hears of all the others
over ut_pex, and an examination that knows only that seeder records the others as PEX listings with it as
their source, then probes them to level 3."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from p2pwatch.config import ProbeSettings
from p2pwatch.investigate.examine import Examination, observation_records, probe_listed, probe_pex_listed
from p2pwatch.probe.peer_probe import ProbeTimeouts, probe_peer
from p2pwatch.probe.pex import PexFlags
from p2pwatch.torrent.metainfo import parse_torrent
from tests.conftest import require_component
from tests.pex_swarm import pex_swarm

try:
    import libtorrent as lt
except ImportError:  # pragma: no cover - depends on the machine
    lt = None

pytestmark = pytest.mark.interop


async def test_probe_of_one_libtorrent_seeder_lists_the_others(tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None)
    with pex_swarm(tmp_path, count=4) as swarm:
        first, others = swarm.endpoints[0], set(swarm.endpoints[1:])
        with trio.fail_after(60):
            result = await probe_peer(*first, swarm.infohash, metainfo=parse_torrent(swarm.torrent),
                                      timeouts=ProbeTimeouts(pex=20.0))
    assert result.error is None and result.level == 3
    assert {p.endpoint for p in result.pex_peers} == others  # listen ports, not the ephemeral ones
    assert all(p.flags & PexFlags.SEED for p in result.pex_peers)
    assert any(e.message == "ut_pex" for e in result.transcript)


async def test_examination_records_and_reaches_the_pex_listed_seeders(tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None)
    settings = ProbeSettings(pex_wait=20.0)
    with pex_swarm(tmp_path, count=4) as swarm:
        metainfo = parse_torrent(swarm.torrent)
        first = swarm.endpoints[0]
        exam = Examination(swarm.infohash, datetime.now(UTC))
        exam.add_listing(first, "tracker", "http://127.0.0.1:1/announce")
        with trio.fail_after(90):
            await probe_listed(exam, metainfo, settings, limit=20, pieces_budget=5)
            await probe_pex_listed(exam, metainfo, settings, limit=19, pieces_budget=5, allow_local=True)
        exam.finished_at = datetime.now(UTC)
    reporter = f"{first[0]}:{first[1]}"
    for peer in swarm.endpoints[1:]:
        assert ("pex", reporter) in exam.listed[peer], exam.listed
    best = {(p.ip, p.port): p.level for p in exam.probes}
    assert sorted(best) == sorted(swarm.endpoints)  # each seeder probed once
    assert set(best.values()) == {3}, [(p.ip, p.port, p.level, p.error) for p in exam.probes]
    records = observation_records(1, exam)
    pex = sorted((r.ip, r.port) for r in records if r.source == "pex" and r.reporter == reporter)
    assert pex == sorted(swarm.endpoints[1:])


def test_cli_probe_peer_shows_the_pex_listed_peers(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    import p2pwatch.cli.probe_peer  # noqa: F401 - registers ``probe peer``
    from p2pwatch.cli import main

    require_component("libtorrent", lt is not None)
    with pex_swarm(tmp_path, count=3) as swarm:
        (ip, port), others = swarm.endpoints[0], swarm.endpoints[1:]
        args = ["probe", "peer", f"{ip}:{port}", swarm.infohash.hex(), "--allow-local", "--no-piece",
                "--pex-wait", "20"]
        runner = CliRunner()
        as_json = runner.invoke(main, [*args, "--json"])
        human = runner.invoke(main, args)
    assert as_json.exit_code == 0, as_json.output
    listed = {(p["ip"], p["port"]) for p in json.loads(as_json.stdout)["pex_peers"]}
    assert listed == set(others)
    assert human.exit_code == 0 and "pex         2 peers listed (BEP 11): " in human.output, human.output
    assert all(f"{h}:{p}" in human.output for h, p in others)
