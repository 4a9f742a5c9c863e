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


@given(own=ids, targets=st.lists(ids, min_size=1, max_size=3), want=wants, scrape=st.booleans(), ro=st.booleans(),
       version=versions, tid=tids)
def test_a_shapes_templates_match_encode(own: bytes, targets: list[bytes], want: tuple[bytes, ...], scrape: bool,
                                         ro: bool, version: bytes | None, tid: bytes) -> None:
    """A node's shape of each lookup kind gives every lookup's datagrams with no encoding per lookup."""
    makes = (lambda t, x: krpc.GetPeers(t, own, x, want=want, scrape=scrape, read_only=ro),
             lambda t, x: krpc.FindNode(t, own, x, want=want, read_only=ro),
             lambda t, x: krpc.SampleInfohashes(t, own, x, want=want, read_only=ro))
    for make in makes:
        shape = krpc.QueryShape(make)
        for target in targets:
            template = shape.template(target)
            assert template(tid) == make(tid, target)
            assert template.datagram(tid, version) == krpc.encode(make(tid, target), client_version=version)


def test_a_shape_is_encoded_once_per_client_version() -> None:
    made: list[bytes] = []

    def make(t: bytes, target: bytes) -> krpc.Query:
        made.append(target)
        return krpc.GetPeers(t, bytes(20), target)

    shape = krpc.QueryShape(make)
    for target in (b"a" * 20, b"b" * 20, b"c" * 20):
        expected = krpc.encode(make(b"t1", target), client_version=b"PW01")
        assert shape.template(target).datagram(b"t1", b"PW01") == expected
    assert made.count(krpc.QueryShape.STAND_IN) == 1  # the shape's one encoding; the rest are this test's


def test_a_shape_whose_stand_in_is_the_own_id_encodes_each_template() -> None:
    own = krpc.QueryShape.STAND_IN
    shape = krpc.QueryShape(lambda t, x: krpc.FindNode(t, own, x))
    for target in (own, bytes(20)):
        assert shape.template(target).datagram(b"t1") == krpc.encode(krpc.FindNode(b"t1", own, target))


def test_a_shapes_target_must_be_20_bytes() -> None:
    shape = krpc.QueryShape(lambda t, x: krpc.GetPeers(t, bytes(20), x))
    with pytest.raises(LocalProtocolError):
        shape.template(b"short")
