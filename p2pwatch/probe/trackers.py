"""Tracker probes: the trio driver for UDP (BEP 15) and HTTP(S) (BEP 3, 7, 23, 48) trackers, and BEP 12 tiers.

:func:`announce`, :func:`scrape` and :func:`probe_tracker` are what the rest of p2pwatch uses. They drive
the sans-IO cores in :mod:`p2pwatch.probe.udp_tracker` and :mod:`p2pwatch.probe.http_tracker`; this module
owns the sockets (all from :mod:`p2pwatch.netguard`) and the clock (``trio.current_time``).
:func:`open_tracker` gives a session for one tracker URL, so a probe's announce, scrape and ``stopped``
announce share one UDP connection id.

A listing from a tracker is a level-0 claim (DESIGN.md): results name the tracker that made it.

Choices beyond the BEPs:

* Our peer id is random per process with the client prefix ``-PW0100-`` (BEP 20 style), and our announce
  ``key`` is random per process (BEP 7).
* :func:`probe_tracker` always tries to deregister (``event=stopped``) once it may have been registered,
  even if the probe is cancelled, so we leave no phantom peer; the ``stopped`` announce has its own short
  timeout. It scrapes after deregistering, so the counts it reports do not include us.
* Scrapes go out in batches: ≤ 74 infohashes per UDP packet (all batches in flight at once), and
  ``http_scrape_batch`` (default 64, opentracker's per-request maximum) per HTTP request.
* BEP 12: a magnet's ``tr`` trackers get one tier each, in the order given (as libtorrent does); a tracker
  that answers is moved to the front of its tier. A ``failure reason`` moves on to the next tracker too.
* A UDP tracker at an IPv4-mapped IPv6 address (``udp://[::ffff:a.b.c.d]:port``) is an IPv4 tracker reached
  through an IPv6 socket: its replies come from the mapped address, its peer lists are IPv4 (BEP 15's 6-byte
  entries). Addresses are compared unmapped (:func:`p2pwatch.endpoints.unmap`), on both sides.
"""

from __future__ import annotations

import ipaddress
import random
import secrets
import ssl
import string
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from p2pwatch import limits, netguard
from p2pwatch.endpoints import unmap
from p2pwatch.errors import (
    ConfigError,
    LocalProtocolError,
    P2PWatchError,
    P2PWatchTimeout,
    TrackerError,
    TrackerFailure,
    TrackerTimeout,
    TrackerUnreachable,
)
from p2pwatch.probe import http_tracker as http
from p2pwatch.probe.udp_tracker import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    Peer,
    RequestDone,
    ScrapeResponse,
    ScrapeStats,
    UDPTrackerClient,
    parse_udp_url,
)

PEER_ID_PREFIX = b"-PW0100-"
#: What a UDP tracker socket is for, in a BindError.
UDP_SOCKET_PURPOSE = "the UDP tracker request"


def make_peer_id(prefix: bytes = PEER_ID_PREFIX) -> bytes:
    """A 20-byte peer id: the client prefix and random printable characters."""
    alphabet = (string.ascii_letters + string.digits).encode()
    return prefix + bytes(secrets.choice(alphabet) for _ in range(20 - len(prefix)))


#: Our peer id for this process, and the announce key that goes with it.
PEER_ID = make_peer_id()
ANNOUNCE_KEY = secrets.randbits(32)


@dataclass(frozen=True)
class TrackerConfig:
    """Timeouts and limits for tracker requests (tests scale ``udp_base_timeout`` down)."""

    timeout: float = 20.0  # one announce or scrape, start to finish
    stop_timeout: float = 5.0  # the deregistering ``stopped`` announce of a probe
    udp_base_timeout: float = 15.0  # BEP 15's 15 in 15·2ⁿ
    udp_max_retries: int = 8
    connection_lifetime: float = 60.0
    http_scrape_batch: int = limits.MAX_HTTP_SCRAPE
    max_response_size: int = limits.MAX_TRACKER_RESPONSE
    max_redirects: int = limits.MAX_HTTP_REDIRECTS
    local_address: str | None = None  # source IP of our datagrams and connections
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AnnounceResult:
    tracker: str
    interval: int | None
    min_interval: int | None
    seeders: int | None
    leechers: int | None
    peers: tuple[Peer, ...]
    warning: str | None = None
    tracker_id: bytes | None = None
    external_ip: str | None = None
    #: Our address as the tracker saw it, when known (HTTP, or UDP bound to ``local_address``).
    local_ip: str | None = None


@dataclass(frozen=True)
class TrackerProbe:
    """One probe of one tracker for one infohash: announce (started), announce (stopped), scrape.

    Counts come from the scrape, which runs after we deregistered, so they do not include us; without a
    scrape they come from the ``stopped`` reply, and only then from the ``started`` one (which may count us).
    """

    tracker: str
    infohash: bytes
    announce: AnnounceResult
    scrape: ScrapeStats | None
    scrape_error: str | None
    stopped: bool
    stop_error: str | None
    #: The announced peers without our own endpoint.
    peers: tuple[Peer, ...]
    #: The tracker's reply to our ``stopped`` announce.
    stop_announce: AnnounceResult | None = None

    def _count(self, name: str) -> int | None:
        if self.scrape is not None:
            return int(getattr(self.scrape, name))
        for reply in (self.stop_announce, self.announce):
            if reply is not None and getattr(reply, name) is not None:
                return int(getattr(reply, name))
        return None

    @property
    def seeders(self) -> int | None:
        return self._count("seeders")

    @property
    def leechers(self) -> int | None:
        return self._count("leechers")

    @property
    def completed(self) -> int | None:
        return self.scrape.completed if self.scrape else None


class TrackerSession(Protocol):
    url: str

    async def announce(self, request: AnnounceRequest, *, tracker_id: bytes | None = None,
                       timeout: float | None = None) -> AnnounceResult: ...

    async def scrape(self, infohashes: Sequence[bytes]) -> dict[bytes, ScrapeStats]: ...


def _relabel(url: str, exc: P2PWatchError) -> P2PWatchError:
    """The same error, naming the tracker."""
    if isinstance(exc, TrackerFailure):
        return TrackerFailure(exc.reason, tracker=url)
    if isinstance(exc, P2PWatchTimeout):
        return TrackerTimeout(f"tracker {url} did not answer: {exc}")
    if isinstance(exc, TrackerError):
        return TrackerError(f"tracker {url}: {exc}")
    return exc


class UDPTrackerSession:
    """One BEP 15 tracker over one UDP socket; requests are serialised, batches of a scrape run together."""

    def __init__(self, url: str, sock: netguard.GuardedUDPSocket, addr: tuple[str, int], url_data: bytes,
                 config: TrackerConfig) -> None:
        self.url = url
        self.config = config
        self._sock = sock
        self._addr = addr
        #: The tracker's address as IPv4 when it is IPv4-mapped: then its replies (and peer lists) are IPv4.
        self._ip = ipaddress.ip_address(unmap(addr[0]))
        self._url_data = url_data
        self._lock = trio.Lock()
        bound = sock.getsockname()[0]
        self.local_ip = None if ipaddress.ip_address(bound).is_unspecified else bound
        self.client = UDPTrackerClient(
            ipv6=self._ip.version == 6, base_timeout=config.udp_base_timeout,
            max_retries=config.udp_max_retries, connection_lifetime=config.connection_lifetime,
        )

    async def announce(self, request: AnnounceRequest, *, tracker_id: bytes | None = None,
                       timeout: float | None = None) -> AnnounceResult:
        async with self._lock:
            now = trio.current_time()
            handle = self.client.announce(request, now, url_data=self._url_data)
            reply = (await self._run({handle}, timeout or self.config.timeout))[handle]
        assert isinstance(reply, AnnounceResponse)
        return AnnounceResult(self.url, reply.interval, None, reply.seeders, reply.leechers, reply.peers,
                              local_ip=self.local_ip)

    async def scrape(self, infohashes: Sequence[bytes]) -> dict[bytes, ScrapeStats]:
        batches = [tuple(infohashes[i : i + limits.MAX_UDP_SCRAPE])
                   for i in range(0, len(infohashes), limits.MAX_UDP_SCRAPE)]
        async with self._lock:
            now = trio.current_time()
            handles = {self.client.scrape(batch, now): batch for batch in batches}
            replies = await self._run(set(handles), self.config.timeout)
        out: dict[bytes, ScrapeStats] = {}
        for handle, batch in handles.items():
            reply = replies[handle]
            assert isinstance(reply, ScrapeResponse)
            out.update(zip(batch, reply.stats, strict=True))
        return out

    async def _run(self, handles: set[int], timeout: float) -> dict[int, AnnounceResponse | ScrapeResponse]:
        results: dict[int, AnnounceResponse | ScrapeResponse] = {}
        try:
            with trio.fail_after(timeout):
                while len(results) < len(handles):
                    for datagram in self.client.datagrams_to_send():
                        await self._sock.sendto(datagram, self._addr)
                    deadline = self.client.next_deadline()
                    if deadline is None:
                        raise LocalProtocolError("UDP tracker client has pending requests but no deadline")
                    events = []
                    with trio.move_on_at(deadline) as waiting:
                        data, source = await self._sock.recvfrom(limits.MAX_DATAGRAM)
                    if waiting.cancelled_caught:
                        events = self.client.handle_timeout(trio.current_time())
                    elif self._from_tracker(source):
                        events = self.client.receive_datagram(data, trio.current_time())
                    else:
                        self.client.ignored += 1
                    for event in events:
                        if event.handle not in handles:
                            continue
                        if not isinstance(event, RequestDone):
                            raise _relabel(self.url, event.error)
                        results[event.handle] = event.response
        except trio.TooSlowError:
            raise TrackerTimeout(f"tracker {self.url} did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise TrackerUnreachable(f"tracker {self.url}: {exc.strerror or exc}") from None
        finally:
            for handle in handles - results.keys():
                self.client.cancel(handle)
        return results

    def _from_tracker(self, source: tuple[str, int]) -> bool:
        """Whether a datagram came from the tracker; an IPv4-mapped source (an IPv6 socket's view of an IPv4
        sender, ``::ffff:a.b.c.d``) counts as its IPv4 address, on either side."""
        try:
            ip = ipaddress.ip_address(unmap(source[0].split("%", 1)[0]))
        except ValueError:
            return False
        return ip == self._ip and source[1] == self._addr[1]


class HTTPTrackerSession:
    """One BEP 3 / BEP 48 tracker over HTTP(S); every request is its own connection."""

    def __init__(self, url: str, config: TrackerConfig) -> None:
        http.split_http_url(url)
        self.url = url
        self.config = config

    async def _get(self, url: str, timeout: float) -> http.HTTPResponse:
        try:
            with trio.fail_after(timeout):
                return await http.http_get(
                    url, max_size=self.config.max_response_size, max_redirects=self.config.max_redirects,
                    local_address=self.config.local_address, ssl_context=self.config.ssl_context)
        except trio.TooSlowError:
            raise TrackerTimeout(f"tracker {self.url} did not answer within {timeout:g} s") from None

    async def announce(self, request: AnnounceRequest, *, tracker_id: bytes | None = None,
                       timeout: float | None = None) -> AnnounceResult:
        response = await self._get(http.build_announce_url(self.url, request, tracker_id=tracker_id),
                                   timeout or self.config.timeout)
        try:
            r = http.parse_announce_response(http.check_response(response))
        except P2PWatchError as exc:
            raise _relabel(self.url, exc) from None
        return AnnounceResult(self.url, r.interval, r.min_interval, r.seeders, r.leechers, r.peers, r.warning,
                              r.tracker_id, r.external_ip, response.local_ip)

    async def scrape(self, infohashes: Sequence[bytes]) -> dict[bytes, ScrapeStats]:
        scrape_url = http.scrape_url_for(self.url)
        if scrape_url is None:
            raise TrackerError(f"tracker {self.url} has no scrape URL (BEP 48: path must end in 'announce')")
        wanted = set(infohashes)
        batch = max(1, self.config.http_scrape_batch)
        out: dict[bytes, ScrapeStats] = {}
        for i in range(0, len(infohashes), batch):
            response = await self._get(http.build_scrape_url(scrape_url, infohashes[i : i + batch]),
                                       self.config.timeout)
            try:
                stats = http.parse_scrape_response(http.check_response(response))
            except P2PWatchError as exc:
                raise _relabel(self.url, exc) from None
            out.update((h, s) for h, s in stats.items() if h in wanted)
        return out


@asynccontextmanager
async def open_udp_tracker(url: str, config: TrackerConfig | None = None) -> AsyncIterator[UDPTrackerSession]:
    config = config or TrackerConfig()
    host, port, url_data = parse_udp_url(url)
    try:
        with trio.fail_after(config.timeout):
            addresses = await http.resolve(host, port, udp=True)
    except trio.TooSlowError:
        raise TrackerTimeout(f"resolving tracker {url} took longer than {config.timeout:g} s") from None
    if config.local_address:
        family = ipaddress.ip_address(config.local_address).version
        addresses = [a for a in addresses if ipaddress.ip_address(a).version == family]
        if not addresses:
            raise TrackerUnreachable(f"tracker {url} has no address of the family of {config.local_address}")
    ip = addresses[0]
    netguard.current_policy().check(ip, port)
    bind = config.local_address or ("::" if ":" in ip else "0.0.0.0")
    sock = await netguard.open_udp_socket(bind, 0, purpose=UDP_SOCKET_PURPOSE)
    try:
        yield UDPTrackerSession(url, sock, (ip, port), url_data, config)
    finally:
        sock.close()


@asynccontextmanager
async def open_tracker(url: str, config: TrackerConfig | None = None) -> AsyncIterator[TrackerSession]:
    """A session for one tracker URL (``udp://``, ``http://`` or ``https://``)."""
    config = config or TrackerConfig()
    scheme = url.partition(":")[0].lower()
    if scheme == "udp":
        async with open_udp_tracker(url, config) as session:
            yield session
    elif scheme in ("http", "https"):
        yield HTTPTrackerSession(url, config)
    else:
        raise ConfigError(f"tracker URL {url!r} must start with udp://, http:// or https://")


def _check_infohash(infohash: bytes) -> None:
    if not isinstance(infohash, bytes) or len(infohash) != 20:
        raise LocalProtocolError("trackers take 20-byte infohashes (a v2 infohash truncated to 20 bytes)")


async def announce(url: str, infohash: bytes, *, peer_id: bytes = PEER_ID, port: int = 6881,
                   event: AnnounceEvent = AnnounceEvent.NONE, numwant: int = 200, left: int = 1,
                   uploaded: int = 0, downloaded: int = 0, key: int = ANNOUNCE_KEY,
                   tracker_id: bytes | None = None, config: TrackerConfig | None = None) -> AnnounceResult:
    """Announce once to one tracker and return what it said."""
    _check_infohash(infohash)
    request = AnnounceRequest(infohash, peer_id, port, event, downloaded, left, uploaded, key, numwant)
    async with open_tracker(url, config) as session:
        return await session.announce(request, tracker_id=tracker_id)


async def scrape(url: str, infohashes: Iterable[bytes], *,
                 config: TrackerConfig | None = None) -> dict[bytes, ScrapeStats]:
    """Scrape any number of infohashes (batched); infohashes the tracker does not report are absent."""
    hashes = list(dict.fromkeys(infohashes))
    for infohash in hashes:
        _check_infohash(infohash)
    if not hashes:
        return {}
    async with open_tracker(url, config) as session:
        return await session.scrape(hashes)


async def probe_tracker(url: str, infohash: bytes, *, peer_id: bytes = PEER_ID, port: int = 6881,
                        numwant: int = 200, left: int = 1, key: int = ANNOUNCE_KEY,
                        config: TrackerConfig | None = None) -> TrackerProbe:
    """Announce (started), deregister (stopped) so we leave no phantom peer, then scrape.

    The scrape comes last so that its counts do not include us. The ``stopped`` announce is sent whenever the
    ``started`` one may have registered us (anything but a refusal), even when the probe is cancelled.
    """
    _check_infohash(infohash)
    config = config or TrackerConfig()
    started = AnnounceRequest(infohash, peer_id, port, AnnounceEvent.STARTED, left=left, key=key,
                              num_want=numwant)
    stop = AnnounceRequest(infohash, peer_id, port, AnnounceEvent.STOPPED, left=left, key=key, num_want=0)
    async with open_tracker(url, config) as session:
        result: AnnounceResult | None = None
        stop_result: AnnounceResult | None = None
        registered = True
        stats: ScrapeStats | None = None
        scrape_error = stop_error = None
        try:
            result = await session.announce(started)
        except TrackerFailure:
            registered = False  # refused, so not listed
            raise
        finally:
            if registered:
                with trio.CancelScope(shield=True):
                    try:
                        stop_result = await session.announce(stop, timeout=config.stop_timeout,
                                                             tracker_id=result.tracker_id if result else None)
                    except P2PWatchError as exc:
                        stop_error = str(exc)
        try:
            stats = (await session.scrape([infohash])).get(infohash)
            if stats is None:
                scrape_error = "the tracker did not report this infohash"
        except P2PWatchError as exc:  # the scrape is a bonus: the announce already answered
            scrape_error = str(exc)
    local_ip = result.local_ip or config.local_address
    peers = tuple(p for p in result.peers if not (p.port == port and p.ip == local_ip))
    stopped = stop_result is not None
    return TrackerProbe(url, infohash, result, stats, scrape_error, stopped, stop_error, peers, stop_result)


class TrackerTiers:
    """BEP 12 tiers: tried in order, shuffled within a tier once; a tracker that answers goes first."""

    def __init__(self, tiers: Iterable[Iterable[str]], *, rng: random.Random | None = None) -> None:
        rng = rng or random.SystemRandom()
        seen: set[str] = set()
        self._tiers: list[list[str]] = []
        for tier in tiers:
            urls = [u for u in dict.fromkeys(u.strip() for u in tier) if u and u not in seen]
            seen.update(urls)
            rng.shuffle(urls)
            if urls:
                self._tiers.append(urls)

    @classmethod
    def from_metainfo(cls, metainfo: Any, *, rng: random.Random | None = None) -> TrackerTiers:
        """From a metainfo's ``trackers`` (BEP 12 ``announce-list`` tiers, or the single ``announce``)."""
        return cls(metainfo.trackers, rng=rng)

    @classmethod
    def from_magnet(cls, magnet: Any, *, rng: random.Random | None = None) -> TrackerTiers:
        """From a magnet's ``tr`` parameters: one tier per tracker, in the order given."""
        return cls(([url] for url in magnet.trackers), rng=rng)

    @property
    def tiers(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(tier) for tier in self._tiers)

    def __iter__(self) -> Iterator[str]:
        return iter([url for tier in self._tiers for url in tier])

    def __len__(self) -> int:
        return sum(len(tier) for tier in self._tiers)

    def promote(self, url: str) -> None:
        for tier in self._tiers:
            if url in tier:
                tier.remove(url)
                tier.insert(0, url)
                return


async def announce_tiers(tiers: TrackerTiers, infohash: bytes, **kwargs: Any) -> AnnounceResult:
    """Announce to the first tracker that answers, in BEP 12 order (``kwargs`` as for :func:`announce`)."""
    errors: list[tuple[str, P2PWatchError]] = []
    for url in tiers:
        try:
            result = await announce(url, infohash, **kwargs)
        except P2PWatchError as exc:
            errors.append((url, exc))
            continue
        tiers.promote(url)
        return result
    if not errors:
        raise ConfigError("no tracker to announce to")
    if len(errors) == 1:
        raise errors[0][1]
    summary = "; ".join(str(exc) for _, exc in errors)
    if all(isinstance(exc, P2PWatchTimeout) for _, exc in errors):
        raise TrackerTimeout(f"no tracker answered: {summary}")
    raise TrackerUnreachable(f"no tracker accepted the announce: {summary}")
