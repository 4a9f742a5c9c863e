"""Lookup traversal state machine on hand-built tiny networks (the target is id 0, so id == distance)."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import pytest

from p2pwatch.dht import traversal as traversal_module
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.dht.traversal import TRANSITIONS, QueryEvent, QueryState, Traversal
from p2pwatch.errors import LocalProtocolError

TARGET = bytes(20)


def nid(d: int) -> bytes:
    return d.to_bytes(20, "big")


def N(d: int) -> NodeInfo:
    """The node at distance ``d`` from the target, on its own global address."""
    return NodeInfo(nid(d), f"8.{(d >> 16) & 255}.{(d >> 8) & 255}.{d & 255}", 6881)


@dataclass
class Tiny:
    """Who knows whom; silent nodes never answer."""

    knows: dict[int, list[int]] = field(default_factory=dict)
    silent: set[int] = field(default_factory=set)
    values: dict[int, list[tuple[str, int]]] = field(default_factory=dict)

    def reply(self, tr: Traversal, d: int, now: float) -> None:
        tr.on_response(
            N(d),
            now,
            nodes=[N(x) for x in self.knows.get(d, [])],
            values=self.values.get(d, []),
            token=b"t%d" % d,
        )


def drive(tr: Traversal, net: Tiny, rtt: float = 0.1) -> float:
    """Run ``tr`` to completion on a virtual clock; replies take ``rtt``. Returns the end time."""
    now = 0.0
    pending: list[tuple[float, int, int]] = []
    seq = 0
    for _ in range(10_000):
        for node in tr.next_queries(now):
            d = int.from_bytes(node.id, "big")
            if d not in net.silent:
                heapq.heappush(pending, (now + rtt, seq, d))
                seq += 1
        if tr.done:
            return now
        deadline = tr.next_deadline()
        wake = min(pending[0][0] if pending else math.inf, math.inf if deadline is None else deadline)
        assert wake < math.inf, "traversal stalled: not done, nothing pending, no deadline"
        now = wake
        if pending and pending[0][0] <= now:
            net.reply(tr, heapq.heappop(pending)[2], now)
        else:
            tr.on_tick(now)
    raise AssertionError("traversal did not finish")


def check_counters(tr: Traversal) -> None:
    assert tr.responses + tr.failures + tr.outstanding == tr.queries_sent


def test_transition_table_is_data() -> None:
    assert TRANSITIONS[(QueryState.NEW, QueryEvent.SEND)] is QueryState.IN_FLIGHT
    assert (QueryState.RESPONDED, QueryEvent.RESPONSE) not in TRANSITIONS
    assert all(src is not QueryState.RESPONDED for src, _ in TRANSITIONS)


def test_argument_checks() -> None:
    with pytest.raises(LocalProtocolError):
        Traversal(b"short", [], now=0.0)
    with pytest.raises(LocalProtocolError):
        Traversal(TARGET, [], alpha=0, now=0.0)
    with pytest.raises(LocalProtocolError):
        Traversal(TARGET, [], k=8, width=4, now=0.0)
    with pytest.raises(LocalProtocolError):
        Traversal(TARGET, [], widen=-1, now=0.0)


def test_no_seeds_is_done_at_once() -> None:
    tr = Traversal(TARGET, [], now=0.0)
    assert tr.done and tr.result() == [] and tr.next_queries(0.0) == [] and tr.next_deadline() is None
    assert tr.rounds == 0


def test_alpha_limits_queries_in_flight_closest_first() -> None:
    tr = Traversal(TARGET, [N(d) for d in (90, 10, 50, 30, 70)], alpha=2, k=3, now=0.0)
    assert tr.next_queries(0.0) == [N(10), N(30)]
    assert tr.next_queries(0.01) == []
    assert tr.outstanding == 2 and tr.queries_sent == 2
    tr.on_response(N(10), 0.05)
    assert tr.next_queries(0.05) == [N(50)]
    assert tr.state_of(nid(10)) is QueryState.RESPONDED
    assert tr.state_of(nid(30)) is QueryState.IN_FLIGHT
    assert tr.state_of(nid(90)) is QueryState.NEW
    check_counters(tr)


def test_converges_on_the_k_closest_and_counts_rounds() -> None:
    # seeds 1000.. know 100s, which know 10s, which know 1..8; node 5 is silent
    net = Tiny()
    far = [1000 + i for i in range(4)]
    mid = [100 + i for i in range(6)]
    near = [10 + i for i in range(6)]
    closest = list(range(1, 9))
    for d in far:
        net.knows[d] = mid
    for d in mid:
        net.knows[d] = near + far
    for d in near:
        net.knows[d] = closest + mid[:2]
    for d in closest:
        net.knows[d] = closest
    net.silent.add(5)
    tr = Traversal(TARGET, [N(d) for d in far], alpha=3, k=8, now=0.0)
    end = drive(tr, net)
    assert tr.done
    want = [1, 2, 3, 4, 6, 7, 8, 10]
    assert [int.from_bytes(n.id, "big") for n in tr.result()] == want
    assert tr.state_of(nid(5)) is QueryState.SLOW  # still awaited by a driver, but not waited for
    assert tr.rounds == 4  # seeds, 100s, 10s, 1..8
    # the silent node is among the closest, yet the end comes at its short timeout, not its full one
    assert end < 2.0  # (its full timeout is 5.0; it was queried in the third round)
    assert tr.next_queries(end) == [] and tr.next_deadline() is None
    # nothing farther than needed was queried: the 100s beyond the first few were not all asked
    assert tr.state_of(nid(1003)) in (QueryState.RESPONDED, QueryState.NEW)
    check_counters(tr)


def test_short_timeout_widens_and_full_timeout_fails_without_driver() -> None:
    tr = Traversal(TARGET, [N(1), N(2), N(3)], alpha=1, k=2, short_timeout=1.0, full_timeout=5.0, now=0.0)
    assert tr.next_queries(0.0) == [N(1)]
    assert tr.next_deadline() == 1.0
    assert tr.next_queries(0.5) == []
    assert tr.next_queries(1.0) == [N(2)]  # N(1) is slow: its slot goes to the next node
    assert tr.state_of(nid(1)) is QueryState.SLOW
    assert tr.next_deadline() == 2.0  # N(2)'s short timeout comes before N(1)'s full one
    tr.on_tick(2.0)
    assert tr.next_deadline() == 5.0
    assert tr.next_queries(2.0) == [N(3)]
    assert tr.outstanding == 3
    tr.on_tick(5.0)  # the driver never reported N(1): the traversal fails it by the clock
    assert tr.state_of(nid(1)) is QueryState.FAILED and tr.failures == 1
    tr.on_response(N(2), 5.5)  # a slow reply still counts
    tr.on_response(N(3), 5.6)
    assert tr.done
    assert tr.result() == [N(2), N(3)]
    check_counters(tr)


def test_error_reply_frees_the_slot() -> None:
    tr = Traversal(TARGET, [N(1), N(2)], alpha=1, k=1, now=0.0)
    assert tr.next_queries(0.0) == [N(1)]
    tr.on_failure(N(1), 0.1)
    tr.on_failure(N(1), 0.2)  # reported twice: counted once
    assert tr.failures == 1
    assert tr.next_queries(0.1) == [N(2)]
    tr.on_response(N(2), 0.2)
    assert tr.done and tr.result() == [N(2)]
    check_counters(tr)


def test_late_reply_after_full_timeout_is_taken_back() -> None:
    tr = Traversal(TARGET, [N(1)], k=1, now=0.0)
    tr.next_queries(0.0)
    tr.on_tick(5.0)
    assert tr.done and tr.failures == 1 and tr.result() == []
    assert tr.on_response(N(1), 6.0, values=[("9.9.9.9", 1)])
    assert tr.failures == 0 and tr.responses == 1 and tr.result() == [N(1)]
    assert tr.peers == {("9.9.9.9", 1): {N(1).addr}}
    check_counters(tr)


def test_done_does_not_wait_for_farther_outstanding_queries() -> None:
    tr = Traversal(TARGET, [N(d) for d in (1, 2, 50)], alpha=3, k=2, now=0.0)
    assert len(tr.next_queries(0.0)) == 3
    tr.on_response(N(1), 0.1)
    assert not tr.done
    tr.on_response(N(2), 0.1)
    assert tr.done and tr.outstanding == 1 and tr.next_deadline() is None
    assert tr.result() == [N(1), N(2)]


def test_duplicates_unsolicited_and_repeated_replies() -> None:
    tr = Traversal(TARGET, [N(100), N(100), NodeInfo(nid(99), N(100).ip, N(100).port)], k=2, now=0.0)
    assert tr.next_queries(0.0) == [N(100)]
    same_addr_other_id = NodeInfo(nid(3), N(4).ip, N(4).port)
    assert tr.on_response(N(100), 0.1, nodes=[N(4), N(4), same_addr_other_id, NodeInfo(nid(4), "8.8.8.8", 1)])
    assert [n for n, _ in tr.candidates()] == [N(4), N(100)]
    assert not tr.on_response(N(100), 0.2)  # a second reply
    assert not tr.on_response(N(7), 0.2)  # never queried
    assert not tr.on_response(N(4), 0.2)  # known, but not queried yet
    assert tr.responses == 1


def test_unacceptable_addresses_ignored_unless_allow_local() -> None:
    local = NodeInfo(nid(1), "127.0.0.5", 7000)
    nodes = [local, NodeInfo(nid(2), "8.8.8.8", 0)]
    values = [("10.0.0.1", 5), ("8.8.4.4", 5)]
    tr = Traversal(TARGET, [N(100), local], k=1, now=0.0)
    assert tr.next_queries(0.0) == [N(100)]
    tr.on_response(N(100), 0.1, nodes=nodes, values=values)
    assert [n for n, _ in tr.candidates()] == [N(100)]
    assert set(tr.peers) == {("8.8.4.4", 5)}
    lan = NodeInfo(nid(100), "127.0.0.6", 7000)
    tr2 = Traversal(TARGET, [lan], k=1, now=0.0, allow_local=True)
    tr2.next_queries(0.0)
    tr2.on_response(lan, 0.1, nodes=nodes, values=values)
    assert [n for n, _ in tr2.candidates()] == [local, lan]
    assert set(tr2.peers) == {("10.0.0.1", 5), ("8.8.4.4", 5)}


def test_node_answering_with_another_id_is_recorded_under_it() -> None:
    tr = Traversal(TARGET, [N(50), N(60)], alpha=2, k=2, now=0.0)
    tr.next_queries(0.0)
    liar = NodeInfo(nid(5), N(50).ip, N(50).port)  # we asked "50", it says it is 5
    assert tr.on_response(liar, 0.1, token=b"tok")
    assert tr.state_of(nid(50)) is None and tr.state_of(nid(5)) is QueryState.RESPONDED
    assert tr.tokens == {nid(5): b"tok"}
    tr.on_response(N(60), 0.1)
    assert tr.result() == [liar, N(60)] and tr.responses == 2
    check_counters(tr)


def test_answered_id_already_known_elsewhere_is_not_a_result() -> None:
    tr = Traversal(TARGET, [N(50), N(5)], alpha=1, k=2, now=0.0)
    assert tr.next_queries(0.0) == [N(5)]
    tr.on_response(N(5), 0.1)
    assert tr.next_queries(0.1) == [N(50)]
    impostor = NodeInfo(nid(5), N(50).ip, N(50).port)  # claims the id of a node we already heard from
    assert tr.on_response(impostor, 0.2, token=b"x", values=[("9.9.9.9", 9)], nodes=[N(7)])
    assert tr.result() == [N(5)]
    assert nid(5) not in tr.tokens
    assert tr.peers == {("9.9.9.9", 9): {N(50).addr}}  # the claim is kept, attributed to its address
    assert tr.state_of(nid(7)) is QueryState.NEW
    assert tr.responses == 2


def test_bootstrap_seed_without_id_is_queried_first_and_rekeyed() -> None:
    router = NodeInfo(b"", "67.215.246.10", 6881)
    tr = Traversal(TARGET, [N(3), router], alpha=1, k=2, now=0.0)
    assert tr.next_queries(0.0) == [router]
    tr.on_response(NodeInfo(nid(900), router.ip, router.port), 0.1, nodes=[N(1)])
    assert tr.state_of(nid(900)) is QueryState.RESPONDED
    assert tr.next_queries(0.1) == [N(1)]


def test_provenance_tokens_and_announce_targets() -> None:
    net = Tiny(knows={100: [1, 2, 3], 1: [2, 3], 2: [1, 3], 3: [1, 2]})
    net.values = {1: [("9.9.9.9", 51413), ("7.7.7.7", 1)], 2: [("9.9.9.9", 51413)]}
    tr = Traversal(TARGET, [N(100)], k=3, now=0.0)
    drive(tr, net)
    assert tr.peers == {("9.9.9.9", 51413): {N(1).addr, N(2).addr}, ("7.7.7.7", 1): {N(1).addr}}
    assert tr.result() == [N(1), N(2), N(3)]
    assert tr.tokens[nid(100)] == b"t100"
    assert tr.announce_targets() == [(N(1), b"t1"), (N(2), b"t2"), (N(3), b"t3")]


def test_samples_and_extras_by_node() -> None:
    tr = Traversal(TARGET, [N(1), N(2)], alpha=2, k=2, now=0.0)
    tr.next_queries(0.0)
    tr.on_response(N(1), 0.1, samples=[b"a" * 20, b"b" * 20, b"short"], extra={"interval": 60, "num": 2})
    tr.on_response(N(2), 0.1, samples=[b"b" * 20])
    assert tr.samples_by_node == {nid(1): (b"a" * 20, b"b" * 20), nid(2): (b"b" * 20,)}
    assert tr.all_samples() == {b"a" * 20, b"b" * 20}
    assert tr.extras == {nid(1): {"interval": 60, "num": 2}}


def test_max_queries_stops_sending_then_finishes() -> None:
    tr = Traversal(TARGET, [N(d) for d in range(10, 20)], alpha=3, k=8, max_queries=4, now=0.0)
    assert len(tr.next_queries(0.0)) == 3
    tr.on_response(N(10), 0.1)
    assert len(tr.next_queries(0.1)) == 1
    tr.on_response(N(11), 0.2)
    assert tr.next_queries(0.2) == [] and not tr.done  # budget spent, two replies still awaited
    tr.on_failure(N(12), 0.3)
    tr.on_tick(1.0)
    assert not tr.done  # N(13), sent at 0.1, is still in flight
    tr.on_tick(1.1)
    assert tr.done and tr.queries_sent == 4  # N(13) is slow: the budget is spent, nothing else to wait for
    assert tr.result() == [N(10), N(11)]
    check_counters(tr)


def test_own_id_is_never_a_candidate() -> None:
    me = N(2)
    tr = Traversal(TARGET, [N(9), me], k=2, now=0.0, own_id=me.id)
    assert tr.next_queries(0.0) == [N(9)]
    tr.on_response(N(9), 0.1, nodes=[me])
    assert tr.done and tr.result() == [N(9)]


def test_width_queries_more_than_k_but_result_is_k() -> None:
    net = Tiny(knows={d: list(range(1, 13)) for d in range(1, 13)})
    narrow = Traversal(TARGET, [N(12)], k=4, now=0.0)
    wide = Traversal(TARGET, [N(12)], k=4, width=8, now=0.0)
    drive(narrow, net)
    drive(wide, net)
    assert narrow.result() == wide.result() == [N(1), N(2), N(3), N(4)]
    assert wide.responses >= 8 > narrow.responses


def test_failures_among_the_closest_widen_the_search() -> None:
    # 1 is dead, yet the 8 closest all still list it, so none of them reports 9; only 30 does
    net = Tiny(knows={d: list(range(1, 9)) for d in [*range(2, 9), 20]}, silent={1})
    net.knows[21] = [30, 3]
    net.knows[30] = [9, 2]
    net.knows[9] = list(range(1, 9))
    seeds = [N(20), N(21)]
    plain = Traversal(TARGET, seeds, k=8, widen=0, now=0.0)
    drive(plain, net)
    assert plain.state_of(nid(9)) is None and N(20) in plain.result()
    widened = Traversal(TARGET, seeds, k=8, now=0.0)  # widen defaults to k // 2
    drive(widened, net)
    assert widened.widen == 4
    assert [int.from_bytes(n.id, "big") for n in widened.result()] == list(range(2, 10))
    assert widened.queries_sent > plain.queries_sent


def test_candidate_list_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traversal_module, "MAX_TRAVERSAL_CANDIDATES", 5)
    tr = Traversal(TARGET, [N(100)], k=2, now=0.0)
    tr.next_queries(0.0)
    tr.on_response(N(100), 0.1, nodes=[N(d) for d in (50, 40, 30, 20, 10, 60)])
    kept = [int.from_bytes(n.id, "big") for n, _ in tr.candidates()]
    assert kept == [10, 20, 30, 40, 100]  # the queried node stays, the farthest unqueried ones go


def test_silent_nodes_on_the_path_are_routed_around() -> None:
    net = Tiny(knows={d: [d - 1, d - 2] for d in range(3, 30)}, silent=set(range(1, 30, 2)))
    tr = Traversal(TARGET, [N(29), N(28)], alpha=2, k=3, now=0.0)
    end = drive(tr, net, rtt=0.3)
    assert tr.done
    assert [int.from_bytes(n.id, "big") for n in tr.result()] == [2, 4, 6]
    assert tr.state_of(nid(3)) in (QueryState.SLOW, QueryState.FAILED)
    assert tr.state_of(nid(5)) in (QueryState.SLOW, QueryState.FAILED)
    assert tr.state_of(nid(1)) is None  # only silent 3 knows it: never learnt
    assert end < 60.0  # short timeouts let the walk go on while silent nodes are still awaited
    check_counters(tr)


def test_slow_contact_in_the_closest_set_does_not_hold_the_end_back() -> None:
    net = Tiny(knows={d: list(range(1, 13)) for d in range(1, 13)}, silent={1})
    tr = Traversal(TARGET, [N(12), N(11)], k=8, short_timeout=0.5, full_timeout=5.0, now=0.0)
    end = drive(tr, net, rtt=0.05)
    assert [int.from_bytes(n.id, "big") for n in tr.result()] == list(range(2, 10))  # 8 closest responders
    assert tr.state_of(nid(1)) is QueryState.SLOW and tr.failures == 0
    assert end <= 0.05 + 0.5 + 1e-9  # queried in the second round, given up on at its short timeout
    # the old rule (wait for slow queries to fail) takes the full timeout
    waiting = Traversal(TARGET, [N(12), N(11)], k=8, short_timeout=0.5, full_timeout=5.0, now=0.0,
                        wait_for_slow=True)
    assert drive(waiting, net, rtt=0.05) >= 5.0
    assert waiting.result() == tr.result()


def test_slow_grace_waits_for_a_slow_node_that_would_be_in_the_result() -> None:
    net = Tiny(knows={d: list(range(1, 13)) for d in range(1, 13)}, silent={1})
    # node 1 is silent here (it never answers): with a grace it holds the end until its grace runs out
    tr = Traversal(TARGET, [N(12), N(11)], k=8, short_timeout=0.5, full_timeout=5.0, now=0.0, slow_grace=1.2)
    end = drive(tr, net, rtt=0.05)
    assert end == pytest.approx(0.05 + 1.2)
    assert tr.state_of(nid(1)) is QueryState.SLOW
    # a slow node that answers within its grace is in the result
    late = Traversal(TARGET, [N(12), N(11)], alpha=16, k=8, short_timeout=0.5, full_timeout=5.0, now=0.0,
                     slow_grace=1.2)
    late.next_queries(0.0)
    for d in (12, 11):
        net.reply(late, d, 0.05)
    late.next_queries(0.05)  # 1..10 queried
    for d in range(2, 11):
        net.reply(late, d, 0.1)
    late.on_tick(0.6)
    assert late.state_of(nid(1)) is QueryState.SLOW and not late.done  # past the short timeout, in its grace
    assert late.next_deadline() == pytest.approx(0.05 + 1.2)
    late.on_response(N(1), 0.9, nodes=[])
    assert late.done and late.result()[0] == N(1)
    # a slow node beyond the k closest responders does not hold the end
    far = Tiny(knows={d: list(range(1, 13)) for d in range(1, 13)}, silent={12})
    tail = Traversal(TARGET, [N(11), N(10)], k=8, short_timeout=0.5, full_timeout=5.0, now=0.0, slow_grace=1.2)
    assert drive(tail, far, rtt=0.05) < 0.5


def test_seeds_added_after_the_first_round_give_the_same_lookup() -> None:
    """A driver that starts with the first alpha of distance-sorted seeds and adds the rest once those queries
    are out (lookup_stream's ``closest_first``) sends the same first round and then walks the same way."""
    seeds = [N(d) for d in range(2, 18)]
    whole = Traversal(TARGET, seeds, alpha=3, now=0.0)
    split = Traversal(TARGET, seeds[:3], alpha=3, now=0.0)
    assert whole.next_queries(0.0) == split.next_queries(0.0) == seeds[:3]
    split.add_seeds(seeds[3:])
    assert split.candidates() == whole.candidates()
    for t in (whole, split):
        t.on_response(N(2), 0.1, nodes=[N(1), N(30)])
        t.on_failure(N(3), 0.2)
    assert whole.next_queries(0.3) == split.next_queries(0.3)
    assert split.candidates() == whole.candidates() and not split.done


def test_on_tick_returns_the_queries_that_reached_the_full_timeout_once() -> None:
    t = Traversal(TARGET, [N(d) for d in range(2, 6)], alpha=3, short_timeout=0.5, full_timeout=2.0, now=0.0)
    sent = t.next_queries(0.0)
    t.on_response(sent[0], 0.1)
    assert t.on_tick(1.0) == []  # slow, not failed yet
    assert t.on_tick(2.0) == sent[1:]
    assert t.on_tick(3.0) == []  # each is reported once
    assert t.state_of(sent[1].id) is QueryState.FAILED
