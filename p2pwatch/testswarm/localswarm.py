"""A local loopback swarm of real libtorrent sessions, for the demo, the tests and the benchmarks.

Every session gets its own 127.0.0.x address, DHT on with libtorrent's loopback restrictions lifted
(``dht_restrict_routing_ips``, ``dht_restrict_search_ips``, ``dht_enforce_node_id``,
``dht_prefer_verified_node_ids`` off, no bootstrap nodes), no LSD/UPnP/NAT-PMP, so nothing leaves
loopback. Sessions are wired together with ``add_dht_node``. Torrents are created with libtorrent's own
``create_torrent`` (v1, v2 or hybrid) from files the caller provides.

libtorrent runs its own threads; this module only calls its non-blocking API, and the ``wait_*``
helpers poll with a deadline (they are meant to run in a worker thread or a synchronous test).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt

from p2pwatch.errors import P2PWatchTimeout

LOOPBACK_DHT_SETTINGS: dict[str, Any] = {
    "enable_dht": True,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_enforce_node_id": False,
    "dht_prefer_verified_node_ids": False,
    "dht_bootstrap_nodes": "",
    "dht_ignore_dark_internet": False,
    "dht_sample_infohashes_interval": 0,
    "dht_upload_rate_limit": 1_000_000,
    "dht_block_ratelimit": 1000,
    "allow_multiple_connections_per_ip": True,
    "announce_to_all_trackers": True,
    "alert_mask": lt.alert_category.dht | lt.alert_category.dht_operation | lt.alert_category.status
    | lt.alert_category.error
    | lt.alert_category.port_mapping,
}


@dataclass
class SwarmSession:
    """One libtorrent session on its own loopback address."""

    ip: str
    session: Any
    torrents: list[Any] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.session.listen_port())

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.ip, self.port)

    def dht_node_count(self) -> int:
        status = self.session.status()
        return int(getattr(status, "dht_nodes", 0))


def create_torrent(root: Path, *, version: str = "v1", piece_length: int = 0,
                   trackers: Iterable[str] = (), name_path: Path | None = None) -> bytes:
    """Build a .torrent with libtorrent from ``root`` (a file or a directory); returns its bytes."""
    flags = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}[version]
    ct = lt.create_torrent(lt.list_files(str(root)), piece_length, flags)
    for tier, url in enumerate(trackers):
        ct.add_tracker(url, tier)
    lt.set_piece_hashes(ct, str((name_path or root).parent))
    return bytes(lt.bencode(ct.generate()))


def random_torrent(workdir: Path, size: int, name: str = "a.bin") -> tuple[Path, bytes, bytes]:
    """One file of ``size`` random bytes in ``workdir/data`` and its v1 .torrent.

    Returns ``(data_dir, torrent_bytes, v1_infohash)``; ``data_dir`` is the save path to seed from.
    """
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    (data / name).write_bytes(os.urandom(size))
    torrent = create_torrent(data / name)
    return data, torrent, bytes(lt.torrent_info(torrent).info_hashes().v1.to_bytes())


class LocalSwarm:
    """Start, wire and stop libtorrent sessions on loopback. Use as a context manager."""

    def __init__(self, workdir: Path, extra_settings: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.sessions: list[SwarmSession] = []
        self.extra_settings = extra_settings or {}

    def __enter__(self) -> LocalSwarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_session(self, ip: str, *, dht: bool = True, settings: dict[str, Any] | None = None) -> SwarmSession:
        pack = dict(LOOPBACK_DHT_SETTINGS)
        pack.update(self.extra_settings)
        pack.update(settings or {})
        pack["enable_dht"] = dht
        pack["listen_interfaces"] = f"[{ip}]:0" if ":" in ip else f"{ip}:0"
        pack["outgoing_interfaces"] = ip
        ses = lt.session(pack)  # type: ignore[call-overload]  # the stubs omit the dict overload
        node = SwarmSession(ip, ses)
        self.sessions.append(node)
        _wait_for(lambda: node.port > 0, 10.0, f"libtorrent on {ip} did not start listening")
        return node

    def seed(self, node: SwarmSession, torrent_bytes: bytes, save_path: Path) -> Any:
        """Add a torrent whose data is already in ``save_path``; returns the torrent handle.

        The torrent is not auto-managed: libtorrent's queue would pause all but ``active_seeds`` (5) seeding
        torrents of a session, for a minute or more, and a reader asking for a piece would wait in vain.
        """
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(torrent_bytes))  # type: ignore[arg-type]
        params.save_path = str(save_path)
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        handle = node.session.add_torrent(params)
        handle.force_recheck()
        node.torrents.append(handle)
        return handle

    def connect_dht(self, group: Sequence[SwarmSession] | None = None) -> None:
        """Tell every DHT session (or every one of ``group``) about every other one."""
        sessions = self.sessions if group is None else group
        for a in sessions:
            for b in sessions:
                if a is not b:
                    a.session.add_dht_node(b.endpoint)

    def wait_seeding(self, timeout: float = 30.0) -> None:
        def all_seeding() -> bool:
            return all(h.status().is_seeding for s in self.sessions for h in s.torrents)

        _wait_for(all_seeding, timeout, "torrents did not reach seeding state")

    def wait_dht_ready(self, min_nodes: int, timeout: float = 30.0) -> None:
        _wait_for(lambda: all(s.dht_node_count() >= min_nodes for s in self.sessions if _dht_on(s)),
                  timeout, f"DHT sessions did not learn {min_nodes} nodes")

    def force_announce(self) -> None:
        for s in self.sessions:
            for handle in s.torrents:
                handle.force_dht_announce()

    def start_dht(self, *, min_nodes: int, timeout: float = 30.0,
                  groups: Sequence[Sequence[SwarmSession]] | None = None) -> None:
        """Wire the DHT (every session, or each of ``groups`` apart: one DHT per address family), wait until
        every session knows ``min_nodes`` nodes and every torrent seeds, then announce every torrent."""
        for group in groups if groups is not None else [self.sessions]:
            self.connect_dht(group)
        self.wait_dht_ready(min_nodes=min_nodes, timeout=timeout)
        self.wait_seeding(timeout=timeout)
        self.force_announce()

    def close(self) -> None:
        for s in self.sessions:
            with contextlib.suppress(RuntimeError):
                s.session.pause()
        self.sessions.clear()


def _dht_on(node: SwarmSession) -> bool:
    return bool(node.session.get_settings().get("enable_dht"))


def _wait_for(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise P2PWatchTimeout(message)
        time.sleep(0.05)


def pop_alerts(node: SwarmSession) -> list[Any]:
    return list(node.session.pop_alerts())
