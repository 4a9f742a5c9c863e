"""IPv6 endpoints in command output and policy messages are written ``[ip]:port`` (RFC 3986 host syntax), the
one form of :func:`p2pwatch.endpoints.format_addr`; IPv4 ones stay ``ip:port``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from p2pwatch import netguard
from p2pwatch.cli import main
from p2pwatch.cli.lookup import print_lookup
from p2pwatch.cli.probe_peer import human_text
from p2pwatch.cli.session import cli_session
from p2pwatch.errors import NetworkRefused
from p2pwatch.investigate.registry import upsert_torrent
from p2pwatch.probe.pex import PexPeer
from p2pwatch.probe.probe_result import ProbeResult
from p2pwatch.storage.ledger import ObservationRecord, append_observations

INFOHASH = bytes(range(20))


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--home", str(home), *args])


def test_the_policy_message_brackets_an_ipv6_destination() -> None:
    policy = netguard.NetworkPolicy.loopback_only()
    with pytest.raises(NetworkRefused, match=r"refuses \[2001:db8::1\]:6881$"):
        policy.check("2001:db8::1", 6881)
    with pytest.raises(NetworkRefused, match=r"refuses 8\.8\.8\.8:53$"):
        policy.check("8.8.8.8", 53)
    with pytest.raises(NetworkRefused, match=r"refuses 2001:db8::1$"):
        policy.check("2001:db8::1")


def test_probe_peer_shows_the_peer_and_its_pex_peers_bracketed() -> None:
    pex = (PexPeer("::1", 6881), PexPeer("127.0.0.5", 51413), PexPeer("2001:db8::7", 1))
    text = human_text(ProbeResult("::1", 7000, INFOHASH, level=1, pex_peers=pex))
    lines = text.splitlines()
    assert lines[0] == "peer        [::1]:7000"
    assert lines[-1] == "pex         3 peers listed (BEP 11): [::1]:6881, 127.0.0.5:51413, [2001:db8::7]:1"
    assert human_text(ProbeResult("127.0.0.2", 7000, INFOHASH)).splitlines()[0] == "peer        127.0.0.2:7000"


def test_probe_peer_names_how_many_pex_peers_it_did_not_show() -> None:
    pex = tuple(PexPeer(f"2001:db8::{i}", 6881) for i in range(1, 8))
    line = human_text(ProbeResult("127.0.0.2", 7000, INFOHASH, pex_peers=pex)).splitlines()[-1]
    assert line == ("pex         7 peers listed (BEP 11): [2001:db8::1]:6881, [2001:db8::2]:6881, "
                    "[2001:db8::3]:6881, [2001:db8::4]:6881, [2001:db8::5]:6881 and 2 more")


def test_lookup_table_brackets_an_ipv6_peer(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    peer = {"level": 0, "flagged": None, "sources": ["dht"], "client": None, "country": None, "asn": None}
    doc = {"infohash": INFOHASH.hex(), "name": None, "files": [], "dht_peers": 2, "trackers": [], "matches": [],
           "candidates": [], "notes": [],
           "peers": [{"ip": "::1", "port": 6881, **peer}, {"ip": "127.0.0.3", "port": 6882, **peer}]}
    print_lookup(doc)
    out = capsys.readouterr().out
    assert "[::1]:6881" in out and "127.0.0.3:6882" in out
    assert "::1:6881" not in out.replace("[::1]:6881", "")


def test_peers_table_brackets_an_ipv6_peer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    home = tmp_path / "home"
    assert run(home, "db", "upgrade").exit_code == 0
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with cli_session({"home": str(home)}) as session:
        torrent = upsert_torrent(session, INFOHASH, source="lookup")
        append_observations(session, [ObservationRecord(torrent.id, "::1", 6881, 0, "dht", at, reporter="x"),
                                      ObservationRecord(torrent.id, "127.0.0.3", 6882, 0, "dht", at, reporter="x")])
    result = run(home, "peers", INFOHASH.hex())
    assert result.exit_code == 0, result.output
    assert "[::1]:6881" in result.stdout and "127.0.0.3:6882" in result.stdout
    assert "::1:6881" not in result.stdout.replace("[::1]:6881", "")
