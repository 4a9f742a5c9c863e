"""A lookup's query template (issue 12): its datagrams are byte for byte what :func:`krpc.encode` writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pwatch.dht import krpc
from p2pwatch.errors import LocalProtocolError

ids = st.binary(min_size=20, max_size=20)
tids = st.binary(min_size=0, max_size=16)
wants = st.lists(st.sampled_from([b"n4", b"n6"]), max_size=2, unique=True).map(tuple)
versions = st.one_of(st.none(), st.binary(min_size=1, max_size=8))


@given(own=ids, target=ids, want=wants, scrape=st.booleans(), ro=st.booleans(), version=versions,
       tid_list=st.lists(tids, min_size=1, max_size=4))
def test_get_peers_template_matches_encode(own: bytes, target: bytes, want: tuple[bytes, ...], scrape: bool,
                                           ro: bool, version: bytes | None, tid_list: list[bytes]) -> None:
    template = krpc.QueryTemplate(lambda t: krpc.GetPeers(t, own, target, want=want, scrape=scrape, read_only=ro))
    for tid in tid_list:
        expected = krpc.encode(template(tid), client_version=version)
        assert template.datagram(tid, version) == expected
        assert krpc.decode(expected).tid == tid


@given(own=ids, target=ids, want=wants, ro=st.booleans(), version=versions, tid=tids)
def test_find_node_and_sample_templates_match_encode(own: bytes, target: bytes, want: tuple[bytes, ...], ro: bool,
                                                     version: bytes | None, tid: bytes) -> None:
    for make in (lambda t: krpc.FindNode(t, own, target, want=want, read_only=ro),
                 lambda t: krpc.SampleInfohashes(t, own, target, want=want, read_only=ro)):
        template = krpc.QueryTemplate(make)
        assert template.datagram(tid, version) == krpc.encode(make(tid), client_version=version)


def test_a_new_client_version_re_encodes() -> None:
    template = krpc.QueryTemplate(lambda t: krpc.Ping(t, bytes(20)))
    assert template.datagram(b"aa", b"PW01") == krpc.encode(krpc.Ping(b"aa", bytes(20)), client_version=b"PW01")
    assert template.datagram(b"aa") == krpc.encode(krpc.Ping(b"aa", bytes(20)))


def test_bad_tid_and_bad_query_are_typed_errors() -> None:
    template = krpc.QueryTemplate(lambda t: krpc.GetPeers(t, bytes(20), bytes(20)))
    with pytest.raises(LocalProtocolError):
        template.datagram(b"x" * 17)
    with pytest.raises(LocalProtocolError):
        template.datagram("ab")  # type: ignore[arg-type]
    broken = krpc.QueryTemplate(lambda t: krpc.GetPeers(t, b"short", bytes(20)))
    with pytest.raises(LocalProtocolError):
        broken.datagram(b"ab")


@given(owns=st.lists(ids, min_size=1, max_size=2), targets=st.lists(ids, min_size=1, max_size=3), want=wants,
       scrape=st.booleans(), ro=st.booleans(), version=versions, tid=tids)
def test_a_shapes_templates_match_encode(owns: list[bytes], targets: list[bytes], want: tuple[bytes, ...],
                                         scrape: bool, ro: bool, version: bytes | None, tid: bytes) -> None:
    """The shape of each lookup kind gives every node's and every lookup's datagrams with no encoding per
    node or lookup."""
    makes = (lambda t, o, x: krpc.GetPeers(t, o, x, want=want, scrape=scrape, read_only=ro),
             lambda t, o, x: krpc.FindNode(t, o, x, want=want, read_only=ro),
             lambda t, o, x: krpc.SampleInfohashes(t, o, x, want=want, read_only=ro))
    for make in makes:
        shape = krpc.QueryShape(make)
        for own in owns:
            for target in targets:
                template = shape.template(own, target)
                assert template(tid) == make(tid, own, target)
                assert template.datagram(tid, version) == krpc.encode(make(tid, own, target), client_version=version)


def test_a_shape_is_encoded_once_per_client_version() -> None:
    made: list[tuple[bytes, bytes]] = []

    def make(t: bytes, own: bytes, target: bytes) -> krpc.Query:
        made.append((own, target))
        return krpc.GetPeers(t, own, target)

    shape = krpc.QueryShape(make)
    for own, target in ((b"a" * 20, b"b" * 20), (b"c" * 20, b"d" * 20), (b"e" * 20, b"e" * 20)):
        expected = krpc.encode(make(b"t1", own, target), client_version=b"PW01")
        assert shape.template(own, target).datagram(b"t1", b"PW01") == expected
    # the shape's one encoding (with both stand-ins); the rest are this test's
    assert made.count((krpc.QueryShape.STAND_IN_ID, krpc.QueryShape.STAND_IN)) == 1 and len(made) == 4


def test_the_stand_ins_as_real_values_still_give_encodes_bytes() -> None:
    """A node whose id is a stand-in's bytes, and a target that is: the values are spliced by position."""
    ids, target = krpc.QueryShape.STAND_IN_ID, krpc.QueryShape.STAND_IN
    shape = krpc.QueryShape(lambda t, o, x: krpc.FindNode(t, o, x))
    for own, goal in ((target, ids), (ids, target), (target, target), (bytes(20), ids)):
        assert shape.template(own, goal).datagram(b"t1") == krpc.encode(krpc.FindNode(b"t1", own, goal))


def test_a_shape_whose_stand_ins_do_not_appear_encodes_each_template() -> None:
    """A make that ignores the id it is given (so the id's stand-in is not in the bytes): the fallback."""
    fixed = bytes(range(20))
    shape = krpc.QueryShape(lambda t, o, x: krpc.FindNode(t, fixed, x))
    assert shape.parts(None) is None
    assert shape.template(b"o" * 20, b"x" * 20).datagram(b"t1") == krpc.encode(krpc.FindNode(b"t1", fixed, b"x" * 20))


def test_a_shapes_target_must_be_20_bytes() -> None:
    shape = krpc.QueryShape(lambda t, o, x: krpc.GetPeers(t, o, x))
    with pytest.raises(LocalProtocolError):
        shape.template(bytes(20), b"short")
