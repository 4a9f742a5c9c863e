"""Alerts: a new confirmed match, or a dormant/gone swarm that revives.

Every alert is a log line; optionally also a JSON POST to a webhook (through netguard) and/or a command
run with the alert JSON on stdin. A failing hook is logged and never stops the monitor.
"""

from __future__ import annotations

import json
import logging
import shlex
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import trio

from p2pwatch import netguard

log = logging.getLogger("p2pwatch.monitor.alerts")


class Alerter:
    def __init__(self, webhook: str = "", command: str = "", timeout: float = 10.0) -> None:
        self.webhook = webhook
        self.command = command
        self.timeout = timeout
        self.sent: list[dict[str, Any]] = []

    async def emit(self, kind: str, **detail: Any) -> None:
        event = {"alert": kind, "at": datetime.now(UTC).isoformat(timespec="seconds"), **detail}
        self.sent.append(event)
        log.warning("ALERT %s %s", kind, json.dumps(detail, sort_keys=True, default=str))
        body = json.dumps(event, default=str).encode()
        with trio.move_on_after(self.timeout):
            if self.webhook:
                try:
                    await post_json(self.webhook, body)
                except (OSError, netguard.NetworkRefused, ValueError) as exc:
                    log.warning("alert webhook %s failed: %s", self.webhook, exc)
            if self.command:
                try:
                    await trio.run_process(shlex.split(self.command), stdin=body, check=False)
                except OSError as exc:
                    log.warning("alert command failed: %s", exc)


async def post_json(url: str, body: bytes) -> int:
    """POST ``body`` as JSON to an ``http://IP:PORT/path`` URL; returns the status code."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"webhook must be an http://IP:PORT/... URL, not {url!r}")
    stream = await netguard.open_tcp_stream(parts.hostname, parts.port or 80)
    async with stream:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        await stream.send_all(head + body)
        reply = await stream.receive_some(4096)
    try:
        return int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise ValueError("webhook sent no HTTP status line") from None
