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

Reconnects: libtorrent waits ``min_reconnect_time`` (60 s by default) times the failures before it connects
again to a peer that disconnected, and gives the peer up after ``max_failcount`` (3) failures; a peer that
refused the first connection (its torrent paused or queued, a transient drop) then came back only after the
caller's timeout. The reader retries after ``RECONNECT_INTERVAL`` seconds times the failures, up to
``RECONNECT_ATTEMPTS`` times, and a timeout names the last reason a peer gave for disconnecting.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt
import trio

from p2pwatch import netguard
from p2pwatch.errors import LocalProtocolError, P2PWatchTimeout, RemoteProtocolError
from p2pwatch.torrent.metainfo import Metainfo, parse_info

log = logging.getLogger(__name__)

BLOCK_SIZE = 16 * 1024  # libtorrent's request size; block_finished_alert reports blocks of this size
PROVENANCE_GRACE = 2.0  # seconds a verified piece waits for its last block_finished_alert
#: seconds before libtorrent reconnects to a peer that disconnected, times its failures so far (libtorrent's
#: default is 60: a given peer that dropped the first connection came back after the reader's timeout)
RECONNECT_INTERVAL = 2
#: failed connections after which libtorrent gives a peer up (its default, 3, was spent in a few seconds)
RECONNECT_ATTEMPTS = 20


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
    peer_disconnects: int = 0  # connections that ended or failed, refused ones included
    last_peer_error: str | None = None  # why the last one ended (libtorrent's message)


@dataclass(frozen=True)
class FetchOptions:
    bind_ip: str = "0.0.0.0"
    #: the IPv6 address to listen and connect from ("::" any, None: IPv4 only). libtorrent makes outgoing
    #: connections from a listen socket of the peer's family, so without one no IPv6 peer is ever reached.
    bind_ip6: str | None = "::"
    dht_bootstrap: tuple[tuple[str, int], ...] = ()
    enable_dht: bool = False
    allow_local: bool = False
    peers: tuple[tuple[str, int], ...] = ()
    trackers: tuple[str, ...] = ()
    timeout: float = 120.0
    enable_tcp: bool = True
    enable_utp: bool = True
    scratch_dir: Path | None = None
    #: peers connected at once; 1 avoids libtorrent's end-game duplicates (the same block from two peers),
    #: so the bytes fetched are what proves; more is faster on a large swarm
    max_connections: int = 1


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


def listen_interfaces(options: FetchOptions) -> str:
    """libtorrent's ``listen_interfaces``: the IPv4 address and, unless turned off, the IPv6 one (BEP 7)."""
    interfaces = [f"{options.bind_ip}:0"]
    if options.bind_ip6:
        interfaces.append(f"[{options.bind_ip6}]:0")
    return ",".join(interfaces)


def bulk_settings(options: FetchOptions) -> dict[str, Any]:
    pack: dict[str, Any] = {
        "listen_interfaces": listen_interfaces(options),
        "enable_dht": options.enable_dht,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "unchoke_slots_limit": 0,
        "close_redundant_connections": False,  # stay connected to seeds between on-demand requests
        "upload_rate_limit": 1,
        "enable_outgoing_tcp": options.enable_tcp,
        "enable_incoming_tcp": options.enable_tcp,
        "enable_outgoing_utp": options.enable_utp,
        "enable_incoming_utp": options.enable_utp,
        "allow_multiple_connections_per_ip": True,
        "min_reconnect_time": RECONNECT_INTERVAL,
        "max_failcount": RECONNECT_ATTEMPTS,
        "dht_bootstrap_nodes": ",".join(f"{h}:{p}" for h, p in options.dht_bootstrap),
        "alert_mask": lt.alert_category.status | lt.alert_category.error | lt.alert_category.block_progress
        | lt.alert_category.piece_progress | lt.alert_category.peer | lt.alert_category.storage
        | lt.alert_category.connect,
    }
    if options.bind_ip != "0.0.0.0" and options.bind_ip6 != "::":
        # an IPv4-only list would keep every IPv6 connection from leaving; with "::" the connections are
        # bound to the listen sockets' addresses instead
        pack["outgoing_interfaces"] = ",".join(a for a in (options.bind_ip, options.bind_ip6) if a)
    if options.allow_local:
        pack.update({"dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
                     "dht_enforce_node_id": False, "dht_prefer_verified_node_ids": False,
                     "dht_ignore_dark_internet": False})
    return pack


def _add_params(source: Metainfo | str, scratch: Path, options: FetchOptions) -> Any:
    if isinstance(source, Metainfo):
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(b"d4:info" + source.info_bytes + b"e"))  # type: ignore[arg-type]
        params.piece_priorities = [0] * params.ti.num_pieces()
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



class TorrentReader:
    """A long-lived libtorrent session for one torrent that fetches pieces on demand.

    A background thread owns the alert loop (so nothing is lost when a caller gives up waiting); callers
    only set piece priorities and wait for pieces to appear. ``read_pieces`` blocks (for threads and
    scripts); ``read_pieces_async`` waits in trio and is safe to cancel.
    """

    def __init__(self, source: Metainfo | str, options: FetchOptions) -> None:
        self.source = source
        self.options = options
        self.metainfo = source if isinstance(source, Metainfo) else None
        self.result = FetchResult()
        self._served: dict[int, dict[int, tuple[str, int]]] = {}  # piece -> block -> endpoint
        self._read: dict[int, tuple[bytes, float]] = {}  # verified by libtorrent, awaiting block provenance
        self._torrent_info: Any = None  # libtorrent's, once the metadata is there (piece sizes)
        self._wanted: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._handle: Any = None
        self._scratch: Path | None = None
        self._num_pieces = 0
        self._next_peer = 0
        self._last_connect = 0.0
        self.error: str | None = None

    def open(self) -> None:
        policy = netguard.current_policy()
        for ip, port in self.options.peers:
            policy.check(ip, port)
        self._scratch = Path(tempfile.mkdtemp(prefix="p2pwatch-fetch-", dir=self.options.scratch_dir))
        self._session = lt.session(bulk_settings(self.options))  # type: ignore[call-overload]
        self._session.set_ip_filter(_ip_filter(policy))
        self._handle = self._session.add_torrent(_add_params(self.source, self._scratch, self.options))
        if self.metainfo is None:  # the metadata has to come from a peer; otherwise connect on the first request
            self._connect_first()
        self._thread = threading.Thread(target=self._loop, name="p2pwatch-torrent-reader", daemon=True)
        self._thread.start()

    def _connect_next(self) -> None:
        """Connect the next given peer (in turn), so a dead or slow one is replaced by the following one."""
        peers = self.options.peers
        if peers and self._handle is not None:
            self._handle.connect_peer(peers[self._next_peer % len(peers)])
            self._next_peer += 1
            self._last_connect = time.monotonic()

    def _connect_first(self) -> None:
        for _ in range(max(1, self.options.max_connections)):
            self._connect_next()

    def _keep_connected(self) -> None:
        """Connect the next given peer when fewer than ``max_connections`` are connected (at most every 2 s)."""
        if (self.options.peers and time.monotonic() - self._last_connect > 2.0
                and self._handle.status().num_peers < max(1, self.options.max_connections)):
            self._connect_next()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._session is not None:
            with contextlib.suppress(RuntimeError):
                self._session.pause()
            self._session = None
            self._handle = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> TorrentReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def num_pieces(self) -> int:
        return self._num_pieces

    def downloaded(self) -> int:
        """Payload bytes received so far (read live from libtorrent)."""
        if self._handle is None:
            return self.result.payload_downloaded
        return int(self._handle.status().total_payload_download)

    def redundant(self) -> int:
        """Of :meth:`downloaded`, the bytes libtorrent received twice (a block from two peers, or again after a
        request timed out); 0 before the torrent is added."""
        return 0 if self._handle is None else int(self._handle.status().total_redundant_bytes)

    # ------------------------------------------------------------------ the alert loop (background thread)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._session.wait_for_alert(100)
                with self._lock:
                    self._metadata_ready()
                    self._pump()
        except Exception as exc:  # libtorrent or a malformed info dict: waiting callers see .error
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("torrent reader stopped: %s", self.error)

    def _metadata_ready(self) -> bool:
        if self._num_pieces:
            return True
        if not self._handle.status().has_metadata:
            return False
        ti = self._handle.torrent_file()
        num = ti.num_pieces()
        if self.metainfo is None:
            self.result.metadata = bytes(ti.info_section())  # the raw info dict as received (BEP 9)
            self.metainfo = parse_info(self.result.metadata)
        self._handle.prioritize_pieces([7 if i in self._wanted else 0 for i in range(num)])
        self._torrent_info = ti
        self._num_pieces = num
        if self._wanted and self._next_peer == 0:
            self._connect_first()
        return True

    def _pump(self) -> None:
        result, served, handle = self.result, self._served, self._handle
        for alert in self._session.pop_alerts():
            if isinstance(alert, lt.block_finished_alert):
                endpoint = (str(alert.ip[0]), int(alert.ip[1]))
                served.setdefault(alert.piece_index, {})[alert.block_index] = endpoint
            elif isinstance(alert, lt.piece_finished_alert) and alert.piece_index in self._wanted:
                handle.read_piece(alert.piece_index)
            elif isinstance(alert, lt.read_piece_alert) and alert.piece in self._wanted:
                self._read[alert.piece] = (bytes(alert.buffer), time.monotonic())
            elif isinstance(alert, lt.hash_failed_alert):
                result.hash_failures += 1
                served.pop(alert.piece_index, None)
            elif isinstance(alert, lt.peer_connect_alert):
                result.peers_connected.add((str(alert.ip[0]), int(alert.ip[1])))
            elif isinstance(alert, lt.peer_disconnected_alert):  # libtorrent posts it for every ending
                result.peer_disconnects += 1
                result.last_peer_error = alert.message()
        self._complete_reads()
        status = handle.status()
        result.bytes_downloaded = int(status.total_download)
        result.payload_downloaded = int(status.total_payload_download)
        result.bytes_uploaded = int(status.total_payload_upload)

    def _complete_reads(self) -> None:
        """Publish read pieces once every block's ``block_finished_alert`` has arrived.

        libtorrent hashes a piece while its last blocks are still being written, so ``read_piece_alert`` can
        overtake the last ``block_finished_alert``; a piece waits for its provenance at most
        ``PROVENANCE_GRACE`` seconds, then is published with the endpoints known.
        """
        now = time.monotonic()
        for index, (data, read_at) in list(self._read.items()):
            ti = self._torrent_info
            blocks = -(-ti.piece_size(index) // BLOCK_SIZE) if ti is not None else 1
            if len(self._served.get(index, ())) >= blocks or now - read_at > PROVENANCE_GRACE:
                del self._read[index]
                self._piece_read(index, data)

    def _piece_read(self, index: int, data: bytes) -> None:
        metainfo = self.metainfo
        if metainfo is not None and metainfo.piece_hashes and not metainfo.verify_piece(index, data):
            self.result.hash_failures += 1
            return
        served = tuple(sorted(set(self._served.get(index, {}).values())))
        self.result.pieces[index] = FetchedPiece(index, data, served)

    # ------------------------------------------------------------------------------------------ requests

    def request(self, wanted: Iterable[int]) -> set[int]:
        """Ask for pieces (idempotent); returns the set asked for."""
        want = set(wanted)
        if not want:
            raise LocalProtocolError("no pieces requested")
        with self._lock:
            if self._num_pieces:
                bad = [i for i in want if not 0 <= i < self._num_pieces]
                if bad:
                    raise LocalProtocolError(f"pieces {sorted(bad)} outside 0..{self._num_pieces - 1}")
                new = want - self._wanted - set(self.result.pieces)
                for index in new:
                    self._handle.piece_priority(index, 7)
                if new and self._next_peer == 0:
                    self._connect_first()  # libtorrent connects once something is wanted
            self._wanted |= want
        return want

    def _check(self, want: set[int], deadline: float, limit: float) -> bool:
        if self._handle is not None:
            self._keep_connected()
        if self.error is not None:
            raise RemoteProtocolError(f"torrent reader failed: {self.error}")
        if want <= set(self.result.pieces):
            return True
        if time.monotonic() > deadline:
            missing = sorted(want - set(self.result.pieces))
            result = self.result
            why = (f" ({result.peer_disconnects} peer connection(s) ended, the last: {result.last_peer_error})"
                   if result.last_peer_error else "")
            raise FetchTimeout(f"pieces {missing} did not arrive within {limit:g} s{why}", result)
        return False

    def read_pieces(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, FetchedPiece]:
        """Fetch (or return already fetched) pieces; raises FetchTimeout carrying what did arrive."""
        want = self.request(wanted)
        limit = timeout if timeout is not None else self.options.timeout
        deadline = time.monotonic() + limit
        while not self._check(want, deadline, limit):
            time.sleep(0.02)
        return {i: self.result.pieces[i] for i in want}

    async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None
                                ) -> dict[int, FetchedPiece]:
        want = self.request(wanted)
        limit = timeout if timeout is not None else self.options.timeout
        deadline = time.monotonic() + limit
        while not self._check(want, deadline, limit):
            await trio.sleep(0.02)
        return {i: self.result.pieces[i] for i in want}

    def wait_metadata(self, timeout: float) -> Metainfo:
        deadline = time.monotonic() + timeout
        while self.metainfo is None or not self._num_pieces:
            if self.error is not None:
                raise RemoteProtocolError(f"torrent reader failed: {self.error}")
            if time.monotonic() > deadline:
                raise FetchTimeout(f"no metadata within {timeout:g} s", self.result)
            time.sleep(0.02)
        return self.metainfo

    async def wait_metadata_async(self, timeout: float) -> Metainfo:
        deadline = time.monotonic() + timeout
        while self.metainfo is None or not self._num_pieces:
            if self.error is not None:
                raise RemoteProtocolError(f"torrent reader failed: {self.error}")
            if time.monotonic() > deadline:
                raise FetchTimeout(f"no metadata within {timeout:g} s", self.result)
            await trio.sleep(0.02)
        return self.metainfo


async def fetch_pieces(source: Metainfo | str, wanted: Sequence[int], options: FetchOptions) -> FetchResult:
    """Fetch pieces without blocking trio."""
    async with open_torrent_reader(source, options) as reader:
        await reader.read_pieces_async(wanted)
        return reader.result


@asynccontextmanager
async def open_torrent_reader(source: Metainfo | str, options: FetchOptions) -> AsyncIterator[TorrentReader]:
    """A :class:`TorrentReader` for the duration of the block (session stopped, scratch deleted after)."""
    reader = TorrentReader(source, options)
    await trio.to_thread.run_sync(reader.open)
    try:
        yield reader
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(reader.close)
