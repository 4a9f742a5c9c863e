"""HTTP(S) trackers: BEP 3 announce, BEP 23 compact and BEP 7 ``peers6`` replies, BEP 48 scrape.

The protocol part is sans-IO: :func:`build_announce_url` / :func:`build_scrape_url` make request URLs and
:func:`parse_announce_response` / :func:`parse_scrape_response` turn bencoded bodies into typed results.
The HTTP/1.1 transport (:class:`HTTPResponseReader`, :func:`decode_content`, :func:`http_get`) lives in
:mod:`p2pwatch.probe.http_client` and is re-exported here, so existing imports keep working.

Departures and choices:

* Peer-list entries that cannot be used (a DNS name instead of an IP, a port outside 1..65535) are skipped and
  counted in ``skipped_peers`` rather than failing the whole reply; anything else malformed is a
  :class:`~p2pwatch.errors.TrackerError`. ``failure reason`` (and BEP 48's ``failure_reason``) is a
  :class:`~p2pwatch.errors.TrackerFailure`, also when it arrives with a non-200 status.
* ``interval`` is optional (BEP 3 requires it; some trackers omit it in failures or scrapes).
* Scrape entries keyed by something other than a 20-byte infohash are ignored; infohashes the tracker does not
  know are simply absent from the result (opentracker omits them).
* Tracker host names are resolved with the system resolver and every address is checked by netguard; tests use
  IP literals only, so they never resolve anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes, urlsplit, urlunsplit

from p2pwatch import limits
from p2pwatch.errors import (
    DecodeError,
    TrackerError,
    TrackerFailure,
)
from p2pwatch.probe.http_client import (
    HTTPResponse,
    HTTPResponseReader,
    build_get_request,
    decode_content,
    http_get,
    resolve,
    split_http_url,
)
from p2pwatch.probe.udp_tracker import AnnounceEvent, AnnounceRequest, Peer, ScrapeStats, decode_compact_peers
from p2pwatch.torrent import bencoding

#: Longest text field (failure reason, warning) kept from a reply.
MAX_TEXT = 1024

__all__ = [
    "MAX_TEXT",
    "HTTPAnnounceResponse",
    "HTTPResponse",
    "HTTPResponseReader",
    "build_announce_url",
    "build_get_request",
    "build_scrape_url",
    "check_response",
    "decode_content",
    "http_get",
    "parse_announce_response",
    "parse_scrape_response",
    "resolve",
    "scrape_url_for",
    "split_http_url",
]

# ---- URLs ----


def build_announce_url(url: str, request: AnnounceRequest, *, tracker_id: bytes | None = None) -> str:
    """The announce GET URL (BEP 3 parameters, ``compact=1`` per BEP 23)."""
    params = [
        ("info_hash", quote_from_bytes(request.infohash, safe="")),
        ("peer_id", quote_from_bytes(request.peer_id, safe="")),
        ("port", str(request.port)),
        ("uploaded", str(request.uploaded)),
        ("downloaded", str(request.downloaded)),
        ("left", str(request.left)),
        ("compact", "1"),
        ("key", f"{request.key:08x}"),
    ]
    if request.num_want >= 0:
        params.append(("numwant", str(request.num_want)))
    if request.event is not AnnounceEvent.NONE:
        params.append(("event", request.event.http_name))
    if tracker_id:
        params.append(("trackerid", quote_from_bytes(tracker_id, safe="")))
    return _append_query(url, params)


def scrape_url_for(announce_url: str) -> str | None:
    """BEP 48: replace ``announce`` at the start of the last path segment by ``scrape``; None if absent."""
    parts = urlsplit(announce_url)
    head, _, last = parts.path.rpartition("/")
    if not last.startswith("announce"):
        return None
    path = f"{head}/scrape{last[len('announce'):]}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def build_scrape_url(scrape_url: str, infohashes: Sequence[bytes]) -> str:
    """One scrape URL carrying every infohash (BEP 48 repeats ``info_hash``)."""
    return _append_query(scrape_url, [("info_hash", quote_from_bytes(h, safe="")) for h in infohashes])


def _append_query(url: str, params: list[tuple[str, str]]) -> str:
    base = url.split("#", 1)[0]
    query = "&".join(f"{k}={v}" for k, v in params)
    if "?" not in base:
        return f"{base}?{query}"
    return base + ("" if base.endswith(("?", "&")) else "&") + query


# ---- bencoded replies ----


@dataclass(frozen=True, slots=True)
class HTTPAnnounceResponse:
    interval: int | None
    min_interval: int | None
    seeders: int | None
    leechers: int | None
    peers: tuple[Peer, ...]
    warning: str | None = None
    tracker_id: bytes | None = None
    external_ip: str | None = None
    skipped_peers: int = 0


def _decode_dict(body: bytes) -> dict[bytes, Any]:
    try:
        value = bencoding.decode(body, max_size=limits.MAX_TRACKER_RESPONSE, max_depth=16)
    except DecodeError as exc:
        raise TrackerError(f"tracker reply is not valid bencode: {exc}") from None
    if not isinstance(value, dict):
        raise TrackerError("tracker reply is not a bencoded dictionary")
    reason = value.get(b"failure reason", value.get(b"failure_reason"))
    if reason is not None:
        raise TrackerFailure(_text(reason, "failure reason") or "(empty failure reason)")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, bytes):
        raise TrackerError(f"{what} is not a string")
    return value[:MAX_TEXT].decode("utf-8", "replace")


def _count(d: dict[bytes, Any], key: bytes, default: int | None = None) -> int | None:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or value < 0:
        raise TrackerError(f"{key.decode()} is not a non-negative integer")
    return value


def parse_announce_response(body: bytes) -> HTTPAnnounceResponse:
    """Parse a BEP 3 announce reply (compact or dictionary ``peers``, BEP 7 ``peers6``)."""
    d = _decode_dict(body)
    peers: list[Peer] = []
    skipped = 0
    raw = d.get(b"peers", b"")
    if isinstance(raw, bytes):
        peers.extend(decode_compact_peers(raw))
    elif isinstance(raw, list):
        if len(raw) > limits.MAX_TRACKER_PEERS:
            raise TrackerError(f"tracker listed more than {limits.MAX_TRACKER_PEERS} peers")
        for entry in raw:
            peer = _dict_peer(entry)
            if peer is None:
                skipped += 1
            else:
                peers.append(peer)
    else:
        raise TrackerError("peers is neither a compact string nor a list")
    raw6 = d.get(b"peers6", b"")
    if not isinstance(raw6, bytes):
        raise TrackerError("peers6 is not a compact string")
    peers.extend(decode_compact_peers(raw6, ipv6=True))
    if len(peers) > limits.MAX_TRACKER_PEERS:
        raise TrackerError(f"tracker listed more than {limits.MAX_TRACKER_PEERS} peers")
    warning = d.get(b"warning message")
    tracker_id = d.get(b"tracker id")
    if tracker_id is not None and not isinstance(tracker_id, bytes):
        raise TrackerError("tracker id is not a string")
    external = d.get(b"external ip")
    external_ip = None
    if isinstance(external, bytes) and len(external) in (4, 16):
        external_ip = str(ipaddress.ip_address(external))
    return HTTPAnnounceResponse(
        interval=_count(d, b"interval"),
        min_interval=_count(d, b"min interval"),
        seeders=_count(d, b"complete"),
        leechers=_count(d, b"incomplete"),
        peers=tuple(peers),
        warning=None if warning is None else _text(warning, "warning message"),
        tracker_id=tracker_id or None,
        external_ip=external_ip,
        skipped_peers=skipped,
    )


def _dict_peer(entry: Any) -> Peer | None:
    if not isinstance(entry, dict):
        raise TrackerError("a peers list entry is not a dictionary")
    ip, port, peer_id = entry.get(b"ip"), entry.get(b"port"), entry.get(b"peer id")
    if not isinstance(ip, bytes) or not isinstance(port, int) or not 0 < port <= 0xFFFF:
        return None
    try:
        address = ipaddress.ip_address(ip.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None  # a DNS name (BEP 3 allows it); we never resolve names handed out by trackers
    return Peer(str(address), port, peer_id if isinstance(peer_id, bytes) and len(peer_id) == 20 else None)


def parse_scrape_response(body: bytes) -> dict[bytes, ScrapeStats]:
    """Parse a BEP 48 scrape reply: ``files`` maps 20-byte infohashes to complete/downloaded/incomplete."""
    d = _decode_dict(body)
    files = d.get(b"files")
    if not isinstance(files, dict):
        raise TrackerError("scrape reply has no files dictionary")
    out: dict[bytes, ScrapeStats] = {}
    for infohash, stats in files.items():
        if not isinstance(stats, dict):
            raise TrackerError("a scrape entry is not a dictionary")
        if len(infohash) != 20:
            continue
        out[infohash] = ScrapeStats(
            seeders=_count(stats, b"complete", 0) or 0,
            completed=_count(stats, b"downloaded", 0) or 0,
            leechers=_count(stats, b"incomplete", 0) or 0,
        )
    return out


def check_response(response: HTTPResponse) -> bytes:
    """The body of a tracker reply; a non-200 status is an error unless it carries a ``failure reason``."""
    if response.status == 200:
        return response.body
    try:
        _decode_dict(response.body)
    except TrackerFailure:
        raise
    except TrackerError:
        pass
    raise TrackerError(f"tracker answered HTTP {response.status} {response.reason[:80]}".rstrip())
