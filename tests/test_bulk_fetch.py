"""The libtorrent bulk fetcher against real libtorrent seeders on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from p2pwatch.metainfo import parse_torrent
from p2pwatch.probe.bulk_fetch import FetchOptions, FetchTimeout, fetch_pieces
from tests.conftest import free_port, loopback_address, require_component

try:
    import libtorrent as lt

    from p2pwatch.localswarm import LocalSwarm, create_torrent
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
