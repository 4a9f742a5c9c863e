"""``p2pwatch web``: serve the app with Hypercorn's trio worker until SIGTERM or SIGINT (issue 14).

On the signal Hypercorn stops accepting, lets requests in flight finish (``graceful_timeout``) and returns;
then the database engine is disposed. Plain HTTP on loopback; TLS belongs to a reverse proxy (README).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from p2pwatch.config import MonitorConfig
from p2pwatch.storage.db import open_database
from p2pwatch.torrent.compact import format_addr

GRACEFUL_SECONDS = 5.0


def serve(obj: dict[str, Any], config: MonitorConfig, host: str, port: int,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Blocking: serve until SIGTERM/SIGINT, then return cleanly."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    from p2pwatch.web.routes import build_app

    engine = open_database(obj)
    app: Any = build_app(config, engine, Path(str(obj["home"])), obj)
    if config.web.trusted_proxy_hops > 0:
        from hypercorn.middleware import ProxyFixMiddleware

        app = ProxyFixMiddleware(app, mode="legacy", trusted_hops=config.web.trusted_proxy_hops)
    settings = Config()
    settings.bind = [format_addr((host, port))]
    settings.graceful_timeout = GRACEFUL_SECONDS
    settings.accesslog = None
    settings.errorlog = "-"
    settings.include_server_header = False
    settings.server_names = []

    async def run() -> None:
        stop = trio.Event()

        async def on_signal(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    stop.set()
                    return

        async with trio.open_nursery() as nursery:
            await nursery.start(on_signal)
            if on_ready is not None:
                on_ready(f"http://{format_addr((host, port))}/")
            await hypercorn_serve(app, settings, shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    finally:
        engine.dispose()
