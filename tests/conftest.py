"""Test-wide fixtures: netguard confines every test (and subprocess) to 127.0.0.0/8.

``require_component`` turns a missing real component (opentracker, PostgreSQL, ffmpeg, libtorrent) into a
skip on a developer machine and into a failure when ``CI=true`` (no silent skips in CI).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket

import pytest

os.environ["P2PWATCH_NETGUARD_ALLOW"] = "127.0.0.0/8"

from p2pwatch import netguard

netguard.set_policy(netguard.NetworkPolicy.loopback_only())


def require_component(name: str, available: bool, hint: str = "") -> None:
    """Skip when a real component is missing, but fail under CI=true."""
    if available:
        return
    message = f"{name} is not available{': ' + hint if hint else ''}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI requires {message}")
    pytest.skip(message)


def require_binary(binary: str) -> str:
    path = shutil.which(binary)
    require_component(binary, path is not None, "install it (the README's test command does)")
    assert path is not None
    return path


_address_counter = itertools.count(2)


def loopback_address() -> str:
    """A fresh 127.0.0.x / 127.0.y.x address per caller, so every node and peer has its own IP."""
    n = next(_address_counter) + (os.getpid() % 200) * 256
    return f"127.{(n // 65536) % 250 + 1}.{(n // 256) % 256}.{n % 256 or 1}"


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def loopback_ip() -> str:
    return loopback_address()
