"""The lazy view fetches a piece only once the reader has taken (nearly) all of the one before: a reader that
reads ``n`` bytes of an open-ended range and closes costs the pieces of those bytes and at most one more, however
long the rest of the range (loopback sockets; the reader's receive buffer is small, as ffmpeg's is made)."""

from __future__ import annotations

import socket

import pytest
import trio

from p2pwatch.match.lazyview import LazyFile, parse_range, serve_lazy_file
from p2pwatch.torrent.metainfo import FileEntry

PIECE = 16 * 1024  # smaller than our send buffer: only waiting for the reader keeps the next piece unfetched
PIECES = 64


def _piece_bytes(index: int) -> bytes:
    return bytes((index * 7 + i) % 251 for i in range(PIECE))


class CountingSource:
    def __init__(self) -> None:
        self.fetched: list[int] = []

    async def __call__(self, index: int) -> bytes:
        self.fetched.append(index)
        return _piece_bytes(index)


def _lazy(source: CountingSource) -> LazyFile:
    return LazyFile(FileEntry(0, ("v.mp4",), PIECE * PIECES, 0, False, "", None), PIECE, source)


async def _get(url: str, range_header: str | None, limit: int | None) -> tuple[bytes, bytes]:
    """Send a GET, read the head and at most ``limit`` body bytes (all when None), close; (head, body)."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # as ffmpeg's -recv_buffer_size does
    await sock.connect((host, int(port)))
    request = "GET /f HTTP/1.1\r\nHost: x\r\n" + (f"Range: {range_header}\r\n" if range_header else "") + "\r\n"
    await sock.send(request.encode())
    data = bytearray()
    with sock:
        while b"\r\n\r\n" not in data:
            data += await sock.recv(1024)
        head, _, first = bytes(data).partition(b"\r\n\r\n")
        body = bytearray(first)
        while limit is None or len(body) < limit:
            chunk = await sock.recv(4096 if limit is None else min(4096, limit - len(body)))
            if not chunk:
                break
            body += chunk
    return head, bytes(body if limit is None else body[:limit])


async def _closed(lazy: LazyFile, count: int) -> None:
    with trio.fail_after(20):
        while lazy.stats.connections_closed < count:
            await trio.sleep(0.001)


@pytest.mark.parametrize(("start", "read"), [(0, 1), (0, 100_000), (PIECE // 2, 3 * PIECE), (5 * PIECE + 17, 40_000),
                                             (0, 4 * PIECE)])
async def test_a_reader_that_stops_costs_at_most_one_piece_more(start: int, read: int) -> None:
    source = CountingSource()
    lazy = _lazy(source)
    async with serve_lazy_file(lazy) as url:
        head, body = await _get(url, f"bytes={start}-", read)
        await _closed(lazy, 1)
    assert head.startswith(b"HTTP/1.1 206") and len(body) == read
    expected = b"".join(_piece_bytes(i) for i in range(start // PIECE, (start + read - 1) // PIECE + 1))
    assert body == expected[start % PIECE : start % PIECE + read]
    first, last = start // PIECE, (start + read - 1) // PIECE
    assert source.fetched[: last - first + 1] == list(range(first, last + 1))
    assert len(source.fetched) <= last - first + 2, source.fetched  # the pieces read, and at most the next one


async def test_whole_and_bounded_ranges_are_served_exactly() -> None:
    source = CountingSource()
    lazy = _lazy(source)
    whole = b"".join(_piece_bytes(i) for i in range(PIECES))
    async with serve_lazy_file(lazy) as url:
        head, body = await _get(url, None, None)
        assert head.startswith(b"HTTP/1.1 200") and body == whole
        head, body = await _get(url, f"bytes={PIECE - 10}-{2 * PIECE + 9}", None)
        assert head.startswith(b"HTTP/1.1 206") and body == whole[PIECE - 10 : 2 * PIECE + 10]
        assert f"Content-Range: bytes {PIECE - 10}-{2 * PIECE + 9}/{len(whole)}".encode() in head
        await _closed(lazy, 2)
    assert sorted(source.fetched[PIECES:]) == [0, 1, 2]


def test_parse_range() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=10-", 100) == (10, 99)
    assert parse_range("bytes=-30", 100) == (70, 99)
    assert parse_range("bytes=5-500", 100) == (5, 99)
