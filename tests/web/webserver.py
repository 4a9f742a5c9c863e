"""Start ``p2pwatch web`` as a real process on a loopback port for the HTTP and browser tests."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from p2pwatch.cli import main
from tests.conftest import free_port

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def cli(home: Path, *args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(main, ["--home", str(home), *args], input=stdin)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


def prepare_home(home: Path) -> None:
    """Schema, signing key, and one account per role (admin, inv, staff) with PASSWORD."""
    cli(home, "db", "upgrade")
    cli(home, "keys", "generate")
    for name, role in (("admin", "admin"), ("inv", "investigator"), ("staff", "staff")):
        cli(home, "user", "add", name, "--role", role, "--password-stdin", stdin=PASSWORD + "\n")


@dataclass
class WebServer:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return int(self.process.returncode)


@contextmanager
def running_web(home: Path, *, config: Path | None = None, secure: bool = False,
                extra_env: dict[str, str] | None = None) -> Iterator[WebServer]:
    port = free_port("127.0.0.1", socket.SOCK_STREAM)
    log = home.parent / f"web-{port}.log"
    args = [sys.executable, "-m", "p2pwatch", "--home", str(home)]
    if config is not None:
        args += ["--config", str(config)]
    args += ["web", "--bind", f"127.0.0.1:{port}"] + ([] if secure else ["--insecure-cookies"])
    env = {**os.environ, **(extra_env or {})}
    with open(log, "w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                                   cwd=str(Path(__file__).resolve().parents[2]))
    server = WebServer(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"p2pwatch web did not start: {log.read_text()}") from None
                time.sleep(0.2)
        yield server
    finally:
        server.stop()


class Client:
    """A cookie-keeping HTTP client that does not follow redirects (urllib, standard library)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)
        self.last_headers: dict[str, str] = {}

    def request(self, path: str, data: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as response:
                self.last_headers = dict(response.headers.items())
                self.set_cookies = response.headers.get_all("set-cookie") or []
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            self.last_headers = dict(exc.headers.items())
            self.set_cookies = exc.headers.get_all("set-cookie") or []
            return exc.code, exc.read().decode()

    def upload(self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[int, str]:
        """POST multipart/form-data (RFC 7578)."""
        boundary = "p2pwatch-test-boundary-7f3a"
        parts = []
        for name, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                         .encode())
        for name, (filename, data) in files.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                         "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.base + path, data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with self.opener.open(req, timeout=60) as response:
                self.last_headers = dict(response.headers.items())
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            self.last_headers = dict(exc.headers.items())
            return exc.code, exc.read().decode()

    def csrf(self, path: str) -> str:
        status, body = self.request(path)
        assert status == 200, (path, status)
        match = CSRF.search(body)
        assert match, body[:500]
        return match.group(1)

    def sign_in(self, name: str, password: str = PASSWORD) -> int:
        token = self.csrf("/signin")
        status, _ = self.request("/signin", {"csrf": token, "username": name, "password": password, "next": ""})
        return status
