"""Metadata for a discovered infohash: BEP 9 from listed peers first, libtorrent's magnet fetch as fallback.

The peer probes that fetch metadata are evidence too (a level 1–2 observation each), so their
:class:`~p2pwatch.probe.peer_probe.ProbeResult` objects come back with the metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from p2pwatch.config import ProbeSettings
from p2pwatch.endpoints import format_addr
from p2pwatch.errors import P2PWatchError, RemoteProtocolError
from p2pwatch.probe.bulk_fetch import FetchOptions, open_torrent_reader
from p2pwatch.probe.peer_probe import ProbeResult, ProbeTimeouts, probe_peer
from p2pwatch.torrent.metainfo import Metainfo, parse_info

log = logging.getLogger(__name__)


@dataclass
class MetadataResult:
    infohash: bytes
    metainfo: Metainfo | None = None
    source: str | None = None  # "peer IP:PORT" or "libtorrent"
    probes: list[ProbeResult] = field(default_factory=list)
    error: str | None = None


def probe_timeouts(settings: ProbeSettings) -> ProbeTimeouts:
    return ProbeTimeouts(connect=settings.connect_timeout, handshake=settings.handshake_timeout,
                         metadata=settings.metadata_timeout, piece=settings.piece_timeout,
                         idle=min(10.0, settings.piece_timeout))


async def fetch_metadata(infohash: bytes, peers: Sequence[tuple[str, int]], settings: ProbeSettings, *,
                         bind_ip: str | None = None, allow_local: bool = False,
                         dht_bootstrap: tuple[tuple[str, int], ...] = ()) -> MetadataResult:
    result = MetadataResult(infohash)
    timeouts = probe_timeouts(settings)
    candidates = list(peers)[: settings.metadata_peers]

    async with trio.open_nursery() as nursery:
        limiter = trio.CapacityLimiter(4)

        async def one(ip: str, port: int) -> None:
            async with limiter:
                if result.metainfo is not None:
                    return
                probe = await probe_peer(ip, port, infohash, fetch_metadata=True, fetch_piece=False,
                                         timeouts=timeouts, encryption=settings.encryption, local_address=bind_ip)
                result.probes.append(probe)
                if probe.metadata_verified and probe.metadata and result.metainfo is None:
                    try:
                        result.metainfo = parse_info(probe.metadata)
                        result.source = f"peer {format_addr((ip, port))}"
                        nursery.cancel_scope.cancel()
                    except P2PWatchError as exc:
                        log.info("metadata from %s:%d verified but unusable: %s", ip, port, exc)

        for ip, port in candidates:
            nursery.start_soon(one, ip, port)
    if result.metainfo is not None or not settings.libtorrent_fallback:
        if result.metainfo is None:
            result.error = "no peer delivered verified metadata"
        return result
    try:
        result.metainfo = await fetch_with_libtorrent(infohash, peers, settings, bind_ip=bind_ip,
                                                      allow_local=allow_local, dht_bootstrap=dht_bootstrap)
        result.source = "libtorrent"
    except RemoteProtocolError as exc:
        result.error = str(exc)
    except P2PWatchError as exc:
        result.error = f"metadata not found: {exc}"
    return result


async def fetch_with_libtorrent(infohash: bytes, peers: Sequence[tuple[str, int]], settings: ProbeSettings, *,
                                bind_ip: str | None = None, bind_ip6: str = "::", allow_local: bool = False,
                                dht_bootstrap: tuple[tuple[str, int], ...] = ()) -> Metainfo:
    """libtorrent's magnet fetch (the last resort). Raises :class:`P2PWatchError` when it finds nothing, and
    :class:`RemoteProtocolError` when what it found is another torrent (not taken on libtorrent's word)."""
    magnet = f"magnet:?xt=urn:btih:{infohash.hex()}"
    options = FetchOptions(bind_ip=bind_ip or "0.0.0.0", bind_ip6=bind_ip6, peers=tuple(peers), allow_local=allow_local,
                           enable_dht=bool(dht_bootstrap), dht_bootstrap=dht_bootstrap,
                           timeout=settings.libtorrent_timeout)
    async with open_torrent_reader(magnet, options) as reader:
        metainfo = await reader.wait_metadata_async(settings.libtorrent_timeout)
    if infohash[:20] not in metainfo.dht_ids:
        ids = ", ".join(sorted(h.hex() for h in metainfo.dht_ids))
        raise RemoteProtocolError(f"libtorrent's metadata hashes to {ids}, not {infohash.hex()}")
    return metainfo
