"""A lazy view of one file inside a torrent, served over HTTP on loopback, that fetches only what is read.

The perceptual matcher hands ffmpeg ``http://127.0.0.1:PORT/f`` instead of a file. ffmpeg reads the
container index and seeks to the frames it needs with HTTP ``Range`` requests; each request is answered
piece by piece, fetching a piece from the swarm (:class:`~p2pwatch.probe.bulk_fetch.TorrentReader`) only
when the response reaches it (DESIGN.md, principle 6).

"Reaches it" is measured at the reader, not at our socket. ffmpeg asks for open-ended ranges (``bytes=X-``)
and closes the connection when it seeks elsewhere, and on loopback the kernel buffers between us and it grow
to megabytes, so a server that fetched the next piece as soon as the previous one was written fetched
pieces ffmpeg never read (one to two per seek point, measured by scripts/bench_match.py; docs/DECISIONS.md).
So the next piece is fetched only once every byte of the previous one has left our socket for the reader's
(``TCP_NOTSENT_LOWAT`` of 1 wakes us when nothing is left unsent; the send buffer is small too) and the
connection is still open. How far ahead of the reader that is depends on its receive buffer, so ffmpeg is
given a small one and bounded range requests (:data:`FFMPEG_INPUT_OPTIONS`); then a reader that reads ``n``
bytes of a response and closes costs at most the pieces of those bytes and one more.

Only GET and HEAD with a single ``bytes=`` range are implemented (RFC 9110 §14); one request per
connection (``Connection: close``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from p2pwatch.errors import BindError
from p2pwatch.torrent.metainfo import FileEntry

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
SEND_BUFFER = 64 * 1024
#: How ffmpeg should read a lazy view, as (protocol, option, value): ranges of ``REQUEST_SIZE`` instead of
#: open-ended ones, and a receive buffer of ``RECEIVE_BUFFER`` instead of one that autotunes to megabytes, so
#: little that ffmpeg has not read can pile up ahead of it (p2pwatch.match.perceptual passes those its ffmpeg has)
REQUEST_SIZE = 128 * 1024
RECEIVE_BUFFER = 16 * 1024
FFMPEG_INPUT_OPTIONS = (("http", "request_size", REQUEST_SIZE), ("tcp", "recv_buffer_size", RECEIVE_BUFFER))
_TCP_ESTABLISHED = 1  # tcp_info.tcpi_state (Linux)

PieceSource = Callable[[int], Awaitable[bytes]]


@dataclass
class LazyViewStats:
    requests: int = 0
    bytes_served: int = 0
    connections_closed: int = 0
    pieces_touched: set[int] = field(default_factory=set)


class BadRange(Exception):
    pass


class PieceWithheld(OSError):
    """The piece source declines a piece the reader asked for (the one-keyframe screen caps what ffmpeg may
    read): the response ends there, as at the end of the file, and nothing is logged."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` to an inclusive (start, end), None for no header."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise BadRange(header)
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            n = int(last)
            return (max(0, size - n), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError as exc:
        raise BadRange(header) from exc
    if start >= size or end < start:
        raise BadRange(header)
    return start, min(end, size - 1)


class LazyFile:
    """Maps byte ranges of one torrent file onto pieces fetched on demand from ``piece_source``."""

    def __init__(self, file: FileEntry, piece_length: int, piece_source: PieceSource) -> None:
        self.file = file
        self.piece_length = piece_length
        self.piece_source = piece_source
        self.stats = LazyViewStats()

    @property
    def size(self) -> int:
        return self.file.length

    async def iter_range(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield the file's bytes ``start..end`` (inclusive), one piece's worth at a time."""
        pos = start
        while pos <= end:
            absolute = self.file.offset + pos
            index, within = divmod(absolute, self.piece_length)
            self.stats.pieces_touched.add(index)
            piece = await self.piece_source(index)
            chunk = piece[within : within + (end - pos + 1)]
            if not chunk:
                raise OSError(f"piece {index} is shorter than the file layout says")
            yield chunk
            pos += len(chunk)


async def _read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_HEAD:
            break
    return data


async def _handle(stream: trio.SocketStream, lazy: LazyFile) -> None:
    head = await _read_head(stream)
    lines = head.split(b"\r\n")
    try:
        method, _target, _version = lines[0].decode("latin-1").split(" ", 2)
    except ValueError:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    lazy.stats.requests += 1
    size = lazy.size
    if method not in ("GET", "HEAD"):
        await stream.send_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    try:
        wanted = parse_range(headers.get("range"), size)
    except BadRange:
        await stream.send_all(f"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\n"
                              "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        return
    start, end = wanted if wanted is not None else (0, size - 1)
    status = "206 Partial Content" if wanted is not None else "200 OK"
    response = (f"HTTP/1.1 {status}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {end - start + 1}\r\nConnection: close\r\n")
    if wanted is not None:
        response += f"Content-Range: bytes {start}-{end}/{size}\r\n"
    await stream.send_all((response + "\r\n").encode())
    if method == "HEAD" or size == 0:
        return
    pos = start
    async for chunk in lazy.iter_range(start, end):  # fetches the next piece only when asked for the next chunk
        await stream.send_all(chunk)
        lazy.stats.bytes_served += len(chunk)
        pos += len(chunk)
        if pos <= end and not await _wait_taken(stream):
            return  # the reader went away: the rest of the range is never fetched


async def _wait_taken(stream: trio.SocketStream) -> bool:
    """Wait until every byte written has left our socket for the reader's; False if the reader is gone."""
    await stream.wait_send_all_might_not_block()  # with TCP_NOTSENT_LOWAT 1: once nothing is left unsent
    return _connected(stream)


def _connected(stream: trio.SocketStream) -> bool:
    """Is the connection still established (the reader neither closed it nor reset it)? True where unknown."""
    if not hasattr(socket, "TCP_INFO"):
        return True
    try:
        info = stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    return not isinstance(info, bytes) or not info or info[0] == _TCP_ESTABLISHED


@asynccontextmanager
async def serve_lazy_file(lazy: LazyFile, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``lazy`` on a free loopback port for the block's duration; yields the URL."""
    try:
        listeners = await trio.open_tcp_listeners(0, host=host)
    except OSError as exc:
        raise BindError("TCP", host, 0, exc, purpose="the local media server for ffmpeg") from exc
    port = listeners[0].socket.getsockname()[1]

    async def connection(stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):  # writable only once everything written was sent
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 1)
        try:
            await _handle(stream, lazy)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, PieceWithheld):
            pass  # the reader closed the connection to seek elsewhere, or the source withheld the piece
        except Exception as exc:  # a failed piece fetch ends this response; ffmpeg sees a short read
            log.info("lazy view: %s", exc)
        finally:
            await trio.aclose_forcefully(stream)
            lazy.stats.connections_closed += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, connection, listeners)
        try:
            yield f"http://{host}:{port}/f"
        finally:
            nursery.cancel_scope.cancel()
