"""``p2pwatch dht peers`` / ``dht sample``: real runs against a libtorrent swarm, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from p2pwatch.cli import main
from tests.conftest import free_port, loopback_address, require_component

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, random_torrent
except ImportError:  # pragma: no cover
    lt = None


def _cli(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, P2PWATCH_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "p2pwatch", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.interop
def test_dht_peers_and_sample_against_libtorrent(tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None)
    data, torrent, raw_infohash = random_torrent(tmp_path, 100_000)
    infohash = raw_infohash.hex()
    with LocalSwarm(tmp_path) as swarm:
        sessions = [swarm.start_session(loopback_address()) for _ in range(8)]
        for s in sessions[:2]:
            swarm.seed(s, torrent, data)
        swarm.start_dht(min_nodes=4)
        net = [f"--bootstrap={sessions[3].ip}:{sessions[3].port}", "--allow-local", f"--bind={loopback_address()}",
               "--timeout=15"]
        want = {f"{s.ip}:{s.port}" for s in sessions[:2]}
        rows: list[dict[str, object]] = []
        for _ in range(10):
            proc = _cli(["dht", "peers", infohash, "--json", *net], tmp_path / "home")
            assert proc.returncode == 0, proc.stderr
            rows = json.loads(proc.stdout)
            if want <= {f"{r['ip']}:{r['port']}" for r in rows}:
                break
            time.sleep(1)
        assert want <= {f"{r['ip']}:{r['port']}" for r in rows}
        assert all(r["reported_by"] for r in rows)
        # text mode streams one line per peer as its first listing arrives, then a count
        proc = _cli(["dht", "peers", infohash, *net], tmp_path / "home")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        streamed = {line.split()[0] for line in lines if "  reported by " in line}
        assert want <= streamed and lines[-1] == f"{len(streamed)} peers for {infohash}"
        magnet = f"magnet:?xt=urn:btih:{infohash}&dn=a.bin"
        proc = _cli(["dht", "peers", magnet, "--json", *net], tmp_path / "home")
        assert proc.returncode == 0 and json.loads(proc.stdout)
        proc = _cli(["dht", "sample", "--duration", "6", "--json", *net], tmp_path / "home")
        assert proc.returncode == 0, proc.stderr
        assert infohash in {r["infohash"] for r in json.loads(proc.stdout)}


def _run(args: list[str], home: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("bad", ["xyz", "0" * 39, "magnet:?dn=nothing", "g" * 40])
def test_malformed_infohash_is_one_line_exit_2(tmp_path: Path, bad: str) -> None:
    code, out, err = _run(["dht", "peers", bad, "--bootstrap", "127.0.0.1:1", "--allow-local"], tmp_path)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "not an infohash" in err
    assert "Traceback" not in err


def test_unreachable_bootstrap_is_one_line_exit_1(tmp_path: Path) -> None:
    ip = loopback_address()
    port = free_port(ip)
    code, out, err = _run(["dht", "peers", "a" * 40, "--bootstrap", f"{ip}:{port}", "--allow-local",
                           f"--bind={loopback_address()}", "--timeout", "3"], tmp_path)
    assert code == 1, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "bootstrap" in err


def test_bad_bootstrap_syntax_and_duration(tmp_path: Path) -> None:
    code, _, err = _run(["dht", "peers", "a" * 40, "--bootstrap", "127.0.0.1:notaport"], tmp_path)
    assert code == 2 and "port" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["dht", "sample", "--duration", "0", "--bootstrap", "127.0.0.1:1"], tmp_path)
    assert code == 2 and "--duration" in err


def test_public_bootstrap_is_refused_by_netguard_in_tests(tmp_path: Path) -> None:
    code, _, err = _run(["dht", "peers", "a" * 40, "--bootstrap", "8.8.8.8:6881", "--timeout", "3",
                         f"--bind={loopback_address()}"], tmp_path)
    assert code == 1
    assert "bootstrap" in err and "Traceback" not in err
