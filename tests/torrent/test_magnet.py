"""Infohash text forms and magnet URIs (BEP 9, BEP 52 btmh): literals, libtorrent, hypothesis."""

from __future__ import annotations

import base64

import libtorrent as lt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch import limits
from p2pwatch.errors import LocalProtocolError, MetainfoError
from p2pwatch.torrent.magnet import InfoHash, Magnet, parse_infohash, parse_magnet

V1 = bytes.fromhex("c12fe1c06bba254a9dc9f519b335aa7c1367a88a")
V2 = bytes.fromhex("1f1a3c5b8e5d6a7b9c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d")
V1_B32 = base64.b32encode(V1).decode()  # 32 characters, no padding for 20 bytes


# --- parse_infohash ------------------------------------------------------------------------------------


def test_parse_infohash_accepted_forms() -> None:
    assert parse_infohash(V1.hex()) == InfoHash(V1, None)
    assert parse_infohash(V1.hex().upper()) == InfoHash(V1, None)
    assert parse_infohash(f"  {V1.hex()}\n") == InfoHash(V1, None)
    assert parse_infohash(V2.hex()) == InfoHash(None, V2)
    assert len(V1_B32) == 32
    assert parse_infohash(V1_B32) == InfoHash(V1, None)
    assert parse_infohash(V1_B32.lower()) == InfoHash(V1, None)
    assert parse_infohash("1220" + V2.hex()) == InfoHash(None, V2)


def test_base32_literal() -> None:
    # 20 zero bytes are 32 'A's in base32; 20 0xff bytes are 32 '7's
    assert parse_infohash("A" * 32).v1 == bytes(20)
    assert parse_infohash("7" * 32).v1 == b"\xff" * 20


@pytest.mark.parametrize(
    "text",
    ["", "abc", V1.hex()[:-1], V1.hex() + "0", "g" * 40, V2.hex()[:-2], "1" * 32, "8" * 32, "magnet:?xt=x"],
)
def test_parse_infohash_refuses_with_what_is_accepted(text: str) -> None:
    with pytest.raises(MetainfoError, match=r"40 hex characters .* 64 hex characters .* 32 base32"):
        parse_infohash(text)


def test_parse_infohash_refuses_non_text() -> None:
    with pytest.raises(MetainfoError):
        parse_infohash(V1)  # type: ignore[arg-type]


def test_infohash_properties() -> None:
    v1 = InfoHash(V1, None)
    v2 = InfoHash(None, V2)
    hybrid = InfoHash(V1, V2)
    assert v1.hex == V1.hex() and v1.dht_id == V1
    assert v2.hex == V2.hex() and v2.dht_id == V2[:20]
    assert hybrid.hex == V1.hex() and hybrid.dht_id == V1
    assert str(v2) == V2.hex()
    for bad in ((None, None), (V1[:19], None), (None, V1), (V2, None)):
        with pytest.raises(LocalProtocolError):
            InfoHash(*bad)


# --- parse_magnet --------------------------------------------------------------------------------------


def test_parse_typical_v1_magnet() -> None:
    uri = (
        f"magnet:?xt=urn:btih:{V1.hex()}&dn=My+File%20%C3%A9.mkv"
        "&tr=udp%3A%2F%2Ftracker.example%3A1337%2Fannounce&tr=http%3A%2F%2Ft2.example%2Fa%3Fk%3D1%26j%3D2"
        "&tr=udp%3A%2F%2Ftracker.example%3A1337%2Fannounce"
        "&x.pe=127.0.0.5:6881&x.pe=[::1]:51413&x.pe=peer.example:80&x.pe=bad&x.pe=1.2.3.4:0&x.pe=1.2.3.4:70000"
        "&ws=http%3A%2F%2Fseed.example%2Ff&xl=1234&so=0"
    )
    m = parse_magnet(uri)
    assert m.infohash == InfoHash(V1, None)
    assert m.display_name == "My File é.mkv"
    assert m.trackers == ("udp://tracker.example:1337/announce", "http://t2.example/a?k=1&j=2")
    assert m.peers == (("127.0.0.5", 6881), ("::1", 51413), ("peer.example", 80))
    assert m.web_seeds == ("http://seed.example/f",)
    assert m.exact_length == 1234


def test_parse_hybrid_and_v2_magnets() -> None:
    hybrid = parse_magnet(f"magnet:?xt=urn:btih:{V1.hex()}&xt=urn:btmh:1220{V2.hex()}")
    assert hybrid.infohash == InfoHash(V1, V2)
    v2 = parse_magnet(f"magnet:?xt=urn:btmh:1220{V2.hex().upper()}")
    assert v2.infohash == InfoHash(None, V2)
    assert v2.display_name is None and v2.trackers == () and v2.exact_length is None


def test_parse_magnet_variants() -> None:
    assert parse_magnet(f"MAGNET:?XT=URN:BTIH:{V1_B32}").infohash.v1 == V1
    assert parse_magnet(f"magnet:?xt.1=urn:btih:{V1.hex()}&tr.1=http://a/&tr.2=http://b/").trackers == (
        "http://a/",
        "http://b/",
    )
    other = parse_magnet(f"magnet:?xt=urn:sha1:ABCDEF&xt=urn:btih:{V1.hex()}&xt=urn:btih:{V1_B32}")
    assert other.infohash == InfoHash(V1, None)
    assert parse_magnet(f"  magnet:?xt=urn:btih:{V1.hex()}&xl=-5&xl=abc\n").exact_length is None
    assert parse_magnet(f"magnet:?xt=urn:btih:{V1.hex()}&dn=&dn=second").display_name == ""


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("magnet:?dn=nothing", "no BitTorrent 'xt'"),
        ("magnet:?xt=urn:sha1:ABCDEF", "no BitTorrent 'xt'"),
        ("magnet:", "no BitTorrent 'xt'"),
        (f"magnet:?xt=urn:btih:{V1.hex()[:-1]}", "expected 40 hex or 32 base32"),
        ("magnet:?xt=urn:btih:" + "1" * 32, "expected 40 hex or 32 base32"),
        (f"magnet:?xt=urn:btih:{V2.hex()}", "expected 40 hex or 32 base32"),
        (f"magnet:?xt=urn:btmh:1114{V2.hex()}", "only SHA-256"),
        (f"magnet:?xt=urn:btmh:1220{V2.hex()}00", "64 hex characters"),
        ("magnet:?xt=urn:btmh:1220xyz", "expected hex"),
        (f"magnet:?xt=urn:btih:{V1.hex()}&xt=urn:btih:{bytes(20).hex()}", "two different v1"),
        (f"http://example.com/?xt=urn:btih:{V1.hex()}", "not a magnet URI"),
        (V1.hex(), "not a magnet URI"),
        ("", "not a magnet URI"),
    ],
)
def test_parse_magnet_refuses(uri: str, message: str) -> None:
    with pytest.raises(MetainfoError, match=message):
        parse_magnet(uri)


def test_parse_magnet_refuses_over_long_uri() -> None:
    uri = f"magnet:?xt=urn:btih:{V1.hex()}&dn=" + "a" * limits.MAX_MAGNET_LENGTH
    with pytest.raises(MetainfoError, match="exceeds the limit"):
        parse_magnet(uri)


def test_to_uri_round_trip_and_libtorrent_agrees() -> None:
    m = Magnet(
        infohash=InfoHash(V1, V2),
        display_name="a & b = c/ü",
        trackers=("udp://t.example:80/announce", "http://t.example/a?x=1&y=2"),
        peers=(("127.0.0.9", 6881), ("::1", 1)),
        web_seeds=("http://w.example/",),
        exact_length=99,
    )
    uri = m.to_uri()
    assert uri.startswith(f"magnet:?xt=urn:btih:{V1.hex()}&xt=urn:btmh:1220{V2.hex()}&dn=")
    assert parse_magnet(uri) == m
    params = lt.parse_magnet_uri(uri)
    assert params.info_hashes.v1.to_bytes() == V1
    assert params.info_hashes.v2.to_bytes() == V2
    assert params.name == "a & b = c/ü"
    assert list(params.trackers) == list(m.trackers)


def test_libtorrent_magnet_parses_here() -> None:
    params = lt.add_torrent_params()
    params.info_hashes = lt.info_hash_t(lt.sha1_hash(V1), lt.sha256_hash(V2))
    params.name = "x y"
    params.trackers = ["http://t.example/announce"]
    m = parse_magnet(lt.make_magnet_uri(params))
    assert m.infohash == InfoHash(V1, V2)
    assert m.display_name == "x y"
    assert m.trackers == ("http://t.example/announce",)


# --- hypothesis ----------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_infohash_only_metainfo_error(text: str) -> None:
    try:
        parsed = parse_infohash(text)
    except MetainfoError:
        return
    assert len(parsed.dht_id) == 20


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_magnet_only_metainfo_error(text: str) -> None:
    for candidate in (text, "magnet:?" + text, f"magnet:?xt=urn:btih:{V1.hex()}&" + text):
        try:
            m = parse_magnet(candidate)
        except MetainfoError:
            continue
        assert parse_magnet(m.to_uri()) == m


_VALID = (
    f"magnet:?xt=urn:btih:{V1.hex()}&xt=urn:btmh:1220{V2.hex()}&dn=name&tr=http%3A%2F%2Ft%2Fa"
    "&x.pe=[::1]:5&x.pe=1.2.3.4:6&ws=http://w/&xl=7"
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID)), st.integers(0, 3), st.characters()), max_size=5))
def test_mutated_magnets_only_metainfo_error(edits: list[tuple[int, int, str]]) -> None:
    text = _VALID
    for pos, op, char in edits:
        pos = min(pos, len(text))
        text = (
            text[:pos] + char + text[pos + 1 :]
            if op == 0
            else text[:pos] + char + text[pos:]
            if op == 1
            else text[:pos] + text[pos + 1 :]
            if op == 2
            else text[:pos]
        )
    try:
        m = parse_magnet(text)
    except MetainfoError:
        return
    assert parse_magnet(m.to_uri()) == m


_hosts = st.one_of(
    st.ip_addresses().map(str), st.from_regex(r"[a-z][a-z0-9\-]{0,20}(\.[a-z]{2,5})?", fullmatch=True)
)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.tuples(st.binary(min_size=20, max_size=20), st.none()),
        st.tuples(st.none(), st.binary(min_size=32, max_size=32)),
        st.tuples(st.binary(min_size=20, max_size=20), st.binary(min_size=32, max_size=32)),
    ),
    st.none() | st.text(),
    st.lists(st.text(min_size=1), unique=True, max_size=3),
    st.lists(st.tuples(_hosts, st.integers(1, 65535)), unique=True, max_size=3),
    st.lists(st.text(min_size=1), unique=True, max_size=2),
    st.none() | st.integers(0, 2**62),
)
def test_to_uri_round_trips(
    hashes: tuple[bytes | None, bytes | None],
    name: str | None,
    trackers: list[str],
    peers: list[tuple[str, int]],
    seeds: list[str],
    length: int | None,
) -> None:
    m = Magnet(InfoHash(*hashes), name, tuple(trackers), tuple(peers), tuple(seeds), length)
    try:
        uri = m.to_uri()
    except UnicodeEncodeError:
        return  # lone surrogates cannot be written as a URI; parse_magnet never produces them
    assert parse_magnet(uri) == m
