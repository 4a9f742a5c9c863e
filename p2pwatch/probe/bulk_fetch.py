"""The libtorrent-backed bulk fetcher: selected pieces of a torrent from the whole swarm.

The matcher uses it when it needs several pieces fast. A libtorrent session runs in a worker thread
(bridged to trio with ``trio.to_thread.run_sync``); every piece priority is zero except the wanted ones;
metadata comes through the magnet (BEP 9) when we have no metainfo; libtorrent reaches peers over TCP and
uTP, and finds them through the DHT, trackers and the peers we hand it.

What it returns is evidence-grade: each piece is read back only after libtorrent verified it against the
piece hash (``piece_finished_alert``), and we verify it again ourselves when we have the metainfo; each
block's serving endpoint comes from ``block_finished_alert``; ``bytes_downloaded`` counts everything
received (payload and protocol).

Forensic rule: p2pwatch never uploads content. The session has ``unchoke_slots_limit = 0`` and an upload
limit of 1 byte/s, so no peer is ever unchoked, and the scratch directory libtorrent writes pieces into is
deleted when the fetch ends. Every address libtorrent may contact is restricted by an ``ip_filter`` built
from the netguard policy.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt
import trio

from p2pwatch import netguard
from p2pwatch.errors import LocalProtocolError, P2PWatchTimeout, RemoteProtocolError
from p2pwatch.metainfo import Metainfo, parse_info


class FetchTimeout(P2PWatchTimeout):
    """The wanted pieces did not all arrive in time (what did arrive is in ``partial``)."""

    def __init__(self, message: str, partial: FetchResult) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class FetchedPiece:
    index: int
    data: bytes
    served_by: tuple[tuple[str, int], ...]  # endpoints that delivered its blocks


@dataclass
class FetchResult:
    pieces: dict[int, FetchedPiece] = field(default_factory=dict)
    bytes_downloaded: int = 0
    payload_downloaded: int = 0
    bytes_uploaded: int = 0
    metadata: bytes | None = None
    hash_failures: int = 0
    peers_connected: set[tuple[str, int]] = field(default_factory=set)


@dataclass(frozen=True)
class FetchOptions:
    bind_ip: str = "0.0.0.0"
    dht_bootstrap: tuple[tuple[str, int], ...] = ()
    enable_dht: bool = False
    allow_local: bool = False
    peers: tuple[tuple[str, int], ...] = ()
    trackers: tuple[str, ...] = ()
    timeout: float = 120.0
    enable_tcp: bool = True
    enable_utp: bool = True
    scratch_dir: Path | None = None


def _ip_filter(policy: netguard.NetworkPolicy) -> Any:
    """libtorrent ip_filter: block everything, then allow what netguard allows (IPv4 and IPv6)."""
    filt = lt.ip_filter()
    filt.add_rule("0.0.0.0", "255.255.255.255", 1)
    filt.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    for net in policy.allowed:
        filt.add_rule(str(net.network_address), str(net.broadcast_address), 0)
    for net in policy.refused:
        filt.add_rule(str(net.network_address), str(net.broadcast_address), 1)
    return filt


def _settings(options: FetchOptions) -> dict[str, Any]:
    pack: dict[str, Any] = {
        "listen_interfaces": f"{options.bind_ip}:0",
        "enable_dht": options.enable_dht,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "unchoke_slots_limit": 0,
        "upload_rate_limit": 1,
        "enable_outgoing_tcp": options.enable_tcp,
        "enable_incoming_tcp": options.enable_tcp,
        "enable_outgoing_utp": options.enable_utp,
        "enable_incoming_utp": options.enable_utp,
        "allow_multiple_connections_per_ip": True,
        "dht_bootstrap_nodes": ",".join(f"{h}:{p}" for h, p in options.dht_bootstrap),
        "alert_mask": lt.alert_category.status | lt.alert_category.error | lt.alert_category.block_progress
        | lt.alert_category.piece_progress | lt.alert_category.peer | lt.alert_category.storage,
    }
    if options.bind_ip != "0.0.0.0":
        pack["outgoing_interfaces"] = options.bind_ip
    if options.allow_local:
        pack.update({"dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
                     "dht_enforce_node_id": False, "dht_prefer_verified_node_ids": False,
                     "dht_ignore_dark_internet": False})
    return pack


def fetch_pieces_blocking(source: Metainfo | str, wanted: Iterable[int], options: FetchOptions) -> FetchResult:
    """Fetch ``wanted`` pieces of ``source`` (a Metainfo or a magnet URI). Runs in the calling thread."""
    wanted_set = set(wanted)
    if not wanted_set:
        raise LocalProtocolError("no pieces requested")
    policy = netguard.current_policy()
    for ip, port in options.peers:
        policy.check(ip, port)
    scratch = Path(tempfile.mkdtemp(prefix="p2pwatch-fetch-", dir=options.scratch_dir))
    session = lt.session(_settings(options))  # type: ignore[call-overload]
    session.set_ip_filter(_ip_filter(policy))
    result = FetchResult()
    try:
        params = _add_params(source, scratch, options)
        handle = session.add_torrent(params)
        for peer in options.peers:
            handle.connect_peer(peer)
        _run(session, handle, source if isinstance(source, Metainfo) else None, wanted_set, options, result)
        return result
    finally:
        with contextlib.suppress(RuntimeError):
            session.pause()
        del session
        shutil.rmtree(scratch, ignore_errors=True)


def _add_params(source: Metainfo | str, scratch: Path, options: FetchOptions) -> Any:
    if isinstance(source, Metainfo):
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(b"d4:info" + source.info_bytes + b"e"))  # type: ignore[arg-type]
        num = params.ti.num_pieces()
        params.piece_priorities = [0] * num
    else:
        try:
            params = lt.parse_magnet_uri(source)
        except RuntimeError as exc:
            raise RemoteProtocolError(f"libtorrent rejected the magnet: {exc}") from exc
    params.save_path = str(scratch)
    params.trackers = list(params.trackers) + list(options.trackers)
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    return params


def _run(session: Any, handle: Any, metainfo: Metainfo | None, wanted: set[int], options: FetchOptions,
         result: FetchResult) -> None:
    deadline = time.monotonic() + options.timeout
    served: dict[int, set[tuple[str, int]]] = {}
    prioritized = False
    pending_reads: set[int] = set()
    while True:
        if not prioritized and handle.status().has_metadata:
            ti = handle.torrent_file()
            num = ti.num_pieces()
            bad = [i for i in wanted if not 0 <= i < num]
            if bad:
                raise LocalProtocolError(f"pieces {bad} outside 0..{num - 1}")
            handle.prioritize_pieces([7 if i in wanted else 0 for i in range(num)])
            if metainfo is None:
                result.metadata = bytes(ti.info_section())  # the raw info dict as received (BEP 9)
                if result.metadata:
                    metainfo = parse_info(result.metadata)
            prioritized = True
        for alert in session.pop_alerts():
            if isinstance(alert, lt.block_finished_alert):
                served.setdefault(alert.piece_index, set()).add((str(alert.ip[0]), int(alert.ip[1])))
            elif isinstance(alert, lt.piece_finished_alert) and alert.piece_index in wanted:
                handle.read_piece(alert.piece_index)
                pending_reads.add(alert.piece_index)
            elif isinstance(alert, lt.read_piece_alert) and alert.piece in wanted:
                data = bytes(alert.buffer)
                if metainfo is not None and metainfo.piece_hashes and not metainfo.verify_piece(alert.piece, data):
                    result.hash_failures += 1
                    continue
                result.pieces[alert.piece] = FetchedPiece(alert.piece, data, tuple(sorted(served.get(alert.piece, ()))))
                pending_reads.discard(alert.piece)
            elif isinstance(alert, lt.hash_failed_alert):
                result.hash_failures += 1
                served.pop(alert.piece_index, None)
            elif isinstance(alert, lt.peer_connect_alert):
                result.peers_connected.add((str(alert.ip[0]), int(alert.ip[1])))
        status = handle.status()
        result.bytes_downloaded = int(status.total_download)
        result.payload_downloaded = int(status.total_payload_download)
        result.bytes_uploaded = int(status.total_payload_upload)
        if wanted <= set(result.pieces):
            return
        if time.monotonic() > deadline:
            missing = sorted(wanted - set(result.pieces))
            raise FetchTimeout(f"pieces {missing} did not arrive within {options.timeout:g} s", result)
        session.wait_for_alert(100)


async def fetch_pieces(source: Metainfo | str, wanted: Sequence[int], options: FetchOptions) -> FetchResult:
    """Fetch pieces in a worker thread; cancelling the trio task abandons the thread's result."""
    return await trio.to_thread.run_sync(fetch_pieces_blocking, source, list(wanted), options,
                                         abandon_on_cancel=True)
