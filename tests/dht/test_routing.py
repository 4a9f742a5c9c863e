"""Routing table (BEP 5): splitting, full buckets, replacement cache, node states, refresh, persistence."""

from __future__ import annotations

import json
import random

import pytest

from p2pwatch.dht.nodeinfo import ID_BITS, NodeInfo, distance
from p2pwatch.dht.routing import GOOD_FOR, NodeState, RoutingTable
from p2pwatch.errors import LocalProtocolError, RemoteProtocolError

OWN = bytes.fromhex("5a" * 20)
OWN_INT = int.from_bytes(OWN, "big")


def cpl(a: bytes, b: bytes) -> int:
    return ID_BITS - distance(a, b).bit_length()


def id_with_cpl(n: int, rng: random.Random, own: bytes = OWN) -> bytes:
    """A random id sharing exactly ``n`` leading bits with ``own``."""
    o = int.from_bytes(own, "big")
    free = ID_BITS - n - 1
    prefix = (o >> free) ^ 1
    return ((prefix << free) | rng.getrandbits(free)).to_bytes(20, "big")


class Net:
    """Hands out nodes on distinct global addresses."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.count = 0

    def node(self, node_id: bytes | None = None) -> NodeInfo:
        self.count += 1
        c = self.count
        nid = node_id if node_id is not None else self.rng.getrandbits(160).to_bytes(20, "big")
        return NodeInfo(nid, f"8.{c >> 16 & 255}.{c >> 8 & 255}.{c & 255}", 6881)

    def at_cpl(self, n: int) -> NodeInfo:
        return self.node(id_with_cpl(n, self.rng))


def check_invariants(t: RoutingTable) -> None:
    sizes = t.bucket_sizes()
    assert len(sizes) == t.bucket_count
    assert all(live <= t.k and rep <= t.replacement_size for live, rep in sizes)
    last = t.bucket_count - 1
    seen: set[bytes] = set()
    for i, b in enumerate(t._buckets):
        for e in b.live + b.replacements:
            c = cpl(e.node.id, OWN)
            assert (c >= last) if i == last else (c == i)
            assert e.node.id not in seen
            seen.add(e.node.id)
    assert len(t) == sum(live for live, _ in sizes)


def test_constructor_checks() -> None:
    with pytest.raises(LocalProtocolError):
        RoutingTable(b"short")
    with pytest.raises(LocalProtocolError):
        RoutingTable(OWN, k=0)


def test_empty_table() -> None:
    t = RoutingTable(OWN)
    assert len(t) == 0 and t.bucket_count == 1
    assert t.closest(OWN) == []
    assert list(t.nodes()) == []


def test_own_id_and_bad_ids_never_inserted() -> None:
    t = RoutingTable(OWN)
    assert not t.heard_from(NodeInfo(OWN, "8.8.8.8", 6881), 0.0, responded=True)
    assert not t.heard_from(NodeInfo(b"\x01" * 19, "8.8.8.8", 6881), 0.0, responded=True)
    assert len(t) == 0


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "192.168.1.1", "::1", "fe80::1", "169.254.0.1"])
def test_non_global_addresses_dropped_unless_allow_local(ip: str) -> None:
    node = NodeInfo(b"\x01" * 20, ip, 6881)
    assert not RoutingTable(OWN).heard_from(node, 0.0, responded=True)
    local = RoutingTable(OWN, allow_local=True)
    assert local.heard_from(node, 0.0, responded=True)
    assert list(local.nodes()) == [node]


@pytest.mark.parametrize(("ip", "port"), [("0.0.0.0", 6881), ("224.0.0.1", 6881), ("8.8.8.8", 0), ("x", 1)])
def test_unusable_addresses_dropped_even_with_allow_local(ip: str, port: int) -> None:
    assert not RoutingTable(OWN, allow_local=True).heard_from(NodeInfo(b"\x01" * 20, ip, port), 0.0, responded=True)


def test_full_far_bucket_splits_once_then_fills_replacement_cache() -> None:
    net = Net()
    t = RoutingTable(OWN)
    far = [net.at_cpl(0) for _ in range(8)]
    for n in far:
        assert t.heard_from(n, 0.0, responded=True)
    assert t.bucket_count == 1 and len(t) == 8
    extra = net.at_cpl(0)
    assert t.heard_from(extra, 1.0, responded=True)  # the full last bucket splits; the far half stays full
    assert t.bucket_count == 2
    assert len(t) == 8 and not t.is_live(extra.id) and extra.id in t
    assert list(t.replacements()) == [extra]
    near = net.at_cpl(5)
    assert t.heard_from(near, 1.0, responded=True) and t.is_live(near.id)
    check_invariants(t)


def test_only_the_bucket_holding_our_id_splits_deep_table() -> None:
    net = Net(1)
    t = RoutingTable(OWN)
    for i in range(3000):
        t.heard_from(net.node(), float(i), responded=True)
    for depth in range(6, 20):  # ids close to ours make the table deep
        for _ in range(3):
            t.heard_from(net.at_cpl(depth), 3000.0, responded=True)
    check_invariants(t)
    assert t.bucket_count >= 15
    sizes = t.bucket_sizes()
    assert all(live == 8 for live, _ in sizes[:8])  # far buckets are full ...
    assert all(rep == 8 for _, rep in sizes[:6])  # ... and their replacement caches (3000 / 2**7 > 16)
    assert sum(rep for _, rep in sizes) <= t.replacement_size * t.bucket_count


def test_split_stops_at_160_buckets() -> None:
    t = RoutingTable(OWN, k=1, allow_local=True)
    for n in range(ID_BITS):
        other = (OWN_INT ^ (1 << (ID_BITS - 1 - n))).to_bytes(20, "big")  # cpl n
        t.heard_from(NodeInfo(other, f"10.0.{n // 256}.{n % 256}", 1000), 0.0, responded=True)
    assert t.bucket_count == ID_BITS
    assert len(t) == ID_BITS
    check_invariants(t)


def test_closest_matches_brute_force() -> None:
    net = Net(2)
    rng = random.Random(3)
    t = RoutingTable(OWN, rng=rng)
    for i in range(2000):
        t.heard_from(net.node(), float(i), responded=True)
    for depth in range(4, 24):
        t.heard_from(net.at_cpl(depth), 2000.0, responded=True)
    live = list(t.nodes())
    for victim in live[::7]:  # some bad nodes, which closest() must skip
        t.failed(victim.id, 2001.0)
        t.failed(victim.id, 2002.0)
    eligible = [n for n in t.nodes() if t.state(n.id, 2003.0) is not NodeState.BAD]
    assert len(eligible) < len(live)
    targets = [rng.getrandbits(160).to_bytes(20, "big") for _ in range(200)]
    targets += [id_with_cpl(d, rng) for d in range(0, 40)] + [OWN]
    for target in targets:
        for count in (1, 8, 20, 1000):
            want = sorted(eligible, key=lambda n: distance(n.id, target))[:count]
            assert t.closest(target, count) == want


def test_node_states_follow_the_clock() -> None:
    net = Net()
    t = RoutingTable(OWN)
    a, b = net.node(), net.node()
    t.heard_from(a, 0.0, responded=True)
    t.heard_from(b, 0.0, responded=False)  # only queried us: not known to answer
    assert t.state(a.id, 0.0) is NodeState.GOOD
    assert t.state(b.id, 0.0) is NodeState.QUESTIONABLE
    assert t.state(a.id, GOOD_FOR - 1) is NodeState.GOOD
    assert t.state(a.id, GOOD_FOR) is NodeState.QUESTIONABLE
    t.heard_from(a, 1000.0, responded=False)  # queried us, having answered once: good again
    assert t.state(a.id, 1000.0) is NodeState.GOOD
    assert t.state(a.id, 1000.0 + GOOD_FOR) is NodeState.QUESTIONABLE
    t.failed(a.id, 2000.0)
    assert t.state(a.id, 2000.0) is NodeState.QUESTIONABLE  # one failure: tried once more
    t.failed(a.id, 2010.0)
    assert t.state(a.id, 2010.0) is NodeState.BAD
    t.heard_from(a, 2020.0, responded=True)  # it answered after all
    assert t.state(a.id, 2020.0) is NodeState.GOOD
    t.failed(b.id, 2030.0)  # never answered, failed once: bad
    assert t.state(b.id, 2030.0) is NodeState.BAD
    assert t.state(b"\x00" * 20, 0.0) is None


def test_closest_good_only() -> None:
    net = Net()
    t = RoutingTable(OWN)
    good, silent, querier = net.node(), net.node(), net.node()
    t.heard_from(silent, 0.0, responded=True)
    t.heard_from(good, 1000.0, responded=True)
    t.heard_from(querier, 1000.0, responded=False)
    assert {n.id for n in t.closest(OWN, 8)} == {good.id, silent.id, querier.id}
    assert t.closest(OWN, 8, include_questionable=False) == [good]
    assert t.closest(OWN, 8, include_questionable=False, now=2000.0) == []


def test_replacement_cache_fills_slot_of_bad_node() -> None:
    net = Net()
    t = RoutingTable(OWN, replacement_size=3)
    t.heard_from(net.at_cpl(3), 0.0, responded=True)  # force a split so bucket 0 is not the last
    first = [net.at_cpl(0) for _ in range(8)]
    for n in first:
        t.heard_from(n, 0.0, responded=True)
    waiting = [net.at_cpl(0) for _ in range(5)]
    for i, n in enumerate(waiting):
        assert t.heard_from(n, 10.0 + i, responded=i != 2)
    reps = list(t.replacements())
    assert len(reps) == 3  # bounded; the never-answered one was evicted first
    assert waiting[2] not in reps
    assert reps == [waiting[1], waiting[3], waiting[4]]
    t.failed(first[0].id, 20.0)
    assert t.is_live(first[0].id)  # one failure is not enough
    t.failed(first[0].id, 21.0)
    assert first[0].id not in t
    assert t.is_live(waiting[4].id)  # the most recently heard replacement took the slot
    assert len(t) == 9
    check_invariants(t)


def test_bad_node_replaced_directly_by_newcomer_without_replacements() -> None:
    net = Net()
    t = RoutingTable(OWN, replacement_size=0)
    t.heard_from(net.at_cpl(3), 0.0, responded=True)
    first = [net.at_cpl(0) for _ in range(8)]
    for n in first:
        t.heard_from(n, 0.0, responded=True)
    late = net.at_cpl(0)
    assert not t.heard_from(late, 1.0, responded=True)  # full of good nodes, no cache: discarded
    t.failed(first[3].id, 2.0)
    t.failed(first[3].id, 3.0)
    assert t.is_live(first[3].id)  # bad but kept: nothing better known yet
    assert first[3] not in t.closest(first[3].id, 8)
    assert t.heard_from(late, 4.0, responded=False)
    assert t.is_live(late.id) and first[3].id not in t


def test_responding_node_displaces_never_responding_one() -> None:
    net = Net()
    t = RoutingTable(OWN)
    t.heard_from(net.at_cpl(3), 0.0, responded=True)
    queriers = [net.at_cpl(0) for _ in range(8)]
    for n in queriers:
        t.heard_from(n, 0.0, responded=False)
    answered = net.at_cpl(0)
    assert t.heard_from(answered, 1.0, responded=True)
    assert t.is_live(answered.id)
    assert not t.is_live(queriers[0].id) and queriers[0] in list(t.replacements())


def test_replacement_promoted_when_it_answers_and_there_is_room() -> None:
    net = Net()
    t = RoutingTable(OWN)
    t.heard_from(net.at_cpl(3), 0.0, responded=True)
    first = [net.at_cpl(0) for _ in range(8)]
    for n in first:
        t.heard_from(n, 0.0, responded=True)
    spare = net.at_cpl(0)
    t.heard_from(spare, 1.0, responded=False)
    assert not t.is_live(spare.id)
    # the address of a stale live node now claims another id: the stale entry goes, a slot frees up
    stale = first[0]
    newcomer = NodeInfo(id_with_cpl(7, net.rng), stale.ip, stale.port)
    assert t.heard_from(newcomer, 2000.0, responded=True)
    assert stale.id not in t
    assert t.is_live(spare.id)


def test_anti_hijack_same_id_other_address() -> None:
    t = RoutingTable(OWN)
    real = NodeInfo(b"\x11" * 20, "8.8.8.8", 6881)
    fake = NodeInfo(b"\x11" * 20, "9.9.9.9", 6881)
    t.heard_from(real, 0.0, responded=True)
    assert not t.heard_from(fake, 10.0, responded=True)  # good entry is kept
    assert t.get(real.id) == real
    assert not t.heard_from(fake, 1000.0, responded=False)  # stale, but the newcomer only queried us
    assert t.get(real.id) == real
    assert t.heard_from(fake, 1000.0, responded=True)  # stale, and the newcomer answered: it moved
    assert t.get(real.id) == fake
    assert len(t) == 1


def test_anti_hijack_same_address_other_id() -> None:
    t = RoutingTable(OWN)
    old = NodeInfo(b"\x11" * 20, "8.8.8.8", 6881)
    new = NodeInfo(b"\x22" * 20, "8.8.8.8", 6881)
    t.heard_from(old, 0.0, responded=True)
    assert not t.heard_from(new, 10.0, responded=True)
    assert list(t.nodes()) == [old]
    assert t.heard_from(new, 1000.0, responded=False)  # old entry is stale: the address restarted
    assert list(t.nodes()) == [new]


def test_refresh_targets_for_stale_buckets() -> None:
    net = Net()
    rng = random.Random(5)
    t = RoutingTable(OWN, rng=rng)
    assert len(t.refresh_targets(0.0)) == 1  # a bucket never changed is due at once
    for _ in range(300):
        t.heard_from(net.node(), 1.0, responded=True)
    for depth in range(8, 14):
        t.heard_from(net.at_cpl(depth), 1.0, responded=True)
    assert t.refresh_targets(500.0) == []
    targets = t.refresh_targets(901.0)
    n = t.bucket_count
    assert len(targets) == n
    for i, target in enumerate(targets):
        c = cpl(target, OWN)
        assert (c >= n - 1) if i == n - 1 else (c == i)
    assert t.refresh_targets(901.0) == []  # reported once per interval
    last_far = t.closest(id_with_cpl(0, rng), 1)[0]
    t.heard_from(last_far, 1500.0, responded=True)  # a reply in bucket 0 counts as a change
    again = t.refresh_targets(1801.0)
    assert len(again) == n - 1
    assert all(cpl(x, OWN) != 0 for x in again)
    assert len(t.refresh_targets(1801.0, interval=0.0)) == n


def test_nodes_to_ping_and_next_deadline() -> None:
    net = Net()
    t = RoutingTable(OWN, ping_timeout=60.0)
    nodes = [net.node() for _ in range(4)]
    for i, n in enumerate(nodes):
        t.heard_from(n, float(i), responded=True)
    t.refresh_targets(10.0, interval=0.0)  # marks the bucket as refreshed at 10.0
    assert t.nodes_to_ping(100.0) == []
    assert t.next_deadline() == GOOD_FOR  # nodes[0] turns questionable first
    due = t.nodes_to_ping(GOOD_FOR + 2.0)
    assert due == nodes[:3]  # least recently seen first; nodes[3] is still good
    assert t.nodes_to_ping(GOOD_FOR + 3.0) == [nodes[3]]
    assert t.nodes_to_ping(GOOD_FOR + 4.0) == []  # all pings handed out
    assert t.next_deadline() == 10.0 + GOOD_FOR  # the bucket refresh
    t.refresh_targets(10.0 + GOOD_FOR)
    assert t.next_deadline() == GOOD_FOR + 2.0 + 60.0  # unanswered pings are handed out again
    t.heard_from(nodes[0], GOOD_FOR + 5.0, responded=True)
    t.failed(nodes[1].id, GOOD_FOR + 5.0)
    again = t.nodes_to_ping(GOOD_FOR + 6.0)
    assert again == [nodes[1]]  # failed once: ping again at once; nodes[0] answered
    assert t.nodes_to_ping(GOOD_FOR + 62.0) == [nodes[2]]
    assert t.nodes_to_ping(GOOD_FOR + 70.0, limit=1) == [nodes[1]]


def test_persistence_round_trip() -> None:
    net = Net(7)
    t = RoutingTable(OWN)
    for i in range(400):
        t.heard_from(net.node(), float(i), responded=i % 5 != 0)
    for depth in range(5, 12):
        t.heard_from(net.at_cpl(depth), 400.0, responded=True)
    state = json.loads(json.dumps(t.to_state()))
    assert state["own_id"] == OWN.hex() and state["saved_at"] == 400.0
    assert {"id", "ip", "port", "last_seen", "responded"} <= set(state["nodes"][0])
    back = RoutingTable.from_state(state, now=50.0)
    assert back.own_id == OWN and back.k == t.k
    assert {n.id for n in back.nodes()} == {n.id for n in t.nodes()}
    assert set(back.nodes()) == set(t.nodes())
    assert back.bucket_count == t.bucket_count
    check_invariants(back)
    # clocks do not survive a restart: every restored node is questionable and due for a ping
    assert all(back.state(n.id, 50.0) is NodeState.QUESTIONABLE for n in back.nodes())
    assert len(back.nodes_to_ping(50.0)) == len(back)
    assert len(back.refresh_targets(50.0)) == back.bucket_count
    # restored nodes that had answered need two failures to go bad, as before the restart
    answered = next(n for n in back.nodes() if state_of(state, n).get("responded"))
    back.failed(answered.id, 51.0)
    assert back.state(answered.id, 51.0) is NodeState.QUESTIONABLE


def state_of(state: dict, node: NodeInfo) -> dict:
    return next(e for e in state["nodes"] if e["id"] == node.id.hex())


def test_from_state_overrides_and_bad_input() -> None:
    t = RoutingTable(OWN, allow_local=True)
    t.heard_from(NodeInfo(b"\x01" * 20, "127.0.0.2", 7000), 0.0, responded=True)
    t.heard_from(NodeInfo(b"\x02" * 20, "8.8.8.8", 7000), 0.0, responded=True)
    state = t.to_state()
    assert len(RoutingTable.from_state(state, allow_local=True)) == 2
    assert len(RoutingTable.from_state(state)) == 1  # local addresses are dropped on load too
    other = RoutingTable.from_state(state, own_id=b"\x02" * 20, allow_local=True)
    assert other.own_id == b"\x02" * 20 and len(other) == 1  # its own id is never inserted
    state["nodes"].append({"id": "zz", "ip": "8.8.4.4", "port": 1})
    state["nodes"].append({"id": "03" * 20, "ip": "8.8.4.4"})
    state["nodes"].append("garbage")
    assert len(RoutingTable.from_state(state, allow_local=True)) == 2
    with pytest.raises(RemoteProtocolError):
        RoutingTable.from_state({"format": "something else"})
    with pytest.raises(RemoteProtocolError):
        RoutingTable.from_state({**state, "version": 99})
    with pytest.raises(RemoteProtocolError):
        RoutingTable.from_state({**state, "own_id": "not hex"})


def test_extended_table_holds_more_in_the_far_buckets() -> None:
    net = Net(11)
    plain = RoutingTable(OWN)
    wide = RoutingTable(OWN, extended=True)
    for _ in range(5000):
        n = net.node()
        plain.heard_from(n, 0.0, responded=True)
        wide.heard_from(n, 0.0, responded=True)
    sizes = [live for live, _ in wide.bucket_sizes()]
    assert [wide.capacity(i) for i in range(6)] == [128, 64, 32, 16, 8, 8]
    assert sizes[:4] == [128, 64, 32, 16]
    assert all(live <= wide.capacity(i) for i, live in enumerate(sizes[:-1]))
    assert [live for live, _ in plain.bucket_sizes()][:4] == [8, 8, 8, 8]
    # the closest entries of the wider table are at least as close, and usually closer
    rng = random.Random(3)
    closer = 0
    for _ in range(50):
        target = rng.getrandbits(160).to_bytes(20, "big")
        best_wide = distance(wide.closest(target, 1)[0].id, target)
        best_plain = distance(plain.closest(target, 1)[0].id, target)
        assert best_wide <= best_plain
        closer += best_wide < best_plain
    assert closer >= 25
    restored = RoutingTable.from_state(json.loads(json.dumps(wide.to_state())), extended=True)
    assert len(restored) == len(wide)
