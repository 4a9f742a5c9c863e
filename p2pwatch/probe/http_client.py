"""Minimal HTTP/1.1 client for BEP 3 / BEP 48 tracker requests: a sans-IO response reader and a trio GET.

:class:`HTTPResponseReader` is a sans-IO HTTP/1.x response parser (``Content-Length``, chunked, or until
close) that bounds the header block and the body, and :func:`decode_content` undoes gzip/deflate within the
same bound. :func:`http_get` is the one small I/O piece: a GET over :func:`p2pwatch.netguard.open_tcp_stream`
(``trio.SSLStream`` for https) that follows at most ``max_redirects`` redirects, each through netguard again.
Tracker host names are resolved with the system resolver (:func:`resolve`) and every address is checked by
netguard. :mod:`p2pwatch.probe.http_tracker` re-exports every name here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import zlib
from dataclasses import dataclass, replace
from urllib.parse import quote, urljoin, urlsplit

import trio

from p2pwatch import __version__, limits, netguard
from p2pwatch.endpoints import format_addr
from p2pwatch.errors import ConfigError, NetworkRefused, TrackerError, TrackerUnreachable

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] +(\d{3})(?: +(.*))?")


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: Our side of the TCP connection (the address the tracker saw), set by :func:`http_get`.
    local_ip: str | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


class HTTPResponseReader:
    """Sans-IO HTTP/1.x response parser with a bounded header block and body."""

    def __init__(self, *, max_size: int = limits.MAX_TRACKER_RESPONSE,
                 max_header: int = limits.MAX_HTTP_HEADER) -> None:
        self.max_size = max_size
        self.max_header = max_header
        self._buf = bytearray()
        self._state = "head"
        self._status = 0
        self._reason = ""
        self._headers: tuple[tuple[str, str], ...] = ()
        self._remaining = 0  # fixed-length bytes still due, or the current chunk's size
        self._body = bytearray()
        self.done = False

    def feed(self, data: bytes | bytearray) -> None:
        if self.done:
            return
        self._buf += data
        self._advance()

    def feed_eof(self) -> None:
        if self.done:
            return
        if self._state == "until-close":
            self._body += self._buf
            self._check_size(0)
            self.done = True
            return
        raise TrackerError("tracker closed the connection before the HTTP response ended")

    def response(self) -> HTTPResponse:
        if not self.done:
            raise TrackerError("HTTP response is incomplete")
        body = decode_content(bytes(self._body), self._header("content-encoding"), self.max_size)
        return HTTPResponse(self._status, self._reason, self._headers, body)

    def _header(self, name: str) -> str | None:
        return next((v for k, v in self._headers if k == name), None)

    def _check_size(self, extra: int) -> None:
        if len(self._body) + extra > self.max_size:
            raise TrackerError(f"tracker response exceeds {self.max_size} bytes")

    def _advance(self) -> None:
        while not self.done:
            before = (self._state, len(self._buf))
            if self._state == "head":
                self._parse_head()
            elif self._state == "fixed":
                take = min(self._remaining, len(self._buf))
                self._body += self._buf[:take]
                del self._buf[:take]
                self._remaining -= take
                self.done = self._remaining == 0
            elif self._state == "until-close":
                self._check_size(len(self._buf))
                self._body += self._buf
                self._buf.clear()
            elif self._state == "chunk-size":
                self._parse_chunk_size()
            elif self._state == "chunk-data":
                if len(self._buf) < self._remaining + 2:
                    return
                if self._buf[self._remaining : self._remaining + 2] != b"\r\n":
                    raise TrackerError("chunk data is not followed by CRLF")
                self._body += self._buf[: self._remaining]
                del self._buf[: self._remaining + 2]
                self._state = "chunk-size"
            elif self._state == "trailers":
                end = self._buf.find(b"\n")
                if end < 0:
                    if len(self._buf) > self.max_header:
                        raise TrackerError("HTTP trailers are too long")
                    return
                line = bytes(self._buf[:end]).strip()
                del self._buf[: end + 1]
                self.done = not line
            if (self._state, len(self._buf)) == before and not self.done:
                return

    def _parse_head(self) -> None:
        match = _HEADER_END.search(self._buf, 0, self.max_header + 4)
        if match is None:
            if len(self._buf) > self.max_header:
                raise TrackerError(f"HTTP header block exceeds {self.max_header} bytes")
            return
        head = bytes(self._buf[: match.start()])
        del self._buf[: match.end()]
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        status = _STATUS_LINE.fullmatch(lines[0])
        if status is None:
            raise TrackerError(f"not an HTTP response: {lines[0][:80]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise TrackerError(f"malformed HTTP header line {line[:80]!r}")
            headers.append((name.strip().decode("latin-1").lower(), value.strip().decode("latin-1")))
        code = int(status.group(1))
        if 100 <= code < 200:  # interim response: the real one follows
            return
        self._status, self._reason = code, (status.group(2) or b"").decode("latin-1")
        self._headers = tuple(headers)
        if code in (204, 304):
            self.done = True
        elif "chunked" in (self._header("transfer-encoding") or "").lower():
            self._state = "chunk-size"
        elif (length := self._header("content-length")) is not None:
            if not length.isdigit() or len(length) > 18:
                raise TrackerError(f"bad Content-Length {length[:40]!r}")
            self._remaining = int(length)
            self._check_size(self._remaining)
            self._state = "fixed"
            self.done = self._remaining == 0
        else:
            self._state = "until-close"

    def _parse_chunk_size(self) -> None:
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > 1024:
                raise TrackerError("chunk size line is too long")
            return
        text = bytes(self._buf[:end]).split(b";", 1)[0].strip()
        del self._buf[: end + 1]
        try:
            size = int(text, 16) if text and len(text) <= 16 else -1
        except ValueError:
            size = -1
        if size < 0:
            raise TrackerError(f"bad chunk size {text[:40]!r}")
        self._check_size(size)
        self._remaining = size
        self._state = "chunk-data" if size else "trailers"


def decode_content(body: bytes, encoding: str | None, max_size: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate) without producing more than ``max_size`` bytes."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name in ("gzip", "x-gzip"):
        wbits = 31
    elif name == "deflate":
        wbits = 15 if body[:1] == b"\x78" else -15
    else:
        raise TrackerError(f"unsupported Content-Encoding {name[:40]!r}")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_size + 1)
    except zlib.error as exc:
        raise TrackerError(f"corrupt {name} body: {exc}") from None
    if len(out) > max_size or inflater.unconsumed_tail:
        raise TrackerError(f"decompressed tracker response exceeds {max_size} bytes")
    if not inflater.eof:
        raise TrackerError(f"truncated {name} body")
    return out


def build_get_request(host_header: str, target: str) -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: p2pwatch/{__version__}\r\n"
            "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n").encode("ascii")


def split_http_url(url: str) -> tuple[str, str, int, str, str]:
    """``http(s)://host[:port]/path?query`` -> (scheme, host, port, request target, Host header)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"tracker URL {url!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"tracker URL {url!r} must be http://HOST[:PORT]/… or https://…")
    host = parts.hostname
    default = 443 if scheme == "https" else 80
    port = port or default
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe="!$%&'()*+,/:;=?@~")
    shown = f"[{host}]" if ":" in host else host
    return scheme, host, port, target, shown if port == default else f"{shown}:{port}"


async def resolve(host: str, port: int, *, udp: bool = False) -> list[str]:
    """The addresses of ``host`` that netguard allows (an IP literal is returned as is, without DNS)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=kind)
    except OSError as exc:
        raise TrackerUnreachable(f"cannot resolve tracker host {host!r}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [a for a in addresses if netguard.current_policy().allows(a)]
    if not allowed:
        raise NetworkRefused(f"network policy refuses every address of {host!r}")
    return allowed


async def _open(host: str, port: int, local_address: str | None) -> trio.SocketStream:
    errors = []
    for ip in await resolve(host, port):
        try:
            return await netguard.open_tcp_stream(ip, port, local_address=local_address)
        except OSError as exc:
            errors.append(f"{ip}: {exc.strerror or exc}")
    raise TrackerUnreachable(f"cannot connect to tracker {format_addr((host, port))}: {'; '.join(errors)}")


async def _get_once(url: str, *, max_size: int, local_address: str | None,
                    ssl_context: ssl.SSLContext | None) -> HTTPResponse:
    scheme, host, port, target, host_header = split_http_url(url)
    tcp = await _open(host, port, local_address)
    local_ip = str(tcp.socket.getsockname()[0])
    stream: trio.abc.Stream = tcp
    try:
        if scheme == "https":
            stream = trio.SSLStream(tcp, ssl_context or ssl.create_default_context(), server_hostname=host)
        await stream.send_all(build_get_request(host_header, target))
        reader = HTTPResponseReader(max_size=max_size)
        while not reader.done:
            data = await stream.receive_some(65536)
            if not data:
                reader.feed_eof()
                break
            reader.feed(data)
        return replace(reader.response(), local_ip=local_ip)
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
        raise TrackerUnreachable(f"tracker {format_addr((host, port))} broke the connection: {exc}") from None
    finally:
        await trio.aclose_forcefully(stream)


async def http_get(url: str, *, max_size: int = limits.MAX_TRACKER_RESPONSE,
                   max_redirects: int = limits.MAX_HTTP_REDIRECTS, local_address: str | None = None,
                   ssl_context: ssl.SSLContext | None = None) -> HTTPResponse:
    """GET ``url`` and return the final response after at most ``max_redirects`` redirects."""
    current = url
    for hop in range(max_redirects + 1):
        response = await _get_once(current, max_size=max_size, local_address=local_address,
                                   ssl_context=ssl_context)
        location = response.header("location")
        if response.status not in _REDIRECTS or not location:
            return response
        if hop == max_redirects:
            break
        current = urljoin(current, location.strip())
        try:
            split_http_url(current)  # only http(s) targets; netguard checks the address on connect
        except ConfigError:
            raise TrackerError(f"tracker {url} redirected to an unusable URL {current[:200]!r}") from None
    raise TrackerError(f"tracker {url} redirected more than {max_redirects} times")
