"""Peer probe driver against scripted peers (tests/hostile_peers.py): honest, hostile, silent, gone.

Tests that expect success run on the real clock (they finish in milliseconds); tests that wait for a
timeout run on trio's MockClock with autojump, so a 5-second timeout passes instantly.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import trio
import trio.testing

from p2pwatch.errors import LocalProtocolError
from p2pwatch.probe.peer_probe import ProbeResult, ProbeTimeouts, probe_peer
from p2pwatch.torrent.metainfo import parse_info
from tests.conftest import loopback_address
from tests.hostile_peers import PeerScript, closed_port, serve_scripted_peer, synthetic_v1_torrent

#: Real seconds of quiet before the MockClock jumps to the next deadline: long enough that a loaded machine
#: does not jump in the middle of real loopback I/O, short enough that a 30 s timeout passes at once.
AUTOJUMP = 0.3
TIMEOUTS = ProbeTimeouts(connect=5, handshake=5, metadata=15, piece=30, idle=10)


async def run_probe(script: PeerScript, infohash: bytes | None = None, **kwargs: object) -> ProbeResult:
    ip = loopback_address()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_scripted_peer, ip, script)
        assert script.torrent is not None or infohash is not None
        ih = infohash if infohash is not None else script.torrent.infohash  # type: ignore[union-attr]
        kwargs.setdefault("timeouts", TIMEOUTS)
        result = await probe_peer(ip, port, ih, **kwargs)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
    return result


def sent(result: ProbeResult, name: str) -> list[dict[str, object]]:
    return [e.detail for e in result.transcript if e.direction == "out" and e.message == name]


def notes(result: ProbeResult) -> list[str]:
    return [e.message for e in result.transcript if e.direction == "note"]


# --------------------------------------------------------------------------------------- honest


async def test_honest_peer_reaches_level_3_with_the_smallest_piece() -> None:
    torrent = synthetic_v1_torrent(size=100_000, piece_length=32768)
    result = await run_probe(PeerScript(torrent=torrent), encryption="off")
    assert result.error is None and result.flagged is None
    assert result.level == 3
    assert result.metadata_verified and result.metadata == torrent.info_bytes
    assert result.piece_verified == 3  # the short last piece (1,696 bytes) is the cheapest proof
    assert result.piece_hash == hashlib.sha1(torrent.piece(3)).hexdigest()
    assert result.piece_hash_algorithm == "sha1"
    assert result.client == "ScriptedPeer 1.0"
    assert result.peer_id == b"-HP0001-" + bytes(12)
    assert result.have_fraction == 1.0
    assert not result.encrypted and result.encryption == "none"
    assert [d["index"] for d in sent(result, "request")] == [3]
    assert result.bytes_received < 1696 + 1000  # the piece, the metadata and a few headers
    directions = {e.direction for e in result.transcript}
    assert directions == {"in", "out", "note"}
    assert all(e.at.endswith("+00:00") and "." in e.at for e in result.transcript)


async def test_requested_piece_and_given_metainfo() -> None:
    torrent = synthetic_v1_torrent(size=100_000, piece_length=32768)
    metainfo = parse_info(torrent.info_bytes)
    result = await run_probe(PeerScript(torrent=torrent, advertise="bitfield"), metainfo=metainfo, piece=1,
                             encryption="off")
    assert result.level == 3 and result.piece_verified == 1
    assert sent(result, "ut_metadata_request") == []  # metadata was given, not fetched
    assert not result.metadata_verified
    assert result.have_fraction == 1.0
    assert [d["begin"] for d in sent(result, "request")] == [0, 16384]


async def test_piece_out_of_range_is_an_error_not_a_crash() -> None:
    torrent = synthetic_v1_torrent(size=50_000, piece_length=32768)
    result = await run_probe(PeerScript(torrent=torrent), piece=7, encryption="off")
    assert result.level == 2 and result.metadata_verified
    assert result.error is not None and "out of range" in result.error


async def test_peer_without_pieces_stays_at_level_1() -> None:
    torrent = synthetic_v1_torrent(size=50_000)
    result = await run_probe(PeerScript(torrent=torrent, advertise="none"), encryption="off")
    assert result.level == 1
    assert result.have_fraction == 0.0
    assert result.metadata_verified
    assert sent(result, "request") == []


async def test_metadata_only_probe_skips_the_piece() -> None:
    torrent = synthetic_v1_torrent(size=50_000)
    result = await run_probe(PeerScript(torrent=torrent), encryption="off", fetch_piece=False)
    assert result.level == 2 and result.metadata_verified and result.piece_verified is None
    assert sent(result, "interested") == []


def test_result_json_has_the_cli_fields() -> None:
    result = trio.run(run_probe, PeerScript(torrent=synthetic_v1_torrent(20_000)), None)
    document = json.loads(json.dumps(result.to_json()))
    cli_fields = ("level", "client", "peer_id", "have_fraction", "metadata_verified", "piece_verified",
                  "transcript")
    assert set(cli_fields) <= set(document)
    assert document["level"] == 3
    assert document["peer_id"] == (b"-HP0001-" + bytes(12)).hex()
    assert {"at", "direction", "message", "detail"} <= set(document["transcript"][0])


# -------------------------------------------------------------------------------------- hostile


async def test_listed_but_nothing_listening_stays_level_0(mock_clock: trio.testing.MockClock) -> None:
    ip = loopback_address()
    start = trio.current_time()
    result = await probe_peer(ip, closed_port(ip), bytes(20), timeouts=TIMEOUTS)
    assert result.level == 0
    assert result.error is not None and "refused" in result.error.lower()
    assert trio.current_time() - start < TIMEOUTS.connect  # refused at once, no timeout waited
    assert result.peer_id is None and result.bytes_received == 0


async def test_wrong_piece_data_is_flagged_and_stays_level_2() -> None:
    torrent = synthetic_v1_torrent(size=100_000)
    result = await run_probe(PeerScript(torrent=torrent, wrong_piece_data=True), encryption="off")
    assert result.level == 2
    assert result.flagged is not None and "does not match" in result.flagged
    assert result.piece_verified is None and result.piece_hash is None
    assert result.piece_sha1 is not None  # what it did send is on record
    assert result.metadata_verified


async def test_metadata_of_another_torrent_is_flagged() -> None:
    torrent = synthetic_v1_torrent(size=50_000)
    other = synthetic_v1_torrent(size=50_000, name=b"other.bin")
    result = await run_probe(PeerScript(torrent=torrent, metadata=other.info_bytes), encryption="off")
    assert result.flagged is not None and "metadata" in result.flagged
    assert not result.metadata_verified and result.metadata is None
    assert result.level == 2  # it still claims the pieces of the torrent it handshook for
    assert sent(result, "request") == []  # nothing to verify a piece against


async def test_huge_metadata_size_refused_before_download() -> None:
    torrent = synthetic_v1_torrent(size=50_000)
    script = PeerScript(torrent=torrent, metadata_size=1 << 30)
    result = await run_probe(script, encryption="off")
    assert result.flagged is not None and "metadata_size" in result.flagged
    assert sent(result, "ut_metadata_request") == []
    assert not result.metadata_verified
    assert result.bytes_received < 1000
    assert "ut_metadata_request" not in script.connections[0]["received"]


async def test_handshake_for_another_infohash_is_flagged_level_0() -> None:
    torrent = synthetic_v1_torrent(size=50_000)
    script = PeerScript(torrent=torrent, handshake_infohash=b"\x01" * 20)
    result = await run_probe(script, encryption="off")
    assert result.level == 0
    assert result.flagged is not None and "different infohash" in result.flagged
    assert result.peer_id == script.peer_id


@pytest.mark.parametrize(("encryption", "step"), [("prefer", "MSE"), ("off", "BitTorrent handshake")])
async def test_silent_peer_costs_one_handshake_timeout(mock_clock: trio.testing.MockClock, encryption: str,
                                                       step: str) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    start = trio.current_time()
    with trio.fail_after(60):
        result = await run_probe(PeerScript(silent=True), infohash=b"\x02" * 20, encryption=encryption)
    elapsed = trio.current_time() - start
    assert result.level == 0
    assert result.error is not None and step in result.error
    assert TIMEOUTS.handshake <= elapsed < TIMEOUTS.handshake + 1
    assert "fallback_plaintext" not in notes(result)  # silence is not a reason to try again


async def test_peer_silent_after_handshake_is_bounded_by_idle(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    torrent = synthetic_v1_torrent(size=50_000)
    start = trio.current_time()
    with trio.fail_after(60):
        result = await run_probe(PeerScript(torrent=torrent, silent_after_handshake=True), encryption="off")
    assert result.level == 1
    assert "no_bitfield" in notes(result)
    assert TIMEOUTS.idle <= trio.current_time() - start < TIMEOUTS.idle + 1


async def test_peer_that_never_unchokes_is_bounded_by_the_piece_timeout(
        mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    torrent = synthetic_v1_torrent(size=50_000)
    timeouts = ProbeTimeouts(connect=5, handshake=5, metadata=15, piece=30, idle=60)
    start = trio.current_time()
    with trio.fail_after(120):
        result = await run_probe(PeerScript(torrent=torrent, never_unchoke=True), encryption="off",
                                 timeouts=timeouts)
    assert result.level == 2 and result.metadata_verified and result.piece_verified is None
    assert result.error is not None and "piece" in result.error
    assert sent(result, "request") == []  # never requested while choked
    assert timeouts.piece <= trio.current_time() - start < timeouts.piece + 1


async def test_silent_peer_with_small_timeouts(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = AUTOJUMP
    timeouts = ProbeTimeouts(connect=1, handshake=2, metadata=3, piece=4, idle=1)
    start = trio.current_time()
    result = await run_probe(PeerScript(silent=True), infohash=b"\x02" * 20, encryption="require",
                             timeouts=timeouts)
    assert result.level == 0 and result.error is not None
    assert 2 <= trio.current_time() - start < 3


# ----------------------------------------------------------------------------------- encryption


async def test_encrypted_peer_with_rc4() -> None:
    torrent = synthetic_v1_torrent(size=100_000)
    script = PeerScript(torrent=torrent, mse="require")
    result = await run_probe(script, encryption="require")
    assert result.level == 3 and result.metadata_verified
    assert result.encrypted and result.encryption == "rc4"
    assert script.connections[0]["mse"] == "rc4"


async def test_prefer_falls_back_to_plaintext_on_a_fresh_connection() -> None:
    torrent = synthetic_v1_torrent(size=50_000)
    script = PeerScript(torrent=torrent, mse="off")
    result = await run_probe(script, encryption="prefer")
    assert "fallback_plaintext" in notes(result)
    assert result.level == 3 and not result.encrypted
    assert len(script.connections) == 2


async def test_require_never_falls_back() -> None:
    torrent = synthetic_v1_torrent(size=50_000)
    script = PeerScript(torrent=torrent, mse="off")
    result = await run_probe(script, encryption="require")
    assert result.level == 0
    assert result.error is not None and "required" in result.error
    assert len(script.connections) == 1


async def test_plaintext_probe_of_a_peer_that_requires_encryption() -> None:
    torrent = synthetic_v1_torrent(size=50_000)
    result = await run_probe(PeerScript(torrent=torrent, mse="require"), encryption="off")
    assert result.level == 0 and result.error is not None


# --------------------------------------------------------------------------------------- misuse


async def test_api_misuse_raises_before_any_io() -> None:
    with pytest.raises(LocalProtocolError):
        await probe_peer("127.0.0.1", 1, b"short")
    with pytest.raises(LocalProtocolError):
        await probe_peer("127.0.0.1", 1, bytes(20), encryption="maybe")
    torrent = synthetic_v1_torrent(size=20_000)
    with pytest.raises(LocalProtocolError):
        await probe_peer("127.0.0.1", 1, bytes(20), metainfo=parse_info(torrent.info_bytes))


async def test_network_policy_refusal_is_reported() -> None:
    result = await probe_peer("10.1.2.3", 6881, bytes(20))
    assert result.level == 0 and result.error is not None and "policy" in result.error
