"""HTTP trackers (BEP 3, 7, 23, 48): URLs and bencoded replies on literals, the bounded HTTP/1.x reader,
hypothesis on both, and the client against a misbehaving HTTP tracker written for the test."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from urllib.parse import unquote_to_bytes, urlsplit

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch.errors import (
    ConfigError,
    NetworkRefused,
    TrackerError,
    TrackerFailure,
    TrackerTimeout,
    TrackerUnreachable,
)
from p2pwatch.probe import trackers
from p2pwatch.probe.http_tracker import (
    HTTPResponseReader,
    build_announce_url,
    build_scrape_url,
    decode_content,
    parse_announce_response,
    parse_scrape_response,
    scrape_url_for,
    split_http_url,
)
from p2pwatch.probe.udp_tracker import AnnounceEvent, AnnounceRequest, Peer, ScrapeStats
from p2pwatch.torrent import bencoding
from tests.conftest import loopback_address

IH = bytes.fromhex("00ff20" + "41" * 15 + "2526")  # NUL, 0xff, space, 'A'…, '%', '&'
PID = b"-PW0100-abcdefghijkl"

# --------------------------------------------------------------------------- URLs


def test_announce_url_encodes_raw_bytes_and_parameters() -> None:
    req = AnnounceRequest(IH, PID, 6881, AnnounceEvent.STARTED, downloaded=5, left=7, uploaded=3, key=0xABC,
                          num_want=200)
    url = build_announce_url("http://127.0.0.1:6969/announce", req, tracker_id=b"t 1")
    assert url == ("http://127.0.0.1:6969/announce?info_hash=%00%FF%20" + "A" * 15 + "%25%26"
                   "&peer_id=-PW0100-abcdefghijkl&port=6881&uploaded=3&downloaded=5&left=7&compact=1"
                   "&key=00000abc&numwant=200&event=started&trackerid=t%201")
    query = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))
    assert unquote_to_bytes(query["info_hash"]) == IH


def test_announce_url_keeps_an_existing_query_and_omits_defaults() -> None:
    req = AnnounceRequest(IH, PID, 1)
    url = build_announce_url("https://127.0.0.1/announce.php?passkey=abc#frag", req)
    assert url.startswith("https://127.0.0.1/announce.php?passkey=abc&info_hash=")
    assert "event=" not in url and "numwant=" not in url and "#" not in url


@pytest.mark.parametrize(("announce", "scrape"), [
    ("http://example.com/announce", "http://example.com/scrape"),
    ("http://example.com/x/announce", "http://example.com/x/scrape"),
    ("http://example.com/announce.php", "http://example.com/scrape.php"),
    ("http://example.com/announce?x2%0644", "http://example.com/scrape?x2%0644"),
    ("http://example.com/x%064announce", None),
    ("http://example.com/a", None),
    ("http://example.com/announce/x", None),
    ("http://example.com", None),
])
def test_scrape_url_follows_bep48(announce: str, scrape: str | None) -> None:
    assert scrape_url_for(announce) == scrape


def test_scrape_url_repeats_info_hash() -> None:
    url = build_scrape_url("http://127.0.0.1/scrape", [b"a" * 20, b"b" * 20])
    assert url == "http://127.0.0.1/scrape?info_hash=" + "a" * 20 + "&info_hash=" + "b" * 20


def test_split_http_url() -> None:
    assert split_http_url("http://127.0.0.1/announce?a=b c") == ("http", "127.0.0.1", 80, "/announce?a=b%20c",
                                                                   "127.0.0.1")
    assert split_http_url("https://[::1]:8443") == ("https", "::1", 8443, "/", "[::1]:8443")
    for bad in ("ftp://127.0.0.1/", "http:///announce", "http://127.0.0.1:99999/"):
        with pytest.raises(ConfigError):
            split_http_url(bad)


# --------------------------------------------------------------------------- bencoded replies

COMPACT = (b"d8:completei5e10:incompletei3e8:intervali1800e12:min intervali900e"
           b"5:peers12:\x7f\x00\x00\x02\x1a\xe1\x0a\x01\x02\x03\x00\x50"
           b"6:peers618:\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\x1a\xe2e")


def test_compact_announce_reply_with_peers6() -> None:
    r = parse_announce_response(COMPACT)
    assert (r.interval, r.min_interval, r.seeders, r.leechers) == (1800, 900, 5, 3)
    assert r.peers == (Peer("127.0.0.2", 6881), Peer("10.1.2.3", 80), Peer("2001:db8::1", 6882))


def test_dictionary_peer_list_skips_what_cannot_be_used() -> None:
    body = bencoding.encode({
        b"interval": 60, b"warning message": b"slow down", b"tracker id": b"xyz",
        b"external ip": b"\x7f\x00\x00\x09",
        b"peers": [
            {b"ip": b"127.0.0.5", b"port": 6881, b"peer id": PID},
            {b"ip": b"2001:db8::2", b"port": 1},
            {b"ip": b"tracker.example.com", b"port": 6881},  # a DNS name: never resolved
            {b"ip": b"127.0.0.6", b"port": 0},
        ],
    })
    r = parse_announce_response(body)
    assert r.peers == (Peer("127.0.0.5", 6881, PID), Peer("2001:db8::2", 1))
    assert r.skipped_peers == 2 and r.warning == "slow down" and r.tracker_id == b"xyz"
    assert r.external_ip == "127.0.0.9" and r.seeders is None


@pytest.mark.parametrize("body", [
    b"d14:failure reason7:go awaye",
    b"d14:failure_reason7:go awaye",  # BEP 48 spelling
    b"d14:failure reason7:go away8:intervali5ee",
])
def test_failure_reason_is_a_tracker_failure(body: bytes) -> None:
    with pytest.raises(TrackerFailure) as info:
        parse_announce_response(body)
    assert info.value.reason == "go away"
    with pytest.raises(TrackerFailure):
        parse_scrape_response(body)


@pytest.mark.parametrize("body", [
    b"", b"<html>", b"le", b"d5:peers5:abcdee", b"d6:peers67:abcdefge", b"d5:peersi1ee", b"d8:completei-1ee",
    b"d5:peersl1:xee", b"d6:peers6le", b"d8:intervald", b"d8:interval3:abce", b"d14:failure reasoni1ee",
    b"d10:tracker idi1ee",
])
def test_malformed_announce_replies_are_typed_errors(body: bytes) -> None:
    with pytest.raises(TrackerError):
        parse_announce_response(body)


def test_scrape_reply_bep48_example() -> None:
    x, y = b"x" * 20, b"y" * 20
    body = (b"d5:filesd20:" + x + b"d8:completei11e10:downloadedi13772e10:incompletei19ee"
            b"20:" + y + b"d8:completei21e10:downloadedi206e10:incompletei20ee"
            b"3:v2xd8:completei1eeee")
    assert parse_scrape_response(body) == {x: ScrapeStats(11, 13772, 19), y: ScrapeStats(21, 206, 20)}
    bad_entries = (b"d5:filesd20:" + x + b"i1eee", b"d5:filesd20:" + x + b"d8:completei-2eeee")
    for bad in (b"de", b"d5:filesi1ee", *bad_entries):
        with pytest.raises(TrackerError):
            parse_scrape_response(bad)


bencodable = st.recursive(
    st.binary(max_size=40) | st.integers(-5, 2**40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from([b"peers", b"peers6", b"interval", b"complete", b"incomplete", b"files", b"ip",
                         b"port", b"failure reason", b"tracker id", b"warning message", b"external ip",
                         b"downloaded", b"min interval", b"peer id", b"x" * 20]) | st.binary(max_size=20),
        children, max_size=6),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([b"peers", b"peers6", b"interval", b"complete", b"files"]), bencodable,
                       max_size=5))
def test_reply_parsers_raise_only_typed_errors_on_structures(value: dict[bytes, object]) -> None:
    body = bencoding.encode(value)
    for parse in (parse_announce_response, parse_scrape_response):
        with contextlib.suppress(TrackerError):
            parse(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_reply_parsers_raise_only_typed_errors_on_bytes(body: bytes) -> None:
    for parse in (parse_announce_response, parse_scrape_response):
        with contextlib.suppress(TrackerError):
            parse(body)


# --------------------------------------------------------------------------- the HTTP/1.x reader

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def _read(data: bytes, *, chunk: int | None = None, max_size: int = 1024, eof: bool = True) -> bytes:
    reader = HTTPResponseReader(max_size=max_size, max_header=256)
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step])
    if eof:
        reader.feed_eof()
    response = reader.response()
    assert response.status == 200
    return response.body


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_reader_content_length_whole_bytewise_and_with_trailing_data(chunk: int | None) -> None:
    assert _read(RESPONSE, chunk=chunk) == b"hello"
    assert _read(RESPONSE + b"trailing junk", chunk=chunk) == b"hello"


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_reader_chunked_and_gzip(chunk: int | None) -> None:
    payload = gzip.compress(b"d8:intervali60ee")
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in (payload[:10], payload[10:]))
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + body
            + b"0\r\nX-Trailer: 1\r\n\r\n")
    assert _read(data, chunk=chunk) == b"d8:intervali60ee"


def test_reader_until_close_bare_newlines_and_interim_responses() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\nServer: x\n\nbody to the end"
    assert _read(data, chunk=4) == b"body to the end"


@pytest.mark.parametrize(("data", "match"), [
    (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 300, "header block exceeds"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", "exceeds 1024"),  # refused before any body byte
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1025, "exceeds 1024"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n", "exceeds 1024"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd", "CRLF"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed HTTP header"),
])
def test_reader_rejects_with_typed_errors(data: bytes, match: str) -> None:
    reader = HTTPResponseReader(max_size=1024, max_header=256)
    with pytest.raises(TrackerError, match=match):
        reader.feed(data)
        reader.feed_eof()


def test_reader_premature_eof() -> None:
    reader = HTTPResponseReader()
    reader.feed(RESPONSE[:-2])
    with pytest.raises(TrackerError, match="closed"):
        reader.feed_eof()


def test_decode_content_is_bounded() -> None:
    bomb = gzip.compress(b"\x00" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(TrackerError, match="exceeds"):
        decode_content(bomb, "gzip", 1024 * 1024)
    assert decode_content(zlib.compress(b"abc"), "deflate", 10) == b"abc"
    raw = zlib.compressobj(wbits=-15)
    assert decode_content(raw.compress(b"abc") + raw.flush(), "deflate", 10) == b"abc"
    with pytest.raises(TrackerError, match="truncated"):
        decode_content(gzip.compress(b"abc" * 100)[:20], "gzip", 1000)
    with pytest.raises(TrackerError, match="unsupported"):
        decode_content(b"x", "br", 10)
    with pytest.raises(TrackerError, match="corrupt"):
        decode_content(b"not gzip at all", "gzip", 10)


HEADS = [b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
         b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 30\r\n\r\n\x1f\x8b\x08",
         b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n\r\n", b"HTTP/1.0 302 Found\r\nLocation: /x\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(HEADS), st.binary(max_size=400), st.integers(1, 50))
def test_reader_raises_only_typed_errors(head: bytes, tail: bytes, step: int) -> None:
    data = head + tail
    reader = HTTPResponseReader(max_size=256, max_header=128)
    with contextlib.suppress(TrackerError):
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
        reader.feed_eof()
        assert reader.done
        assert len(reader.response().body) <= 256


# --------------------------------------------------------------------------- a misbehaving HTTP tracker


def _reply(body: bytes, status: str = "200 OK", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status.encode(), len(body), headers, body)


class FakeHTTPTracker:
    """Answers by the first path segment: good, gzip, huge, bigcl, loop, away, fail, garbage, 500, silent…"""

    def __init__(self) -> None:
        self.requests: list[str] = []

    async def serve(self, ip: str, *,
                    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=ip)
        task_status.started((ip, listeners[0].socket.getsockname()[1]))
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        request = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(4096)
                if not data:
                    return
                request += data
            target = request.split(b" ")[1].decode()
            self.requests.append(target)
            await self._respond(stream, target)
        await stream.aclose()

    async def _respond(self, stream: trio.SocketStream, target: str) -> None:
        parts = urlsplit(target)
        mode = parts.path.strip("/").split("/")[0]
        hashes = [unquote_to_bytes(p[10:]) for p in parts.query.split("&") if p.startswith("info_hash=")]
        if parts.path.endswith("scrape"):
            files = {h: {b"complete": 1, b"downloaded": 2, b"incomplete": h[0]} for h in hashes}
            await stream.send_all(_reply(bencoding.encode({b"files": files})))
        elif mode == "gzip":
            body = gzip.compress(COMPACT)
            head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            await stream.send_all(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        elif mode == "huge":
            await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\n")
            while True:
                await stream.send_all(b"d" * 65536)
        elif mode == "bigcl":
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            await trio.sleep_forever()
        elif mode in ("loop", "away", "hop", "udp"):
            location = {"loop": target, "away": "http://10.0.0.1/announce", "hop": "/good/announce",
                        "udp": "udp://127.0.0.1:1/announce"}[mode]
            await stream.send_all(_reply(b"", "302 Found", b"Location: " + location.encode() + b"\r\n"))
        elif mode == "fail":
            await stream.send_all(_reply(b"d14:failure reason20:unregistered torrente", "400 Bad Request"))
        elif mode == "garbage":
            await stream.send_all(_reply(b"<html>not bencode</html>"))
        elif mode == "500":
            await stream.send_all(_reply(b"oops", "500 Internal Server Error"))
        elif mode == "silent":
            await trio.sleep_forever()
        else:
            await stream.send_all(_reply(COMPACT))


@contextlib.asynccontextmanager
async def _fake_tracker():  # type: ignore[no-untyped-def]
    fake = FakeHTTPTracker()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(fake.serve, loopback_address())
        yield fake, f"http://{host}:{port}"
        nursery.cancel_scope.cancel()


async def test_announce_gzip_chunked_and_redirect() -> None:
    with trio.fail_after(10):
        async with _fake_tracker() as (fake, base):
            plain = await trackers.announce(f"{base}/good/announce", IH)
            packed = await trackers.announce(f"{base}/gzip/announce", IH)
            hopped = await trackers.announce(f"{base}/hop/announce", IH)
    assert plain.peers == packed.peers == hopped.peers
    assert Peer("2001:db8::1", 6882) in plain.peers
    assert (plain.seeders, plain.leechers, plain.interval, plain.min_interval) == (5, 3, 1800, 900)
    assert plain.local_ip is not None and plain.local_ip.startswith("127.")
    assert [r.split("?")[0] for r in fake.requests] == ["/good/announce", "/gzip/announce", "/hop/announce",
                                                       "/good/announce"]


async def test_scrape_is_batched_over_several_requests() -> None:
    hashes = [bytes([i]) * 20 for i in range(1, 151)]
    config = trackers.TrackerConfig(http_scrape_batch=64)
    with trio.fail_after(10):
        async with _fake_tracker() as (fake, base):
            stats = await trackers.scrape(f"{base}/announce", hashes, config=config)
    assert stats == {h: ScrapeStats(1, 2, h[0]) for h in hashes}
    assert [r.count("info_hash=") for r in fake.requests] == [64, 64, 22]
    assert all(r.startswith("/scrape?") for r in fake.requests)


async def test_scrape_needs_a_bep48_scrape_url() -> None:
    with pytest.raises(TrackerError, match="no scrape URL"):
        await trackers.scrape("http://127.0.0.1:1/tracker", [IH])


@pytest.mark.parametrize(("mode", "error", "match"), [
    ("huge", TrackerError, "exceeds"),
    ("bigcl", TrackerError, "exceeds"),
    ("loop", TrackerError, "redirected more than 3 times"),
    ("away", NetworkRefused, r"10\.0\.0\.1"),
    ("udp", TrackerError, "unusable URL"),
    ("fail", TrackerFailure, "unregistered torrent"),
    ("garbage", TrackerError, "not valid bencode"),
    ("500", TrackerError, "HTTP 500"),
])
async def test_misbehaving_http_tracker(mode: str, error: type[Exception], match: str) -> None:
    with trio.fail_after(10):
        async with _fake_tracker() as (fake, base):
            with pytest.raises(error, match=match):
                await trackers.announce(f"{base}/{mode}/announce", IH)
    if mode == "loop":
        assert len(fake.requests) == 4  # the first request and three redirects


async def test_silent_http_tracker_is_a_typed_timeout(autojump_clock: object) -> None:
    config = trackers.TrackerConfig(timeout=30)
    with trio.fail_after(100):
        async with _fake_tracker() as (_, base):
            with pytest.raises(TrackerTimeout, match="within 30 s"):
                await trackers.announce(f"{base}/silent/announce", IH, config=config)


async def test_nothing_listening_is_unreachable() -> None:
    ip = loopback_address()
    listeners = await trio.open_tcp_listeners(0, host=ip)
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with pytest.raises(TrackerUnreachable, match="cannot connect"):
        await trackers.announce(f"http://{ip}:{port}/announce", IH)


async def test_probe_over_http_deregisters_and_hides_itself() -> None:
    with trio.fail_after(10):
        async with _fake_tracker() as (fake, base):
            probe = await trackers.probe_tracker(f"{base}/good/announce", IH, port=80)
    assert [("event=stopped" in r, r.split("?")[0]) for r in fake.requests] == [
        (False, "/good/announce"), (True, "/good/announce"), (False, "/good/scrape")]
    assert "event=started" in fake.requests[0] and "numwant=200" in fake.requests[0]
    assert probe.stopped and probe.scrape == ScrapeStats(1, 2, IH[0])
    assert Peer("10.1.2.3", 80) in probe.peers  # another IP with our port is not us
