"""Configuration: TOML file, then environment, then command-line flags (each overrides the one before).

Every setting has a documented default (docs/config.example.toml). Sections map onto dataclasses; unknown
keys are refused with the key's name, so a typo never silently falls back to a default.
Environment variables are ``P2PWATCH_<SECTION>_<KEY>`` (e.g. ``P2PWATCH_DHT_PORT=6881``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pwatch.errors import ConfigError


@dataclass
class DHTSettings:
    bind: str = "0.0.0.0"
    port: int = 6881
    #: "[IPV6]:PORT" runs an IPv6 DHT node too (BEP 32: its own socket, routing table and BEP 42 id; IPv6
    #: bootstrap entries go to it); empty: the IPv4 DHT only
    bind6: str = ""
    bootstrap: list[str] = field(default_factory=lambda: [
        "router.bittorrent.com:6881", "dht.transmissionbt.com:6881", "router.utorrent.com:6881",
        "dht.libtorrent.org:25401"])
    allow_local: bool = False
    #: politeness on the real DHT
    inbound_rate_per_ip: float = 50.0
    #: at most this many queries/s to one IP (bitmagnet's figure; issue 12)
    outbound_rate_per_ip: float = 1.0
    query_timeout: float = 5.0
    #: a query unanswered this long is slow: the lookup asks the next node and no longer waits for it
    #: (these lookup settings were measured in the simulated DHT, scripts/bench_scale.py; DECISIONS.md)
    short_timeout: float = 0.2
    alpha: int = 16
    k: int = 8
    #: a lookup ends when this many closest responders have answered, plus 4 per dead node passed
    lookup_width: int = 12
    #: a slow query that would be among the k closest responders still holds the end this long after sending
    slow_grace: float = 1.1
    #: a new candidate with fewer than this many responders or in-flight queries closer is sent at once,
    #: even when all alpha queries are in flight (0: never)
    lookup_eager: int = 32
    #: libtorrent's extended routing table: the farthest four buckets hold 128, 64, 32, 16 nodes
    extended_routing_table: bool = True
    #: the nodes that answered us most recently, kept as extra lookup seeds (0: off; about 200 bytes each)
    responder_cache: int = 65_536
    #: after the bootstrap, this many id ranges farther than our nearest neighbour are looked up (Kademlia's
    #: join; 0: none): a new node then knows the far half of the id space too
    join_refresh: int = 8


@dataclass
class CrawlerSettings:
    enabled: bool = True
    segments: int = 256
    passive: bool = True
    channel_size: int = 10_000
    sweep_interval: float = 300.0


@dataclass
class ProbeSettings:
    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0
    metadata_timeout: float = 20.0
    piece_timeout: float = 30.0
    encryption: str = "prefer"
    concurrent_probes: int = 32
    metadata_peers: int = 8
    libtorrent_fallback: bool = True
    libtorrent_timeout: float = 60.0
    #: seconds a probe of an examination lingers for a first BEP 11 ut_pex message (0: never waits)
    pex_wait: float = 1.5


@dataclass
class MetadataSettings:
    """The crawler → metadata pipeline (p2pwatch/monitor/pipeline.py): every stage bounded."""

    active: int = 1024  # infohashes in the pipeline at once; more waits (back-pressure onto the crawler)
    connections: int = 256  # BEP 9 peer connections open at once
    peers_at_once: int = 3  # peers of one torrent asked for metadata at the same time
    peer_ip_rate: float = 1.0  # new connections/s to one peer IP
    lookups: int = 16  # fallback get_peers lookups at once
    libtorrent: int = 2  # libtorrent fallbacks at once; when all are busy the torrent is given up
    deadline: float = 120.0  # seconds one infohash may spend in the pipeline


@dataclass
class WatcherSettings:
    interval: float = 3600.0
    probes_per_torrent: int = 20
    verified_pieces_per_torrent: int = 5
    dormant_after: float = 6 * 3600.0
    gone_after: float = 7 * 86400.0
    trackers: list[str] = field(default_factory=list)


@dataclass
class MatcherSettings:
    samples: int = 10
    frame_threshold: int = 8  # measured by scripts/bench_match.py (100 % precision, 99.25 % recall)
    min_frames: int = 3
    image_threshold: int = 6  # pHash bits; PDQ uses its own 31 of 256 (scripts/bench_fingerprint.py)
    max_image_bytes: int = 32 * 1024 * 1024
    fetch_timeout: float = 120.0
    max_fetch_fraction: float = 0.03  # perceptual: bytes a video may cost, of its size (p2pwatch/match/perceptual.py)
    min_fetch_bytes: int = 4 * 1024 * 1024
    strict_budget: bool = False  # skip a video whose minimum of seek points does not fit, instead of exceeding


@dataclass
class TriageSettings:
    """Issue 13: triage from the metainfo, the one-keyframe screen and the budget of the content stages."""

    enabled: bool = True  # false: every media torrent goes to the sampled perceptual stage (before issue 13)
    bytes_per_day: int = 2 * 1024**3  # content bytes asked of swarms in any 24 hours, all torrents together
    torrents_per_hour: int = 600  # torrents whose content stages start in any hour
    concurrent_readers: int = 4  # torrents read at once
    queue_size: int = 1000  # torrents waiting; when full the lowest score is dropped
    keyframe_threshold: int = 10  # pHash bits from a key frame to the nearest registered frame
    image_threshold: int = 10  # pHash bits from an image to the nearest registered image
    preview_pieces: int = 2  # pieces of an image read by the screen
    keyframe_attempts: int = 3  # key frames tried when the first ones are flat
    keyframe_corroborate: bool = True  # a key frame near registered frames is checked against a second one
    min_video_kbps: float = 16.0  # plausible bit rates of a re-encoded copy
    max_video_kbps: float = 20000.0
    min_clip_seconds: float = 4.0  # shortest trimmed copy looked for
    duration_slack: float = 1.25  # a copy may last this much longer than the original
    max_files: int = 8  # files of one torrent examined, highest score first


@dataclass
class AlertSettings:
    webhook: str = ""
    command: str = ""


@dataclass
class StoreSettings:
    retention_days: int = 0  # 0 keeps level 0-2 addresses forever
    batch_size: int = 1000


@dataclass
class WebSettings:
    """``p2pwatch web`` (issue 14; docs/DECISIONS.md)."""

    bind: str = "127.0.0.1:8080"
    #: mark cookies Secure (the browser sends them over HTTPS only); off only for plain-http loopback tests
    secure_cookies: bool = True
    session_minutes: int = 480
    #: failed sign-ins allowed per account and per client address within ``signin_window`` seconds
    signin_attempts: int = 5
    signin_window: int = 300
    max_upload_mb: int = 8192
    #: seconds a web lookup may take
    lookup_timeout: float = 60.0
    #: reverse proxies in front that set X-Forwarded-For/-Proto (0: none; 1: nginx on the same host). The
    #: sign-in limit and the audit log then see the browser's address instead of the proxy's.
    trusted_proxy_hops: int = 0


@dataclass
class MonitorConfig:
    dht: DHTSettings = field(default_factory=DHTSettings)
    crawler: CrawlerSettings = field(default_factory=CrawlerSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    metadata: MetadataSettings = field(default_factory=MetadataSettings)
    watcher: WatcherSettings = field(default_factory=WatcherSettings)
    matcher: MatcherSettings = field(default_factory=MatcherSettings)
    triage: TriageSettings = field(default_factory=TriageSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    web: WebSettings = field(default_factory=WebSettings)
    #: the zone people read times in (web pages, CLI tables, report.html); stored times stay UTC
    time_zone: str = "Asia/Seoul"
    geoip_mmdb: str = ""
    metrics_port: int = 0
    log_format: str = "text"

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the effective configuration (recorded in evidence bundles)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _coerce(value: Any, current: Any, where: str) -> Any:
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if isinstance(current, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, not {value!r}") from None
    if isinstance(current, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, not {value!r}") from None
    if isinstance(current, list):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{where} must be a list of strings")
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting")


def _apply(target: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(target)}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise ConfigError(f"unknown setting {where}{key} (known: {', '.join(sorted(names))})")
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a table")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(target, name, _coerce(value, current, f"{where}{key}"))


def load_config(path: Path | None = None, *, environ: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> MonitorConfig:
    """Defaults, then the TOML file, then ``P2PWATCH_<SECTION>_<KEY>`` variables, then ``overrides``."""
    config = MonitorConfig()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration {path} is not valid TOML: {exc}") from None
        _apply(config, data, "")
    env = os.environ if environ is None else environ
    for section in dataclasses.fields(config):
        current = getattr(config, section.name)
        if dataclasses.is_dataclass(current):
            for item in dataclasses.fields(current):
                key = f"P2PWATCH_{section.name}_{item.name}".upper()
                if key in env:
                    _apply(current, {item.name: env[key]}, f"{key}: {section.name}.")
        else:
            key = f"P2PWATCH_{section.name}".upper()
            if key in env and section.name not in ("db", "home", "config"):
                _apply(config, {section.name: env[key]}, f"{key}: ")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        prefix, _, name = dotted.rpartition(".")
        target = getattr(config, prefix) if prefix else config
        _apply(target, {name: value}, f"{prefix}." if prefix else "")
    return config
