"""The lookup names the peer its metadata came from in the one endpoint form: ``peer [::1]:port`` for IPv6."""

from __future__ import annotations

import trio

from p2pwatch.config import ProbeSettings
from p2pwatch.investigate.metadata_fetch import fetch_metadata
from tests.conftest import loopback_address, require_ipv6_loopback
from tests.hostile_peers import PeerScript, serve_scripted_peer, synthetic_v1_torrent

SETTINGS = ProbeSettings(encryption="off", connect_timeout=2, handshake_timeout=2, pex_wait=0,
                         libtorrent_fallback=False)


async def _source(ip: str) -> tuple[str | None, int]:
    torrent = synthetic_v1_torrent()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_scripted_peer, ip, PeerScript(torrent=torrent))
        with trio.fail_after(20):
            result = await fetch_metadata(torrent.infohash, [(ip, port)], SETTINGS)
        nursery.cancel_scope.cancel()
    assert result.metainfo is not None and result.metainfo.infohash == torrent.infohash
    return result.source, port


async def test_metadata_from_an_ipv6_peer_names_it_in_brackets() -> None:
    require_ipv6_loopback()
    source, port = await _source("::1")
    assert source == f"peer [::1]:{port}"


async def test_metadata_from_an_ipv4_peer_names_it_without_brackets() -> None:
    ip = loopback_address()
    source, port = await _source(ip)
    assert source == f"peer {ip}:{port}"
