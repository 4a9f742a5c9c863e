"""Issue 10, "Beyond": states the network produces that the code between discovery and export assumed away.

Each test puts the code in one such state and checks what it now does (docs/DECISIONS.md lists them):
a content stage stalled by vanished peers until the lookup's timeout, metadata from libtorrent for another
infohash, a hybrid torrent seen under both its DHT ids, a watched torrent whose metadata nobody delivered,
and one torrent's unexpected failure inside the long-running monitor.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy import Engine, select

from evidence.verify import EXIT_OK, verify_bundle
from p2pwatch.bundle import keys as keyfile
from p2pwatch.config import MonitorConfig
from p2pwatch.investigate import lookup as lookup_module
from p2pwatch.investigate import metadata_fetch
from p2pwatch.investigate.export import ExportRequest, export_case
from p2pwatch.investigate.lookup import lookup
from p2pwatch.investigate.registry import add_content, create_case, record_match, upsert_torrent, watch
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.matcher import Match, RegisteredContent, RegistryIndex
from p2pwatch.monitor.daemon import Monitor, load_monitor_state
from p2pwatch.monitor.metrics import Metrics
from p2pwatch.monitor.watcher import Watcher
from p2pwatch.storage.claims import Claim
from p2pwatch.storage.db import session_factory, writer_sessionmaker
from p2pwatch.storage.models import Torrent
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_info, parse_torrent
from tests.conftest import require_component

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import create_torrent
except ImportError:  # pragma: no cover
    lt = None

pytest_plugins = ["tests.pg"]


def _v1(tmp_path: Path, name: str = "clip.bin", size: int = 5 * 16384 + 10) -> tuple[Path, Metainfo]:
    data = tmp_path / name
    data.write_bytes(os.urandom(size))
    return data, parse_torrent(make_v1_torrent(name, [(name, data)], piece_length=16384, single_file=True))


async def test_lookup_keeps_zero_byte_matches_when_vanished_peers_stall_the_content_stages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock) -> None:
    """Listed peers that vanished keep the content stages waiting; the lookup's timeout cuts them off. The
    match the metadata alone proves (0 bytes fetched) survives; before, the whole report was lost."""
    data, meta = _v1(tmp_path)
    index = RegistryIndex([RegisteredContent("c" * 64, "c1", fingerprint_file(data, media=False))])
    stalled = trio.Event()

    async def stalls(*_args: Any, **_kw: Any) -> Any:  # a reader waiting on peers that never answer
        stalled.set()
        await trio.sleep_forever()

    monkeypatch.setattr(lookup_module, "run_matcher", stalls)
    outcome = await lookup(meta.infohash, config=MonitorConfig(), dht=None, trackers=[], metainfo=meta,
                           index=index, timeout=30)
    assert stalled.is_set() and outcome.timed_out
    assert outcome.report is not None
    assert [(m.method, m.bytes_fetched) for m in outcome.report.matches] == [("exact-metadata", 0)]


class _Reader:
    def __init__(self, metainfo: Metainfo) -> None:
        self.metainfo = metainfo

    async def wait_metadata_async(self, _timeout: float) -> Metainfo:
        return self.metainfo


async def test_metadata_from_libtorrent_for_another_infohash_is_refused(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The libtorrent fallback's metadata is hashed again here: an info dict that does not hash to the
    infohash asked for is an error, never the torrent's metainfo."""
    _data, other = _v1(tmp_path)

    @contextlib.asynccontextmanager
    async def reader(*_args: Any, **_kw: Any) -> AsyncIterator[_Reader]:
        yield _Reader(other)

    monkeypatch.setattr(metadata_fetch, "open_torrent_reader", reader)
    wanted = bytes(20)
    settings = MonitorConfig().probe
    settings.libtorrent_fallback = True
    result = await metadata_fetch.fetch_metadata(wanted, [], settings)
    assert result.metainfo is None and result.error and "not " + wanted.hex() in result.error
    monkeypatch.setattr(metadata_fetch, "open_torrent_reader", lambda *a, **k: reader())
    good = await metadata_fetch.fetch_metadata(other.infohash, [], settings)
    assert good.metainfo is other and good.source == "libtorrent"


def test_a_hybrid_is_one_row_whichever_dht_id_came_first(storage_engine: Engine, tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None)
    (tmp_path / "h.bin").write_bytes(os.urandom(3 * 16384 + 5))
    full = parse_torrent(create_torrent(tmp_path / "h.bin", version="hybrid", piece_length=16384))
    bare = parse_info(full.info_bytes)
    assert full.infohash_v1 is not None and full.infohash_v2 is not None
    v1, v2 = full.infohash_v1, full.infohash_v2[:20]
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        first = upsert_torrent(s, v2, metainfo=bare, source="crawler")  # the DHT showed the v2 id first
        again = upsert_torrent(s, v1, metainfo=bare, source="crawler")
        assert again.id == first.id and first.dht_id == v2.hex()
        assert s.scalars(select(Torrent)).all() == [first]
        upsert_torrent(s, v1, metainfo=full)  # then the .torrent, with its layers
        assert parse_torrent(first.metainfo or b"").piece_layers == full.piece_layers


def test_a_watched_torrent_without_metadata_is_named_in_the_bundle(storage_engine: Engine, tmp_path: Path) -> None:
    """A watch whose metadata no peer delivered: its rows stay hashes in the chain, and bundle.json says the
    torrent was left out rather than leaving it unmentioned."""
    data, meta = _v1(tmp_path)
    keyfile.save_key(keyfile.default_key_path(tmp_path), keyfile.generate_key())
    fp = fingerprint_file(data, media=False)
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        case = create_case(s, "c1")
        content, _ = add_content(s, case, fp)
        torrent = upsert_torrent(s, meta.infohash, metainfo=meta)
        proof = {"kind": "v1-piece-table", "piece_length": 16384, "first_piece": 0, "pieces_compared": 6,
                 "piece_hashes": [h.hex() for h in meta.piece_hashes], "file_length": fp.size}
        record_match(s, Match("c1", str(content.id), meta.infohash.hex(), 0, "clip.bin", "exact-metadata", proof,
                              0), torrent)
        watch(s, case, upsert_torrent(s, b"\x07" * 20, source="watch"))
    out = tmp_path / "b.zip"
    with session_factory(storage_engine)() as s, s.begin():
        export_case(s, ExportRequest("c1", out, tmp_path))
    assert verify_bundle(out).exit_code == EXIT_OK
    with zipfile.ZipFile(out) as z:
        doc = json.loads(z.read("bundle.json"))
    assert doc["case"]["torrents_without_metadata"] == ["07" * 20]
    assert [t["infohash"] for t in doc["torrents"]] == [meta.infohash.hex()]


class _Writer:
    """Hands out two claims once, then none."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, _func: Any) -> Any:
        self.calls += 1
        until = datetime.now(UTC) + timedelta(minutes=5)
        return [Claim(1, 1, until), Claim(2, 2, until)] if self.calls == 1 else []


async def test_one_watch_failing_unexpectedly_does_not_stop_the_watcher(autojump_clock: trio.testing.MockClock
                                                                         ) -> None:
    metrics = Metrics()
    watcher = Watcher(MonitorConfig(), _Writer(), None, worker_id="w", alerter=None, metrics=metrics,  # type: ignore[arg-type]
                      geo=None, bind_ip=None)  # type: ignore[arg-type]
    checked: list[int] = []

    async def check(torrent_id: int) -> None:
        if torrent_id == 1:
            raise ExceptionGroup("examine", [ValueError("a swarm state nobody expected")])
        checked.append(torrent_id)

    watcher._check = check  # type: ignore[method-assign]
    with trio.move_on_after(30):
        await watcher.run()
    assert checked == [2] and metrics.counters["p2pwatch_examination_errors_total"] == 1


async def test_one_torrent_failing_unexpectedly_does_not_stop_the_metadata_workers() -> None:
    monitor = Monitor.__new__(Monitor)
    monitor.metrics = Metrics()
    done: list[bytes] = []

    async def check_new(infohash: bytes, *_args: Any) -> None:
        if infohash == b"\x01" * 20:
            raise KeyError("an info dict field nobody expected")
        done.append(infohash)

    monitor._check_new = check_new  # type: ignore[method-assign]
    send, receive = trio.open_memory_channel[bytes](2)
    async with send:
        await send.send(b"\x01" * 20)
        await send.send(b"\x02" * 20)
    with trio.fail_after(5):
        await monitor._metadata_worker(receive, None, None)  # type: ignore[arg-type]
    assert done == [b"\x02" * 20] and monitor.metrics.counters["p2pwatch_metadata_errors_total"] == 1


def test_announces_under_either_id_of_a_watched_hybrid_map_to_its_row(storage_engine: Engine, tmp_path: Path) -> None:
    """libtorrent announces a hybrid under its v1 and its truncated v2 id; the monitor's watch list holds
    both, so a peer announcing under either is recorded for the one torrent."""
    require_component("libtorrent", lt is not None)
    (tmp_path / "h.bin").write_bytes(os.urandom(3 * 16384 + 5))
    full = parse_torrent(create_torrent(tmp_path / "h.bin", version="hybrid", piece_length=16384))
    assert full.infohash_v1 is not None and full.infohash_v2 is not None
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        case = create_case(s, "c1")
        torrent = upsert_torrent(s, full.infohash_v1, metainfo=parse_info(full.info_bytes))
        watch(s, case, torrent)
        tid = torrent.id
    with writer_sessionmaker(storage_engine)() as s:
        _index, _version, known, watched = load_monitor_state(s, None)
    assert watched == {full.infohash_v1: tid, full.infohash_v2[:20]: tid}
    assert {full.infohash_v1, full.infohash_v2[:20]} <= known


def test_a_torrent_file_saved_from_a_magnet_without_layers_is_accepted(tmp_path: Path) -> None:
    """Tools that save a magnet's metadata write ``d4:info...e`` with no ``piece layers``; ``watch`` and
    ``probe peer --torrent`` take it (layers come from peers when a proof needs one) instead of refusing."""
    require_component("libtorrent", lt is not None)
    from click.testing import CliRunner

    from p2pwatch.cli import main

    (tmp_path / "v.bin").write_bytes(os.urandom(4 * 16384 + 5))
    full = parse_torrent(create_torrent(tmp_path / "v.bin", version="v2", piece_length=16384))
    saved = tmp_path / "from-magnet.torrent"
    saved.write_bytes(b"d4:info" + full.info_bytes + b"e")
    home = tmp_path / "home"
    runner = CliRunner()
    for args in (["db", "upgrade"], ["case", "create", "c1"], ["watch", "--case", "c1", str(saved)]):
        result = runner.invoke(main, ["--home", str(home), *args])
        assert result.exit_code == 0, result.output
    with pytest.raises(Exception, match="lacks the layer"):
        parse_torrent(saved.read_bytes())  # a .torrent proper must hold them; what is stored need not


async def test_a_torrent_with_zero_peers(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Nobody lists the torrent: the lookup says so, fetches nothing, and still proves what the metadata
    alone proves when a .torrent was given."""
    data, meta = _v1(tmp_path)
    index = RegistryIndex([RegisteredContent("c" * 64, "c1", fingerprint_file(data, media=False))])
    bare = await lookup(meta.infohash, config=MonitorConfig(), dht=None, trackers=[], metainfo=None, index=index,
                        timeout=30)
    assert bare.metainfo is None and bare.report is None and not bare.timed_out
    assert any("no peer is listed" in n for n in bare.notes)
    given = await lookup(meta.infohash, config=MonitorConfig(), dht=None, trackers=[], metainfo=meta, index=index,
                         timeout=30)
    assert given.report is not None and [m.method for m in given.report.matches] == ["exact-metadata"]
    assert not given.exam.probes and not given.timed_out


async def test_a_hybrid_peer_listed_only_under_its_v2_id_is_examined_under_it(tmp_path: Path) -> None:
    """A v2-only client in a hybrid's swarm announces the truncated v2 id alone. The watcher's examination
    asks the DHT under every id of the torrent and greets such a peer with the id it was listed under."""
    require_component("libtorrent", lt is not None)
    from p2pwatch.dht.node import DHTConfig, open_dht_node
    from p2pwatch.investigate.examine import Examination, examine
    from p2pwatch.probe.trackers import TrackerConfig
    from p2pwatch.testswarm.localswarm import LocalSwarm
    from tests.conftest import loopback_address

    (tmp_path / "h.bin").write_bytes(os.urandom(3 * 16384 + 5))
    raw = create_torrent(tmp_path / "h.bin", version="hybrid", piece_length=16384)
    full = parse_torrent(raw)
    assert full.infohash_v1 is not None and full.infohash_v2 is not None
    v1, v2 = full.infohash_v1, full.infohash_v2[:20]
    swarm = LocalSwarm(tmp_path)
    try:
        nodes = [swarm.start_session(loopback_address()) for _ in range(4)]
        seeder = swarm.start_session(loopback_address(), dht=False)  # listed only by our announce below
        swarm.seed(seeder, raw, tmp_path)
        await trio.to_thread.run_sync(swarm.connect_dht)
        await trio.to_thread.run_sync(lambda: swarm.wait_dht_ready(min_nodes=2))
        await trio.to_thread.run_sync(swarm.wait_seeding)
        bootstrap = tuple((n.ip, n.port) for n in nodes)
        announcer = DHTConfig(bind_host=seeder.ip, bind_port=0, bootstrap=bootstrap, allow_local=True,
                              query_timeout=2.0, maintenance_interval=3600)
        with trio.fail_after(60):
            async with open_dht_node(announcer) as node:
                assert await node.announce_peer(v2, port=seeder.port, implied_port=False) > 0
            config = DHTConfig(bind_host=loopback_address(), bind_port=0, bootstrap=bootstrap, allow_local=True,
                               query_timeout=2.0, short_timeout=0.5, maintenance_interval=3600)
            async with open_dht_node(config) as node:
                exam = Examination(v1, datetime.now(UTC))
                await examine(exam, node=node, trackers=[], metainfo=parse_info(full.info_bytes),
                              settings=MonitorConfig().probe, tracker_config=TrackerConfig(timeout=5.0),
                              probe_limit=4, pieces_budget=4, bind_ip=config.bind_host)
    finally:
        await trio.to_thread.run_sync(swarm.close)
    peer = (seeder.ip, seeder.port)
    assert peer in exam.listed and exam.listed_as.get(peer) == v2, exam.listed
    probe = next(p for p in exam.probes if (p.ip, p.port) == peer)
    assert probe.infohash == v2 and probe.level == 3 and probe.piece_hash_algorithm == "sha1", probe.error


async def test_the_libtorrent_fallback_gets_v2_metadata_under_the_truncated_id(tmp_path: Path) -> None:
    """No probe delivered metadata (here: none is made), so libtorrent's magnet fetch is asked with
    ``btih:<20-byte DHT id>``; for a v2-only torrent that is the truncated SHA-256, and the metadata it gets is
    re-hashed here against that id."""
    require_component("libtorrent", lt is not None)
    from p2pwatch.testswarm.localswarm import LocalSwarm
    from tests.conftest import loopback_address

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "v.bin").write_bytes(os.urandom(10 * 16384 + 5))
    raw = create_torrent(tmp_path / "d" / "v.bin", version="v2", piece_length=16384)
    full = parse_torrent(raw)
    settings = MonitorConfig().probe
    settings.metadata_peers, settings.libtorrent_timeout = 0, 30.0
    swarm = LocalSwarm(tmp_path)
    try:
        seeder = swarm.start_session(loopback_address(), dht=False)
        swarm.seed(seeder, raw, tmp_path / "d")
        await trio.to_thread.run_sync(swarm.wait_seeding)
        result = await metadata_fetch.fetch_metadata(full.infohash, [(seeder.ip, seeder.port)], settings,
                                                     bind_ip=loopback_address(), allow_local=True)
    finally:
        await trio.to_thread.run_sync(swarm.close)
    assert result.error is None and result.source == "libtorrent" and not result.probes
    assert result.metainfo is not None and result.metainfo.info_bytes == full.info_bytes


def test_layers_added_to_a_torrent_file_keep_its_other_fields(tmp_path: Path) -> None:
    """A .torrent without layers (saved from a magnet, with its trackers) gets the layers a probe fetched:
    the stored .torrent keeps the trackers and every other field, and the info dict's bytes."""
    require_component("libtorrent", lt is not None)
    from p2pwatch.torrent import bencoding

    (tmp_path / "v.bin").write_bytes(os.urandom(4 * 16384 + 5))
    full = parse_torrent(create_torrent(tmp_path / "v.bin", version="v2", piece_length=16384))
    url = b"http://127.0.0.1:6969/announce"
    saved = b"d8:announce%d:%b7:comment4:test4:info%be" % (len(url), url, full.info_bytes)
    given = parse_torrent(saved, require_layers=False)
    assert given.missing_layers and given.trackers == (("http://127.0.0.1:6969/announce",),)
    upgraded = given.with_piece_layers(full.piece_layers)
    again = parse_torrent(upgraded.stored_bytes())  # a complete .torrent now
    assert again.info_bytes == full.info_bytes and again.piece_layers == full.piece_layers
    assert again.trackers == given.trackers and again.comment == "test"
    assert bencoding.decode(upgraded.stored_bytes())[b"comment"] == b"test"
