"""The monitor's metadata stage: what a peer listed over ut_pex (BEP 11) while it handed over the metadata
is recorded with the match, as level-0 listings whose reporter is that peer (issue 12, item 4)."""

from __future__ import annotations

from typing import Any

from p2pwatch.dht.node import DHTConfig
from p2pwatch.investigate.geoip import GeoLookup
from p2pwatch.match.matcher import Match, MatchReport
from p2pwatch.monitor.alerts import Alerter
from p2pwatch.monitor.daemon import Monitor, MonitorState
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.monitor.pipeline import OK, FetchAttempt, MetadataOutcome
from p2pwatch.probe.pex import PexPeer
from p2pwatch.probe.probe_result import ProbeResult
from p2pwatch.storage.ledger import ObservationRecord
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.metainfo import parse_info

INFOHASH = b"\x07" * 20


class RecordingWriter:
    """The writer's two calls that ``_finish`` makes: the match row (torrent id 7) and the observations."""

    def __init__(self) -> None:
        self.records: list[ObservationRecord] = []

    async def run(self, fn: Any) -> int:
        return 7

    async def write_many(self, records: list[ObservationRecord]) -> None:
        self.records.extend(records)


async def test_peers_listed_over_pex_during_the_metadata_stage_are_recorded() -> None:
    monitor = Monitor.__new__(Monitor)
    monitor.metrics, monitor.state, monitor.geo = Metrics(), MonitorState(), GeoLookup(None)
    monitor.alerter = Alerter()
    monitor.dht_config = DHTConfig(allow_local=False)
    writer = RecordingWriter()
    monitor.writer = writer  # type: ignore[assignment]
    metainfo = parse_info(bencoding.encode({b"name": b"x", b"piece length": 16384, b"length": 1,
                                            b"pieces": b"\x00" * 20}))
    probe = ProbeResult("203.0.113.5", 6881, INFOHASH, level=2, metadata_verified=True,
                        pex_peers=(PexPeer("1.2.3.4", 51413), PexPeer("10.0.0.3", 6881)))
    outcome = MetadataOutcome(INFOHASH, OK, metainfo, "direct", peers={("203.0.113.5", 6881): {("192.0.2.1", 6881)}},
                              attempts=[FetchAttempt(("203.0.113.5", 6881), OK, metainfo, probe)])
    report = MatchReport(INFOHASH.hex(), matches=[Match("case-1", "c1", INFOHASH.hex(), 0, "x", "exact-file", {}, 0)])
    await monitor._finish(INFOHASH, metainfo, outcome, report)
    by_peer = {(r.ip, r.port, r.source): r for r in writer.records}
    pex = by_peer[("1.2.3.4", 51413, "pex")]
    assert pex.level == 0 and pex.reporter == "203.0.113.5:6881"
    assert ("203.0.113.5", 6881, "dht") in by_peer  # the DHT listing and the probe itself are still there
    assert not any(r.ip == "10.0.0.3" for r in writer.records)  # private, from PEX: not stored
