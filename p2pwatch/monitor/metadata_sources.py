"""The monitor daemon's metadata fetcher for :class:`~p2pwatch.monitor.pipeline.MetadataPipeline`: one BEP 9
probe per attempt (:func:`~p2pwatch.probe.peer_probe.probe_peer`, metadata only, no piece), libtorrent's
magnet fetch as the fallback. Each probe is evidence (a level 1–2 observation), so it travels with the
attempt (``evidence``) to the matcher stage.
"""

from __future__ import annotations

import logging

from p2pwatch.config import ProbeSettings
from p2pwatch.errors import P2PWatchError
from p2pwatch.investigate.metadata_fetch import fetch_with_libtorrent, probe_timeouts
from p2pwatch.monitor.pipeline import FAILED, OK, TIMED_OUT, Addr, FetchAttempt
from p2pwatch.probe.peer_probe import probe_peer
from p2pwatch.torrent.metainfo import Metainfo, parse_info

log = logging.getLogger(__name__)


class ProbeFetcher:
    """:class:`~p2pwatch.monitor.pipeline.MetadataFetcher` over real peer connections."""

    def __init__(self, settings: ProbeSettings, *, bind_ip: str | None = None, bind_ip6: str = "::",
                 allow_local: bool = False) -> None:
        self.settings = settings
        self.bind_ip = bind_ip
        self.bind_ip6 = bind_ip6  # the libtorrent fallback's IPv6 address (the IPv6 DHT node's, when it runs)
        self.allow_local = allow_local
        self.timeouts = probe_timeouts(settings)

    async def fetch(self, infohash: bytes, peer: Addr) -> FetchAttempt:
        ip, port = peer
        probe = await probe_peer(ip, port, infohash, fetch_metadata=True, fetch_piece=False, timeouts=self.timeouts,
                                 encryption=self.settings.encryption, local_address=self.bind_ip)
        if probe.metadata_verified and probe.metadata:
            try:
                return FetchAttempt(peer, OK, parse_info(probe.metadata), probe)
            except P2PWatchError as exc:
                log.info("metadata from %s:%d verified but unusable: %s", ip, port, exc)
                return FetchAttempt(peer, FAILED, None, probe)
        status = TIMED_OUT if probe.error and "timed out" in probe.error else FAILED
        return FetchAttempt(peer, status, None, probe)

    async def fallback(self, infohash: bytes, peers: list[Addr]) -> Metainfo | None:
        if not self.settings.libtorrent_fallback:
            return None
        try:
            return await fetch_with_libtorrent(infohash, peers, self.settings, bind_ip=self.bind_ip,
                                               bind_ip6=self.bind_ip6, allow_local=self.allow_local)
        except P2PWatchError as exc:
            log.info("%s: libtorrent found no metadata: %s", infohash.hex(), exc)
            return None
