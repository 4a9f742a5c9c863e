"""Driver tests of the trio DHT node over real loopback sockets (each node on its own 127.x address)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import trio

from p2pwatch import netguard
from p2pwatch.dht import krpc
from p2pwatch.dht.lookup_stream import PeersFound
from p2pwatch.dht.node import open_dht_node
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.errors import NetworkRefused, QueryTimeout
from tests.conftest import loopback_address
from tests.dht_helpers import node_config, open_nodes


async def test_ping_find_node_and_bootstrap() -> None:
    with trio.fail_after(20):
        async with open_nodes(6) as nodes:
            # everybody bootstrapped from the first node, so the first knows all the others
            assert len(nodes[0].table) == 5
            info = await nodes[1].ping(nodes[2].address)
            assert info.id == nodes[2].own_id
            result = await nodes[5].lookup(nodes[3].own_id, "find_node")
            assert nodes[3].own_id in [n.id for n in result.closest]


async def test_announce_then_get_peers_reports_provenance() -> None:
    infohash = os.urandom(20)
    with trio.fail_after(20):
        async with open_nodes(8) as nodes:
            for node in nodes[1:]:
                await node.bootstrap()
            accepted = await nodes[2].announce_peer(infohash, port=51413, implied_port=False, seed=True)
            assert accepted >= 1
            found = await nodes[6].get_peers(infohash, scrape=True)
            peer = (nodes[2].address[0], 51413)
            assert peer in found.peers
            reporters = found.peers[peer]
            assert reporters and all(r in [n.address for n in nodes] for r in reporters)
            assert found.bf_seeds  # BEP 33 scrape answered by the nodes that store the announce


async def test_query_timeout_and_netguard() -> None:
    silent = await netguard.open_udp_socket(loopback_address())
    try:
        with trio.fail_after(10):
            async with open_dht_node(node_config(query_timeout=0.3)) as node:
                with pytest.raises(QueryTimeout):
                    await node.ping(silent.getsockname())
                with pytest.raises(NetworkRefused):
                    await node.ping(("8.8.8.8", 6881))
    finally:
        silent.close()


def _garbage(rng: random.Random, valid: list[bytes]) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300))
    base = bytearray(rng.choice(valid))
    if kind == 1:
        for _ in range(rng.randrange(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        return bytes(base)
    if kind == 2:
        return bytes(base[: rng.randrange(len(base))]) or b"d"
    return bytes(base) + rng.randbytes(rng.randrange(1, 20))


async def test_node_survives_10000_garbage_datagrams() -> None:
    rng = random.Random(1234)
    sender_id = os.urandom(20)
    valid = [
        krpc.encode(krpc.Ping(b"aa", sender_id)),
        krpc.encode(krpc.FindNode(b"ab", sender_id, os.urandom(20))),
        krpc.encode(krpc.GetPeers(b"ac", sender_id, os.urandom(20), scrape=True)),
        krpc.encode(krpc.AnnouncePeer(b"ad", sender_id, os.urandom(20), 6881, b"tok")),
        krpc.encode(krpc.SampleInfohashes(b"ae", sender_id, os.urandom(20))),
    ]
    attacker = await netguard.open_udp_socket(loopback_address())
    client = await netguard.open_udp_socket(loopback_address())
    try:
        with trio.fail_after(60):
            async with open_dht_node(node_config()) as node:
                for i in range(10_000):
                    await attacker.sendto(_garbage(rng, valid), node.address)
                    if i % 500 == 0:
                        await trio.sleep(0.01)  # let the node drain its socket buffer
                while node.stats.received < 9_000:
                    await trio.sleep(0.05)
                assert node.stats.malformed > 1_000
                for tid, query in ((b"q1", krpc.Ping(b"q1", sender_id)),
                                   (b"q2", krpc.FindNode(b"q2", sender_id, os.urandom(20))),
                                   (b"q3", krpc.GetPeers(b"q3", sender_id, os.urandom(20)))):
                    await client.sendto(krpc.encode(query), node.address)
                    while True:
                        data, _ = await client.recvfrom(2048)
                        reply = krpc.decode(data)
                        if reply.tid == tid:
                            break
                    assert isinstance(reply, krpc.Response)
                    assert reply.sender == node.own_id
    finally:
        attacker.close()
        client.close()


async def test_inbound_rate_limit_is_per_ip() -> None:
    flooder = await netguard.open_udp_socket(loopback_address())
    polite = await netguard.open_udp_socket(loopback_address())
    try:
        with trio.fail_after(20):
            async with open_dht_node(node_config(inbound_rate=10.0)) as node:
                for i in range(200):
                    await flooder.sendto(krpc.encode(krpc.Ping(i.to_bytes(2, "big"), os.urandom(20))), node.address)
                while node.stats.queries_in < 200:
                    await trio.sleep(0.02)
                assert node.stats.rate_limited >= 150
                await polite.sendto(krpc.encode(krpc.Ping(b"ok", os.urandom(20))), node.address)
                data, _ = await polite.recvfrom(2048)
                assert isinstance(krpc.decode(data), krpc.Response)
    finally:
        flooder.close()
        polite.close()


async def test_node_id_and_routing_table_persist(tmp_path: Path) -> None:
    state = tmp_path / "dht.json"
    with trio.fail_after(20):
        async with open_nodes(4) as others:
            ip = loopback_address()
            async with open_dht_node(node_config(bootstrap=(others[0].address,), state_file=state, ip=ip)) as node:
                first_id = node.own_id
                known = {n.id for n in node.table.nodes()}
                assert len(known) >= 3
            saved = json.loads(state.read_text())
            assert saved["node_id"] == first_id.hex()
            async with open_dht_node(node_config(state_file=state, ip=ip)) as again:
                assert again.own_id == first_id
                assert {n.id for n in again.table.nodes()} == known
                # with no bootstrap configured it still reaches the network through the saved table
                result = await again.lookup(others[3].own_id, "find_node")
                assert others[3].own_id in [n.id for n in result.closest]


async def test_corrupt_state_file_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "dht.json"
    state.write_text("{not json")
    async with open_dht_node(node_config(state_file=state)) as node:
        assert len(node.own_id) == 20
    assert json.loads(state.read_text())["node_id"] == node.own_id.hex()


async def test_adopts_bep42_id_when_three_nodes_agree_on_a_public_address() -> None:
    from p2pwatch.dht import bep42

    async with open_dht_node(node_config()) as node:
        before = node.own_id
        for voter in ("127.0.0.2", "127.0.0.3"):
            node._vote_external_ip("203.0.113.7", voter)
        assert node.own_id == before  # two votes are not enough
        node._vote_external_ip("203.0.113.7", "127.0.0.4")
        assert node.external_ip == "203.0.113.7"
        assert bep42.is_valid_node_id(node.own_id, "203.0.113.7")
        assert node.handler.own_id == node.own_id


async def test_reply_callback_runs_in_receive_loop_and_its_bug_does_not_stop_the_node() -> None:
    """start_query/finish_query (the lookups' fast path): the callback sees the response before the asker,
    and a callback that raises is logged while the node goes on receiving and the asker still gets its reply."""
    with trio.fail_after(10):
        async with open_nodes(2) as (a, b):
            seen: list[bytes] = []

            def record(reply: krpc.Response, now: float) -> None:
                seen.append(reply.sender)

            def broken(reply: krpc.Response, now: float) -> None:
                raise RuntimeError("bug in a caller")

            started = a.start_query(b.address, lambda t: krpc.Ping(t, a.own_id), on_reply=record)
            assert started is not None  # a free slot and no rate limit: sent without yielding
            reply = await a.finish_query(started)
            assert seen == [b.own_id] == [reply.sender]
            reply = await a.query(b.address, lambda t: krpc.Ping(t, a.own_id), on_reply=broken)
            assert reply.sender == b.own_id
            assert (await a.ping(b.address)).id == b.own_id  # the receive loop survived


async def test_consumer_sees_a_reply_before_the_next_datagram_is_read() -> None:
    """Two replies wait in the socket together: the lookup's consumer gets the first one's peers before the
    receive loop reads the second (trio runs a batch in either order, so the loop yields twice; issue 12)."""
    contacts = [await netguard.open_udp_socket(loopback_address()) for _ in range(2)]
    ids = [os.urandom(20) for _ in contacts]
    seeds = [NodeInfo(i, *c.getsockname()) for i, c in zip(ids, contacts, strict=True)]
    try:
        with trio.fail_after(20):
            async with open_dht_node(node_config(outbound_rate=1e6)) as node:
                log: list[tuple[str, tuple[str, int]]] = []
                read = node.datagram_received

                def logged(data: bytes, addr: tuple[str, int], now: float) -> bytes | None:
                    log.append(("read", addr))
                    return read(data, addr, now)
                node.datagram_received = logged  # type: ignore[method-assign]
                for trial in range(24):
                    log.clear()
                    async with node.open_get_peers(os.urandom(20), seeds=seeds) as stream:
                        queries = [(await c.recvfrom(2048)) for c in contacts]
                        for (data, addr), contact, contact_id in zip(queries, contacts, ids, strict=True):
                            tid = krpc.decode(data).tid
                            reply = krpc.Response(tid, contact_id, values=(("127.0.0.9", 1000 + trial),),
                                                  token=b"tk")
                            assert contact.try_sendto(krpc.encode(reply), addr)
                        async for event in stream:
                            if isinstance(event, PeersFound):
                                log.append(("peers", event.reporter))
                                if sum(kind == "peers" for kind, _ in log) == 2:
                                    break
                    reads = [i for i, (kind, _) in enumerate(log) if kind == "read"]
                    assert log.index(("peers", log[reads[0]][1])) < reads[1], log
    finally:
        for c in contacts:
            c.close()


async def test_join_refresh_fills_the_far_half_of_the_table() -> None:
    """Kademlia's join: after the own-id lookup, a random id in each farther bucket is looked up, so a new node
    knows the far half of the id space (where half of all targets lie) and not only the nodes near its id."""
    with trio.fail_after(60):
        async with open_nodes(32) as nodes:
            def far_half(of: bytes) -> int:
                return sum(1 for n in nodes if (n.own_id[0] ^ of[0]) & 0x80)

            async with open_dht_node(node_config(bootstrap=(nodes[7].address,), join_refresh=0)) as newcomer:
                before = sum(1 for n in newcomer.table.nodes() if (n.id[0] ^ newcomer.own_id[0]) & 0x80)
                newcomer.config.join_refresh = 8
                refreshed = await newcomer.refresh_far_buckets()
                after = sum(1 for n in newcomer.table.nodes() if (n.id[0] ^ newcomer.own_id[0]) & 0x80)
                assert 1 <= refreshed <= 8
                assert after >= min(8, far_half(newcomer.own_id)) and after >= before
