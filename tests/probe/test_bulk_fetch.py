"""The libtorrent bulk fetcher against real libtorrent seeders on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from p2pwatch.probe.bulk_fetch import FetchOptions, FetchTimeout, fetch_pieces, open_torrent_reader
from p2pwatch.torrent.metainfo import parse_torrent
from tests.conftest import free_port, loopback_address, require_component

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, create_torrent
except ImportError:  # pragma: no cover
    lt = None

pytestmark = pytest.mark.interop

PIECE = 32 * 1024


@pytest.fixture
def seeded(tmp_path: Path):  # type: ignore[no-untyped-def]
    require_component("libtorrent", lt is not None)
    data = tmp_path / "data"
    data.mkdir()
    (data / "movie.bin").write_bytes(os.urandom(40 * PIECE + 123))
    torrent = create_torrent(data / "movie.bin", version="v1", piece_length=PIECE)
    with LocalSwarm(tmp_path, extra_settings={"enable_dht": False}) as swarm:
        seeders = [swarm.start_session(loopback_address(), dht=False) for _ in range(2)]
        for s in seeders:
            swarm.seed(s, torrent, data)
        swarm.wait_seeding()
        yield parse_torrent(torrent), seeders


async def test_fetches_only_wanted_pieces_with_provenance(seeded) -> None:  # type: ignore[no-untyped-def]
    metainfo, seeders = seeded
    options = FetchOptions(bind_ip=loopback_address(), peers=tuple(s.endpoint for s in seeders), timeout=60,
                           allow_local=True)
    with trio.fail_after(90):
        result = await fetch_pieces(metainfo, [3, 17], options)
    assert set(result.pieces) == {3, 17}
    for index, piece in result.pieces.items():
        assert metainfo.verify_piece(index, piece.data)
        assert piece.served_by and set(piece.served_by) <= {s.endpoint for s in seeders}
    # only the two wanted pieces (plus protocol overhead), not the 40-piece file
    assert 2 * PIECE <= result.payload_downloaded < 4 * PIECE
    assert result.bytes_uploaded == 0


async def test_magnet_metadata_and_utp_only(seeded) -> None:  # type: ignore[no-untyped-def]
    metainfo, seeders = seeded
    magnet = f"magnet:?xt=urn:btih:{metainfo.infohash_v1.hex()}"
    options = FetchOptions(bind_ip=loopback_address(), peers=(seeders[0].endpoint,), timeout=60,
                           allow_local=True, enable_tcp=False)
    with trio.fail_after(90):
        result = await fetch_pieces(magnet, [0], options)
    assert result.metadata is not None
    assert parse_torrent(b"d4:info" + result.metadata + b"e").infohash_v1 == metainfo.infohash_v1
    assert metainfo.verify_piece(0, result.pieces[0].data)


async def test_unreachable_peer_times_out_with_partial_result(seeded) -> None:  # type: ignore[no-untyped-def]
    metainfo, _ = seeded
    ip = loopback_address()
    options = FetchOptions(bind_ip=loopback_address(), peers=((ip, free_port(ip)),), timeout=2, allow_local=True)
    with pytest.raises(FetchTimeout) as info:
        await fetch_pieces(metainfo, [1], options)
    assert info.value.partial.pieces == {}


@pytest.fixture
def one_seeder(tmp_path: Path):  # type: ignore[no-untyped-def]
    require_component("libtorrent", lt is not None)
    data = tmp_path / "data"
    data.mkdir()
    (data / "movie.bin").write_bytes(os.urandom(8 * PIECE))
    torrent = create_torrent(data / "movie.bin", version="v1", piece_length=PIECE)
    with LocalSwarm(tmp_path, extra_settings={"enable_dht": False}) as swarm:
        seeder = swarm.start_session(loopback_address(), dht=False)
        handle = swarm.seed(seeder, torrent, data)
        swarm.wait_seeding()
        yield parse_torrent(torrent), seeder, handle


async def test_reconnects_to_a_peer_that_refused_at_first(one_seeder) -> None:  # type: ignore[no-untyped-def]
    """A given peer that drops the first connections (its torrent paused) is retried within the timeout.

    libtorrent's own policy waits ``min_reconnect_time`` (60 s) times the failures before it connects again
    to a peer that disconnected: the reader's timeout ran out first (bench_match's "piece 0 did not arrive").
    """
    metainfo, seeder, handle = one_seeder
    handle.unset_flags(lt.torrent_flags.auto_managed)  # else libtorrent's queue would resume it at once
    handle.pause()
    await wait_until(lambda: bool(handle.status().paused))
    # TCP only: a paused torrent's seeder lets a uTP connection time out (15 s) instead of refusing it
    options = FetchOptions(bind_ip=loopback_address(), peers=(seeder.endpoint,), timeout=30, allow_local=True,
                           enable_utp=False)
    with trio.fail_after(45):
        async with open_torrent_reader(metainfo, options) as reader:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.read_pieces_async, [2])
                # refused more often than libtorrent's two immediate reconnects
                await wait_until(lambda: reader.result.peer_disconnects >= 4)
                handle.resume()
            assert metainfo.verify_piece(2, reader.result.pieces[2].data)
            assert seeder.endpoint in reader.result.peers_connected


def test_seeder_serves_every_torrent_it_seeds(tmp_path: Path) -> None:
    """A LocalSwarm seeder never queues a torrent: libtorrent's auto-manager paused all but ``active_seeds``
    (5) of them, and a reader asking such a paused seeder for a piece waited in vain (bench_match's stalls)."""
    require_component("libtorrent", lt is not None)
    data = tmp_path / "data"
    data.mkdir()
    torrents = []
    for i in range(7):
        (data / f"file{i}.bin").write_bytes(os.urandom(2 * PIECE))
        torrents.append(create_torrent(data / f"file{i}.bin", version="v1", piece_length=PIECE))
    with LocalSwarm(tmp_path, extra_settings={"enable_dht": False}) as swarm:
        seeder = swarm.start_session(loopback_address(), dht=False)
        handles = [swarm.seed(seeder, t, data) for t in torrents]
        swarm.wait_seeding()
        assert [h.status().paused for h in handles] == [False] * len(handles)


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await trio.sleep(0.05)
