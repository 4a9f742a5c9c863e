"""The HTTP client's errors name a tracker at an IPv6 literal as ``[ip]:port`` (endpoints.format_addr)."""

from __future__ import annotations

import socket

import pytest
import trio

from p2pwatch.errors import TrackerUnreachable
from p2pwatch.probe.http_client import http_get
from tests.conftest import loopback_address, require_ipv6_loopback


def _closed_port(family: socket.AddressFamily, ip: str) -> int:
    with socket.socket(family) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_ipv6_tracker_is_named_in_brackets() -> None:
    require_ipv6_loopback()
    port = _closed_port(socket.AF_INET6, "::1")
    with trio.fail_after(10), pytest.raises(TrackerUnreachable) as info:
        await http_get(f"http://[::1]:{port}/announce")
    assert str(info.value).startswith(f"cannot connect to tracker [::1]:{port}: ")


async def test_an_unreachable_ipv4_tracker_is_named_without_brackets() -> None:
    ip = loopback_address()
    port = _closed_port(socket.AF_INET, ip)
    with trio.fail_after(10), pytest.raises(TrackerUnreachable) as info:
        await http_get(f"http://{ip}:{port}/announce")
    assert str(info.value).startswith(f"cannot connect to tracker {ip}:{port}: ")
