"""Examination and BEP 11: PEX listings are recorded with their reporter, and only what policy allows is probed.

Scripted peers (tests/hostile_peers.py) on their own loopback addresses list each other, public and private
addresses over ut_pex; netguard confines the tests to loopback, so a public address must never be contacted.
"""

from __future__ import annotations

from datetime import UTC, datetime

import trio

from p2pwatch.config import ProbeSettings
from p2pwatch.investigate.examine import Examination, observation_records, probe_listed, probe_pex_listed
from p2pwatch.probe.pex import PexFlags, PexPeer, encode_pex
from tests.conftest import loopback_address
from tests.hostile_peers import PeerScript, closed_port, serve_scripted_peer, synthetic_v1_torrent

SETTINGS = ProbeSettings(encryption="off", connect_timeout=2, handshake_timeout=2, pex_wait=0)


async def _examine(allow_local: bool) -> tuple[Examination, dict[str, tuple[str, int]]]:
    torrent = synthetic_v1_torrent()
    names = ("a", "b", "d", "e")
    scripts = {n: PeerScript(torrent=torrent) for n in names}
    at: dict[str, tuple[str, int]] = {}
    exam = Examination(torrent.infohash, datetime.now(UTC))
    async with trio.open_nursery() as nursery:
        for n in names:
            ip = loopback_address()
            at[n] = (ip, await nursery.start(serve_scripted_peer, ip, scripts[n]))
        c_ip = loopback_address()
        at["c"] = (c_ip, closed_port(c_ip))  # listed, gone
        a_ip, a_port = at["a"]
        scripts["a"].pex = (encode_pex([
            PexPeer(*at["b"], PexFlags.SEED), PexPeer(at["b"][0], 9999),  # a second port of b: ignored
            PexPeer(*at["c"]), PexPeer(a_ip, a_port + 1),  # another port of the reporter itself: ignored
            PexPeer("8.8.8.8", 443), PexPeer("192.168.1.5", 80), PexPeer("::1", at["b"][1])]),)
        scripts["b"].pex = (encode_pex([PexPeer(*at["d"]), PexPeer(*at["a"])]),)
        scripts["d"].pex = (encode_pex([PexPeer(*at["e"])]),)  # heard in the last round: listed, not probed
        exam.add_listing(at["a"], "dht", "127.0.0.1:6881")
        await probe_listed(exam, None, SETTINGS, limit=10, pieces_budget=10)
        await probe_pex_listed(exam, None, SETTINGS, limit=10, pieces_budget=10, allow_local=allow_local)
        nursery.cancel_scope.cancel()
    return exam, at


async def test_pex_listings_are_recorded_and_probed_by_policy() -> None:
    exam, at = await _examine(allow_local=True)
    a = f"{at['a'][0]}:{at['a'][1]}"
    b = f"{at['b'][0]}:{at['b'][1]}"
    d = f"{at['d'][0]}:{at['d'][1]}"
    assert exam.listed[at["b"]] == {("pex", a)}
    assert exam.listed[at["c"]] == {("pex", a)}
    assert exam.listed[("8.8.8.8", 443)] == {("pex", a)}  # a claim is recorded ...
    assert exam.listed[("192.168.1.5", 80)] == {("pex", a)}
    assert exam.listed[at["a"]] == {("dht", "127.0.0.1:6881"), ("pex", b)}
    assert exam.listed[at["d"]] == {("pex", b)}
    assert exam.listed[at["e"]] == {("pex", d)}
    probed = [(p.ip, p.port) for p in exam.probes]
    # ... but only loopback peers are contacted (netguard), each once, one port per IP, two rounds deep
    assert sorted(probed) == sorted([at["a"], at["b"], at["c"], at["d"], ("::1", at["b"][1])])
    assert all("policy" not in (p.error or "") for p in exam.probes)
    levels = {(p.ip, p.port): p.level for p in exam.probes}
    assert levels[at["b"]] == 2 and levels[at["d"]] == 2 and levels[at["c"]] == 0  # have_all, no piece: 2
    records = observation_records(1, exam)
    pex = {(r.ip, r.port, r.reporter) for r in records if r.source == "pex"}
    assert (at["b"][0], at["b"][1], a) in pex and ("8.8.8.8", 443, a) in pex
    assert all(r.level == 0 for r in records if r.source == "pex")


async def test_without_local_networks_only_global_addresses_are_listed_and_none_probed() -> None:
    exam, at = await _examine(allow_local=False)
    a = f"{at['a'][0]}:{at['a'][1]}"
    assert {peer for peer, claims in exam.listed.items() if ("pex", a) in claims} == {("8.8.8.8", 443)}
    assert [(p.ip, p.port) for p in exam.probes] == [at["a"]]


async def test_remembered_pex_listings_are_probed_again_but_not_listed_again() -> None:
    torrent = synthetic_v1_torrent()
    scripts = {n: PeerScript(torrent=torrent) for n in ("a", "b")}
    at: dict[str, tuple[str, int]] = {}
    exam = Examination(torrent.infohash, datetime.now(UTC))
    async with trio.open_nursery() as nursery:
        for n, script in scripts.items():
            ip = loopback_address()
            at[n] = (ip, await nursery.start(serve_scripted_peer, ip, script))
        earlier = f"{loopback_address()}:6881"  # the peer that listed b last time is gone
        remembered = [(at["b"], earlier), ((at["b"][0], 9999), earlier), (("8.8.8.8", 1), earlier),
                      (("192.168.1.5", 2), "not an endpoint")]
        exam.add_listing(at["a"], "dht", "127.0.0.1:6881")
        await probe_listed(exam, None, SETTINGS, limit=10, pieces_budget=10)
        await probe_pex_listed(exam, None, SETTINGS, limit=10, pieces_budget=10, allow_local=True,
                               remembered=remembered)
        nursery.cancel_scope.cancel()
    assert sorted((p.ip, p.port) for p in exam.probes) == sorted([at["a"], at["b"]])
    assert {p.port: p.level for p in exam.probes}[at["b"][1]] == 2
    assert list(exam.listed) == [at["a"]]  # nobody listed b this time: no new claim
