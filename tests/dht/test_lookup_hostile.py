"""A streaming lookup among hostile contacts, over real loopback sockets: nodes that answer with KRPC
errors, with another transaction id, with garbage, or not at all. The lookup ends without waiting for them,
keeps only the honest nodes, and gives back every query slot (its queries have no task each: their errors
and timeouts are judged by callbacks and by the lookup's own task, issue 12)."""

from __future__ import annotations

import os

import trio

from p2pwatch.dht import krpc
from p2pwatch.dht.nodeinfo import NodeInfo
from tests.conftest import loopback_address
from tests.dht_helpers import open_nodes

MODES = ("error", "wrong-tid", "garbage", "silent")


async def hostile(sock: trio.socket.SocketType, mode: str, own_id: bytes) -> None:
    while True:
        data, addr = await sock.recvfrom(2048)
        try:
            query = krpc.decode(data)
        except Exception:
            continue
        if mode == "error":
            reply = krpc.encode(krpc.Error(query.tid, 202, "Server Error"))
        elif mode == "wrong-tid":
            reply = krpc.encode(krpc.Response(bytes(b ^ 0xFF for b in query.tid), own_id))
        elif mode == "garbage":
            reply = b"d1:rd2:id20:" + os.urandom(7)
        else:
            continue
        await sock.sendto(reply, addr)


async def test_lookup_among_hostile_contacts_ends_with_the_honest_ones_and_frees_every_slot() -> None:
    with trio.fail_after(20):  # join_refresh=0: no background join lookups, the stats count one lookup
        async with open_nodes(4, join_refresh=0) as nodes, trio.open_nursery() as nursery:
            asker = nodes[-1]
            target = os.urandom(20)
            bad: dict[bytes, str] = {}
            for mode in MODES:
                for _ in range(2):
                    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                    await sock.bind((loopback_address(), 0))
                    own_id = os.urandom(20)
                    nursery.start_soon(hostile, sock, mode, own_id)
                    ip, port = sock.getsockname()
                    asker.table.heard_from(NodeInfo(own_id, ip, port), trio.current_time(), responded=True)
                    bad[own_id] = mode
            before = asker.stats.errors_in, asker.stats.unexpected, asker.stats.malformed
            async with asker.open_lookup(target, "get_peers") as stream:
                result = await stream.drain()
            await trio.sleep(0.3)  # the lookup does not wait for slow contacts: let their datagrams arrive
            honest = {n.own_id for n in nodes[:-1]}
            assert {n.id for n in result.closest} <= honest and len(result.closest) == len(honest)
            states = {node.id: state.name for node, state in stream.traversal.candidates() if node.id in bad}
            # the hostile contacts the lookup asked (a full bucket may keep one in its replacement cache)
            asked = {node_id: bad[node_id] for node_id, state in states.items() if state != "NEW"}
            assert set(asked.values()) == set(MODES)
            count = list(asked.values()).count
            assert asker.stats.errors_in - before[0] == count("error")  # each error node asked once
            assert asker.stats.unexpected - before[1] == count("wrong-tid")  # replies under another tid
            assert asker.stats.malformed - before[2] >= count("garbage")
            for node_id, mode in asked.items():  # an error fails at once; the rest are slow, the end did not wait
                assert states[node_id] == "FAILED" if mode == "error" else states[node_id] in ("SLOW", "FAILED")
            assert asker._outstanding.value == asker.config.max_outstanding  # every query slot given back
            async with asker.open_lookup(target, "find_node") as again:  # and the node still works
                assert len((await again.drain()).closest) == len(honest)
            nursery.cancel_scope.cancel()
