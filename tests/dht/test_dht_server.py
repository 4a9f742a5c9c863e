"""The answering side's caches (tokens, packed addresses) give the answers they would give without them."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from p2pwatch.dht import krpc, krpc_encode, server
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.dht.routing import RoutingTable
from p2pwatch.errors import LocalProtocolError


def test_tokens_are_the_bep5_hash_and_live_for_one_rotation() -> None:
    tokens = server.TokenManager(now=0.0)
    first = tokens.token_for("10.0.0.1", 0.0)
    assert first == hashlib.sha1(tokens._secret + b"10.0.0.1").digest()[:8]
    assert tokens.token_for("10.0.0.1", 1.0) == first  # from the cache
    assert tokens.token_for("10.0.0.2", 1.0) != first
    assert tokens.is_valid(first, "10.0.0.1", 2.0)
    assert not tokens.is_valid(first, "10.0.0.2", 2.0)
    rotated = tokens.token_for("10.0.0.1", server.TOKEN_ROTATION)
    assert rotated != first  # a new secret: the cache was dropped with the old one
    assert rotated == hashlib.sha1(tokens._secret + b"10.0.0.1").digest()[:8]
    assert tokens.is_valid(first, "10.0.0.1", server.TOKEN_ROTATION)  # the previous secret still counts
    assert not tokens.is_valid(first, "10.0.0.1", 2 * server.TOKEN_ROTATION)


def test_token_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "_MAX_CACHED_TOKENS", 4)
    tokens = server.TokenManager(now=0.0)
    issued = {f"10.0.0.{i}": tokens.token_for(f"10.0.0.{i}", 0.0) for i in range(10)}
    assert len(tokens._issued) <= 4
    assert all(tokens.token_for(ip, 0.0) == token for ip, token in issued.items())


def test_nodes_follow_want_and_socket_family() -> None:
    own = os.urandom(20)
    table = RoutingTable(own, allow_local=True)
    v4 = [NodeInfo(os.urandom(20), f"10.0.0.{i}", 6881) for i in range(1, 4)]
    v6 = [NodeInfo(os.urandom(20), f"fd00::{i}", 6881) for i in range(1, 3)]
    for node in v4 + v6:
        table.heard_from(node, 0.0, responded=True)
    handler = server.QueryHandler(own, table, 0.0)
    target = os.urandom(20)
    got4, got6 = handler._nodes(target, (), False)
    assert set(got4) == set(v4) and got6 == ()
    got4, got6 = handler._nodes(target, (), True)
    assert got4 == () and set(got6) == set(v6)
    got4, got6 = handler._nodes(target, (b"n4", b"n6"), False)
    assert set(got4) == set(v4) and set(got6) == set(v6)
    closest = table.closest(target, 8)
    assert list(got4) == [n for n in closest if ":" not in n.ip]  # distance order kept


def test_packed_address_cache_never_hides_a_malformed_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(krpc_encode, "_MAX_PACKED", 3)
    monkeypatch.setattr(krpc_encode, "_PACKED", {socket.AF_INET: {}, socket.AF_INET6: {}})
    good = tuple(NodeInfo(bytes([i]) * 20, f"192.0.2.{i}", 6881 + i) for i in range(1, 6))
    first = krpc.encode(krpc.Response(b"aa", b"s" * 20, nodes=good))
    assert krpc.encode(krpc.Response(b"aa", b"s" * 20, nodes=good)) == first  # cached addresses, same bytes
    assert krpc.decode(first).nodes == good  # type: ignore[union-attr]
    for bad_ip in ("192.0.2.300", "fd00::1", "1", "not an address"):
        with pytest.raises(LocalProtocolError):
            krpc.encode(krpc.Response(b"aa", b"s" * 20, nodes=(*good, NodeInfo(b"x" * 20, bad_ip, 1))))
    with pytest.raises(LocalProtocolError):
        krpc.encode(krpc.Response(b"aa", b"s" * 20, nodes6=(NodeInfo(b"x" * 20, "192.0.2.1", 1),)))
    with pytest.raises(LocalProtocolError):
        krpc.encode(krpc.Response(b"aa", b"s" * 20, nodes=(NodeInfo(b"x" * 20, "192.0.2.1", 70000),)))
    with pytest.raises(LocalProtocolError):
        krpc.encode(krpc.Response(b"aa", b"s" * 20, nodes=(NodeInfo(b"x" * 19, "192.0.2.1", 1),)))


def test_external_ip_through_the_address_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(krpc_encode, "_MAX_PACKED", 2)
    monkeypatch.setattr(krpc_encode, "_PACKED", {socket.AF_INET: {}, socket.AF_INET6: {}})
    for ip in ("192.0.2.1", "192.0.2.2", "2001:db8::7", "192.0.2.1", "192.0.2.3"):
        data = krpc.encode(krpc.Response(b"aa", b"s" * 20), external_ip=(ip, 6881))
        assert krpc.decode(data).external_ip == (ip, 6881)  # type: ignore[union-attr]
    for bad_ip in ("192.0.2.300", "1", "2001:db8::g"):
        with pytest.raises(LocalProtocolError):
            krpc.encode(krpc.Response(b"aa", b"s" * 20), external_ip=(bad_ip, 6881))
    assert all(0 < len(cache) <= 2 for cache in krpc_encode._PACKED.values())
