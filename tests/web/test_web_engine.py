"""The web app keeps one database engine (issue 14 follow-up, branch cleanup-b): every request and every lookup
runs on the engine the app was built with, and the app's shutdown (ASGI lifespan) disposes of it.

The app is driven in-process through ASGI (sign-in, two lookups, their pages); the lookup's network part
(``p2pwatch.cli.lookup.lookup``, ``node_config``) is replaced by an outcome with no peers, so nothing leaves
the process, while the registry read and the ``--record`` writes run for real. Engines are counted by
wrapping ``create_engine`` where p2pwatch.storage.db calls it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from sqlalchemy import func, select

from p2pwatch.cli import lookup as cli_lookup
from p2pwatch.config import load_config
from p2pwatch.investigate.examine import Examination
from p2pwatch.investigate.lookup import LookupOutcome
from p2pwatch.storage import db
from p2pwatch.storage.models import Torrent
from p2pwatch.web.routes import build_app
from p2pwatch.web.security import COOKIE
from tests.web.webserver import CSRF, PASSWORD, prepare_home


class AsgiClient:
    """Requests straight into an ASGI app, keeping the session cookie."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        body = urlencode(form).encode() if form is not None else b""
        headers = [(b"host", b"127.0.0.1")]
        if self.cookies:
            headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()))
        if form is not None:
            headers += [(b"content-type", b"application/x-www-form-urlencoded"),
                        (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80)}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status, location, chunks = 0, "", []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message["headers"]:
                    if name == b"set-cookie":
                        key, _, rest = value.decode().partition("=")
                        self.cookies[key] = rest.split(";", 1)[0]
                    elif name == b"location":
                        location = value.decode()
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, location, b"".join(chunks).decode()

    async def csrf(self, path: str) -> str:
        status, _, body = await self.request("GET", path)
        assert status == 200, (path, status)
        match = CSRF.search(body)
        assert match, body[:300]
        return match.group(1)



def test_two_web_lookups_create_one_engine_disposed_at_shutdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    home = tmp_path / "home"
    prepare_home(home)
    created: list[Any] = []
    real_create = db.create_engine

    def counting(*args: Any, **kwargs: Any) -> Any:
        engine = real_create(*args, **kwargs)
        created.append(engine)
        return engine

    monkeypatch.setattr(db, "create_engine", counting)
    lookups: list[bytes] = []

    async def no_network_node(net: Any, home: Path, *args: Any) -> None:
        return None

    async def quiet_lookup(dht_id: bytes, **kwargs: Any) -> LookupOutcome:
        assert kwargs["index"] is not None  # the registry was read, on the app's engine
        lookups.append(dht_id)
        now = datetime.now(UTC)
        return LookupOutcome(dht_id, Examination(dht_id, started_at=now, finished_at=now))

    monkeypatch.setattr(cli_lookup, "node_config", no_network_node)
    monkeypatch.setattr(cli_lookup, "lookup", quiet_lookup)

    obj = {"home": home}
    engine = db.open_database(obj)
    app = build_app(load_config(None), engine, home, obj)
    disposed: list[bool] = []
    real_dispose = engine.dispose
    monkeypatch.setattr(engine, "dispose", lambda *a, **k: (disposed.append(True), real_dispose(*a, **k))[1])
    targets = ["aa" * 20, "bb" * 20]

    async def main() -> None:
        client = AsgiClient(app)
        token = await client.csrf("/signin")
        status, _, _ = await client.request("POST", "/signin", {"csrf": token, "username": "inv",
                                                                "password": PASSWORD, "next": ""})
        assert status == 303 and COOKIE in client.cookies
        for target in targets:
            token = await client.csrf("/lookup")
            status, location, _ = await client.request("POST", "/lookup", {"csrf": token, "target": target})
            assert status == 303 and re.fullmatch(r"/lookup/[\w-]+", location), (status, location)
            job = app.state.web.jobs[location.rsplit("/", 1)[1]]
            with trio.fail_after(60):
                assert await trio.to_thread.run_sync(job.finished.wait, 60)
            assert job.error is None and job.doc is not None, job.error
            assert job.doc["recorded_observations"] == 0
            status, _, body = await client.request("GET", location)
            assert status == 200 and target in body

        # the app's shutdown: the ASGI lifespan disposes of the engine
        events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return events.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    trio.run(main)
    assert lookups == [bytes.fromhex(t) for t in targets]
    assert created == [engine]  # one engine: the app's; the lookups and their records made none
    assert disposed  # by the lifespan's shutdown
    with db.session_factory(engine)() as session:  # both lookups were recorded through it
        assert session.scalar(select(func.count()).select_from(Torrent)) == 2
