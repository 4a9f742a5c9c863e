"""The traversal's eager rule (BEP 5 lookups, issue 12): a candidate that would rank among the closest is
sent at once, beyond ``alpha`` (the target is id 0, so id == distance)."""

from __future__ import annotations

import pytest

from p2pwatch.dht.traversal import QueryState, Traversal
from p2pwatch.errors import LocalProtocolError
from tests.dht.test_traversal import N, Tiny, check_counters, drive, nid


def test_eager_must_not_be_negative() -> None:
    with pytest.raises(LocalProtocolError):
        Traversal(N(1).id, [], eager=-1, now=0.0)


def test_close_candidates_are_sent_beyond_alpha_until_eager_are_ahead() -> None:
    plain = Traversal(nid(0), [N(100), N(90)], alpha=2, k=3, short_timeout=0.5, now=0.0)
    eager = Traversal(nid(0), [N(100), N(90)], alpha=2, k=3, short_timeout=0.5, now=0.0, eager=3)
    for tr in (plain, eager):
        assert tr.next_queries(0.0) == [N(90), N(100)]
        tr.on_response(N(100), 0.05, nodes=[N(d) for d in range(1, 7)])
    assert plain.next_queries(0.05) == [N(1)]  # one slot free (90 is still in flight)
    # 1 takes the free slot; 2 and 3 have fewer than 3 responders or in-flight queries closer: sent too
    assert eager.next_queries(0.05) == [N(1), N(2), N(3)]
    assert eager.state_of(nid(4)) is QueryState.NEW and eager.outstanding == 4
    # 1 answers: 1, 2, 3 are ahead of 4 and every slot is taken, so 4 waits
    eager.on_response(N(1), 0.1)
    assert eager.next_queries(0.1) == []
    # slow queries do not count as ahead: once 2 and 3 are past the short timeout, 4 and 5 go
    assert eager.next_queries(0.6) == [N(4), N(5)]
    assert eager.state_of(nid(2)) is QueryState.SLOW and eager.state_of(nid(6)) is QueryState.NEW
    check_counters(eager)


def test_eager_sending_ends_the_lookup_sooner_with_the_same_result() -> None:
    near = list(range(1, 13))
    net = Tiny(knows={**{d: near for d in (100, 101, 102, 103)}, **{d: near for d in near}}, silent={2, 5})
    ends, results = [], []
    for eager in (0, 8):
        tr = Traversal(nid(0), [N(d) for d in (100, 101, 102, 103)], alpha=2, k=4, short_timeout=0.5,
                       full_timeout=5.0, now=0.0, slow_grace=1.0, eager=eager)
        ends.append(drive(tr, net, rtt=0.1))
        results.append([int.from_bytes(n.id, "big") for n in tr.result()])
        check_counters(tr)
    assert results[0] == results[1] == [1, 3, 4, 6]
    # without eager the near nodes go two at a time; with it all of them at the first reply (t = 0.1),
    # so the silent 2 and 5 (held for their grace) are given up on at 0.1 + 1.0
    assert ends[1] == pytest.approx(1.1)
    assert ends[0] > ends[1]
