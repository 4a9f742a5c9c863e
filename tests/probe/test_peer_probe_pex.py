"""The peer probe and BEP 11 ut_pex, against scripted peers: advertised, parsed, bounded, never fatal."""

from __future__ import annotations

import struct

import trio
import trio.testing

from p2pwatch import limits
from p2pwatch.probe.peer_probe import ProbeTimeouts
from p2pwatch.probe.pex import PexFlags, PexPeer, encode_pex
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.metainfo import parse_info
from tests.hostile_peers import PeerScript, synthetic_v1_torrent
from tests.probe.test_peer_probe import AUTOJUMP, notes, run_probe, sent

LISTED = [PexPeer("127.0.0.50", 6881, PexFlags.SEED | PexFlags.REACHABLE), PexPeer("::1", 6882, 0),
          PexPeer("8.8.8.8", 443, 0)]


async def test_probe_advertises_ut_pex_and_collects_the_listed_peers() -> None:
    torrent = synthetic_v1_torrent()
    result = await run_probe(PeerScript(torrent=torrent, pex=(encode_pex(LISTED),)), encryption="off")
    assert result.error is None and result.level == 3
    assert sent(result, "extended_handshake")[0]["m"] == {"ut_pex": 1, "ut_metadata": 2}
    assert set(result.pex_peers) == set(LISTED)
    entry = next(e for e in result.transcript if e.message == "ut_pex")
    assert entry.detail["added"] == [{"ip": "127.0.0.50", "port": 6881, "flags": 0x12},
                                     {"ip": "8.8.8.8", "port": 443, "flags": 0},
                                     {"ip": "::1", "port": 6882, "flags": 0}]
    assert result.to_json()["pex_peers"][0] == {"ip": "127.0.0.50", "port": 6881, "flags": 0x12}


async def test_malformed_pex_is_noted_and_the_probe_goes_on() -> None:
    torrent = synthetic_v1_torrent()
    bad = [b"not bencoding", b"d5:added5:abcdee", bencoding.encode({b"added": bytes(6), b"added.f": b"\x00\x00"}),
           b"le"]
    good = encode_pex([PexPeer("127.0.0.51", 1000)])
    result = await run_probe(PeerScript(torrent=torrent, pex=(*bad, good)), encryption="off")
    assert result.error is None and result.flagged is None and result.level == 3
    assert notes(result).count("ut_pex_error") == 4
    assert result.pex_peers == (PexPeer("127.0.0.51", 1000),)


async def test_pex_floods_are_bounded_per_message_and_per_peer() -> None:
    torrent = synthetic_v1_torrent()
    biggest = (limits.MAX_EXTENDED_MESSAGE - 100) // 6  # as many contacts as one message can carry
    flood = [bencoding.encode({b"added": b"".join(bytes([127, 1 + m, i // 256, i % 256]) + struct.pack(">H", 1)
                                                  for i in range(biggest))})
             for m in range(limits.MAX_PEX_MESSAGES_PER_PEER + 4)]
    result = await run_probe(PeerScript(torrent=torrent, pex=tuple(flood)), encryption="off")
    assert result.error is None and result.level == 3
    assert len(result.pex_peers) == limits.MAX_PEX_PEERS_PER_PEER
    pex_notes = [e.detail for e in result.transcript if e.message == "ut_pex"]
    assert len(pex_notes) == limits.MAX_PEX_MESSAGES_PER_PEER
    assert all(len(n["added"]) == limits.MAX_PEX_PEERS_PER_MESSAGE for n in pex_notes)
    assert pex_notes[0]["truncated"] == biggest - limits.MAX_PEX_PEERS_PER_MESSAGE
    assert notes(result).count("ut_pex_error") == 4  # the messages beyond the per-peer limit are ignored


async def test_probe_lingers_for_the_first_pex_message(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    torrent = synthetic_v1_torrent()
    metainfo = parse_info(torrent.info_bytes)
    script = PeerScript(torrent=torrent, pex=(encode_pex(LISTED[:1]),), pex_delay=3.0)
    timeouts = ProbeTimeouts(pex=5.0)
    start = trio.current_time()
    result = await run_probe(script, metainfo=metainfo, fetch_piece=False, timeouts=timeouts, encryption="off")
    assert result.error is None and result.level == 2
    assert result.pex_peers == tuple(LISTED[:1])
    assert 3.0 <= trio.current_time() - start < 5.0  # it stopped waiting once the message came


async def test_pex_wait_is_bounded_and_not_an_error(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    torrent = synthetic_v1_torrent()
    metainfo = parse_info(torrent.info_bytes)
    script = PeerScript(torrent=torrent, advertise_pex=True)  # advertises ut_pex, never sends it
    start = trio.current_time()
    result = await run_probe(script, metainfo=metainfo, fetch_piece=False, timeouts=ProbeTimeouts(pex=4.0),
                             encryption="off")
    assert result.error is None and result.level == 2 and result.pex_peers == ()
    assert "no_ut_pex" in notes(result)
    assert 4.0 <= trio.current_time() - start < 5.0


async def test_no_linger_by_default_or_when_pex_is_not_advertised(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    torrent = synthetic_v1_torrent()
    metainfo = parse_info(torrent.info_bytes)
    start = trio.current_time()
    late = PeerScript(torrent=torrent, pex=(encode_pex(LISTED),), pex_delay=3.0)
    result = await run_probe(late, metainfo=metainfo, fetch_piece=False, encryption="off")
    assert result.pex_peers == () and trio.current_time() - start < 1.0  # default ProbeTimeouts: pex=0
    start = trio.current_time()
    result = await run_probe(PeerScript(torrent=torrent), metainfo=metainfo, fetch_piece=False,
                             timeouts=ProbeTimeouts(pex=5.0), encryption="off")
    assert "no_ut_pex" not in notes(result) and trio.current_time() - start < 1.0
