from __future__ import annotations

import pytest
import trio

from p2pwatch import netguard
from p2pwatch.errors import NetworkRefused, P2PWatchError


def test_policy_allows_loopback_and_refuses_public() -> None:
    policy = netguard.NetworkPolicy.loopback_only()
    assert policy.allows("127.0.0.1")
    assert policy.allows("127.45.3.9")
    assert not policy.allows("8.8.8.8")
    assert policy.allows("::1")  # the IPv6 loopback address (BEP 32 tests), and nothing else of IPv6
    assert not policy.allows("::2") and not policy.allows("fe80::1") and not policy.allows("2001:db8::1")
    assert not policy.allows("not an ip")
    with pytest.raises(NetworkRefused):
        policy.check("67.215.246.10", 6881)


def test_refused_networks_win_over_allowed() -> None:
    policy = netguard.NetworkPolicy.from_specs(["0.0.0.0/0"], refused=["10.0.0.0/8"])
    assert policy.allows("1.2.3.4")
    assert not policy.allows("10.1.2.3")
    assert not policy.allows("::ffff:10.1.2.3")


def test_test_suite_runs_loopback_only() -> None:
    assert netguard.current_policy() == netguard.NetworkPolicy.loopback_only()


async def test_udp_send_to_public_address_is_refused(loopback_ip: str) -> None:
    sock = await netguard.open_udp_socket(loopback_ip)
    try:
        with pytest.raises(NetworkRefused) as info:
            await sock.sendto(b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe", ("8.8.8.8", 53))
        assert isinstance(info.value, P2PWatchError)
        # a loopback destination still works
        other = await netguard.open_udp_socket(loopback_ip)
        await sock.sendto(b"hello", other.getsockname())
        with trio.fail_after(5):
            data, _ = await other.recvfrom(100)
        assert data == b"hello"
        other.close()
    finally:
        sock.close()


async def test_tcp_connect_to_public_address_and_names_are_refused() -> None:
    with pytest.raises(NetworkRefused):
        await netguard.open_tcp_stream("93.184.216.34", 80)
    with pytest.raises(NetworkRefused):
        await netguard.open_tcp_stream("example.com", 80)


def test_acceptable_remote() -> None:
    assert netguard.is_acceptable_remote("1.2.3.4", allow_local=False)
    assert not netguard.is_acceptable_remote("127.0.0.2", allow_local=False)
    assert not netguard.is_acceptable_remote("192.168.1.1", allow_local=False)
    assert netguard.is_acceptable_remote("127.0.0.2", allow_local=True)
    assert not netguard.is_acceptable_remote("0.0.0.0", allow_local=True)


def test_cached_verdicts_match_fresh_decisions_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netguard, "MAX_CACHED_VERDICTS", 8)
    policy = netguard.NetworkPolicy.from_specs(["127.0.0.0/8"], refused=["127.9.0.0/16"])
    addresses = [f"127.{a}.0.{b}" for a in (0, 9) for b in range(10)] + ["8.8.8.8", "x", "::ffff:127.0.0.1"]
    for _ in range(2):  # first call decides, second answers from the cache (or after a clear)
        for ip in addresses:
            expected = not ip.startswith(("127.9.", "8.", "x")) and ip != "x"
            assert policy.allows(ip) is expected, ip
            assert policy.allows(ip) is policy._decide(ip)
            assert len(policy._verdicts) <= 8
    # the cache is per policy: another policy decides afresh
    assert not netguard.NetworkPolicy.from_specs(["10.0.0.0/8"]).allows("127.0.0.1")
    assert policy == netguard.NetworkPolicy.from_specs(["127.0.0.0/8"], refused=["127.9.0.0/16"])


def test_loopback_addresses_of_the_tests_are_distinct() -> None:
    """Every node and peer of a test has its own IP (conftest.loopback_address), across the .0 boundary too."""
    from tests.conftest import loopback_address

    seen = [loopback_address() for _ in range(1200)]
    assert len(set(seen)) == len(seen)
    assert all(a.startswith("127.") and not a.endswith(".0") for a in seen)


def test_a_source_address_of_the_other_family_is_not_used() -> None:
    """Dual stack (BEP 32): --bind names an IPv4 source; a connection to an IPv6 peer leaves from the system's
    choice, and a probe's transcript names what was used (netguard.source_address_for)."""
    assert netguard.source_address_for("::1", "127.0.0.5") is None
    assert netguard.source_address_for("127.0.0.9", "::1") is None
    assert netguard.source_address_for("127.0.0.9", "127.0.0.5") == "127.0.0.5"
    assert netguard.source_address_for("::1", None) is None
