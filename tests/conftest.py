"""Test-wide fixtures: netguard confines every test (and subprocess) to 127.0.0.0/8.

``require_component`` turns a missing real component (opentracker, PostgreSQL, ffmpeg, libtorrent) into a
skip on a developer machine and into a failure when ``CI=true`` (no silent skips in CI). Under ``CI=true`` the
hooks below also turn any other skip (``skipif``, ``importorskip``, a skip at collection) into a failure.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket

import pytest

os.environ["P2PWATCH_NETGUARD_ALLOW"] = "127.0.0.0/8,::1/128"
os.environ.setdefault("P2PWATCH_LANG", "en")  # tests read English messages whatever the developer's LANG

from p2pwatch import netguard

netguard.set_policy(netguard.NetworkPolicy.loopback_only())


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_component(name: str, available: bool, hint: str = "") -> None:
    """Skip when a real component is missing, but fail under CI=true."""
    if available:
        return
    message = f"{name} is not available{': ' + hint if hint else ''}"
    if in_ci():
        pytest.fail(f"CI requires {message}")
    pytest.skip(message)  # a developer machine without the component; CI never gets here


def require_ipv6_loopback() -> None:
    """The IPv6 tests need ::1 (BEP 32 nodes and libtorrent sessions bind there): probed by binding a socket,
    so a machine without iproute2 gets this message rather than a FileNotFoundError."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        available = True
    except OSError:
        available = False
    require_component("IPv6 loopback ::1", available, "enable IPv6 on lo (sysctl net.ipv6.conf.lo.disable_ipv6=0)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI=true a skipped test is a failed test, whatever skipped it."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must run every test: {report.longrepr}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skip at collection (a whole module) fails the run too."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if in_ci() and skipped and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def require_binary(binary: str) -> str:
    path = shutil.which(binary)
    require_component(binary, path is not None, "install it (the README's test command does)")
    assert path is not None
    return path


_address_counter = itertools.count(2)


def loopback_address() -> str:
    """A fresh 127.0.0.x / 127.0.y.x address per caller, so every node and peer has its own IP."""
    n = next(_address_counter) + (os.getpid() % 200) * 256
    while n % 256 == 0:  # x.y.z.0 is skipped, not mapped to .1: that gave two callers one address
        n = next(_address_counter) + (os.getpid() % 200) * 256
    return f"127.{(n // 65536) % 250 + 1}.{(n // 256) % 256}.{n % 256}"


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def loopback_ip() -> str:
    return loopback_address()
