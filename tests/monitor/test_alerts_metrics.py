"""Alerts (log, webhook, command hook), swarm status, and the metrics endpoint."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from p2pwatch.errors import NetworkRefused
from p2pwatch.investigate.swarmstatus import SwarmStatus, is_revival, swarm_status
from p2pwatch.monitor.alerts import Alerter, post_json
from p2pwatch.monitor.metrics import Metrics, series, serve_metrics
from tests.conftest import loopback_address


async def _http_server(host: str, received: list[bytes], task_status: trio.TaskStatus[int]) -> None:
    listeners = await trio.open_tcp_listeners(0, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                     .split(b":")[1])
        while len(body) < length:
            body += await stream.receive_some(4096)
        received.append(body)
        await stream.send_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    await trio.serve_listeners(handle, listeners)


async def test_alert_reaches_webhook_and_command(tmp_path: Path) -> None:
    ip = loopback_address()
    received: list[bytes] = []
    out = tmp_path / "hook.json"
    command = f"{sys.executable} -c \"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())\""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_http_server, ip, received)
        alerter = Alerter(webhook=f"http://{ip}:{port}/hook", command=command)
        with trio.fail_after(20):
            await alerter.emit("new-match", case="c1", infohash="ab" * 20, method="exact-piece")
        nursery.cancel_scope.cancel()
    assert json.loads(received[0])["alert"] == "new-match"
    assert json.loads(out.read_bytes())["infohash"] == "ab" * 20


async def test_failing_hooks_never_raise() -> None:
    alerter = Alerter(webhook="http://8.8.8.8:80/x", command="/nonexistent/binary", timeout=2)
    await alerter.emit("swarm-revived", infohash="cd" * 20)  # refused by netguard, command missing: logged only
    assert alerter.sent[0]["alert"] == "swarm-revived"
    with pytest.raises(NetworkRefused):
        await post_json("http://8.8.8.8:80/x", b"{}")


def test_swarm_status_and_revival() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    kw = {"dormant_after": 3600.0, "gone_after": 86400.0}
    assert swarm_status(None, now, **kw) is SwarmStatus.UNKNOWN
    assert swarm_status(now - timedelta(minutes=5), now, **kw) is SwarmStatus.ALIVE
    assert swarm_status(now - timedelta(hours=3), now, **kw) is SwarmStatus.DORMANT
    assert swarm_status(now - timedelta(days=3), now, **kw) is SwarmStatus.GONE
    assert is_revival(SwarmStatus.GONE, SwarmStatus.ALIVE)
    assert not is_revival(SwarmStatus.ALIVE, SwarmStatus.ALIVE)
    assert not is_revival(SwarmStatus.UNKNOWN, SwarmStatus.ALIVE)


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    metrics = Metrics()
    metrics.counters["p2pwatch_matches_total"] = 3
    metrics.by_level[3] = 7
    metrics.gauges["p2pwatch_dht_nodes"] = lambda: 42.0
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, metrics, 0)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
        nursery.cancel_scope.cancel()
    text = data.decode()
    assert text.startswith("HTTP/1.1 200 OK")
    assert "p2pwatch_matches_total 3" in text
    assert 'p2pwatch_observations_total{level="3"} 7' in text
    assert "p2pwatch_dht_nodes 42.0" in text


def test_labelled_series_share_one_help_and_type_line() -> None:
    metrics = Metrics()
    metrics.counters[series("p2pwatch_dht_family_timeouts_total", family="ipv4")] = 2
    metrics.counters[series("p2pwatch_dht_family_timeouts_total", family="ipv6")] = 5
    text = metrics.render()
    assert text.count("# TYPE p2pwatch_dht_family_timeouts_total counter") == 1
    assert text.count("# HELP p2pwatch_dht_family_timeouts_total ") == 1
    assert 'p2pwatch_dht_family_timeouts_total{family="ipv4"} 2' in text
    assert 'p2pwatch_dht_family_timeouts_total{family="ipv6"} 5' in text
    assert text.index("# TYPE p2pwatch_dht_family_timeouts_total") < text.index('{family="ipv4"}')
