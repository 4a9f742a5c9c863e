"""``p2pwatch web`` over real HTTP on loopback: cookies, CSRF, sign-in limit, roles, audit, SIGTERM (issue 14)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.web.webserver import PASSWORD, Client, cli, prepare_home, running_web


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    prepare_home(home)
    return home


def test_signin_cookies_csrf_and_sigterm(home: Path) -> None:
    with running_web(home, secure=True) as server:
        client = Client(server.url)
        status, _ = client.request("/")
        assert status == 303 and client.last_headers["location"] == "/signin"
        status, body = client.request("/signin")
        assert status == 200 and 'name="username"' in body and 'name="password"' in body
        cookie = client.set_cookies[0].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
        assert server.stop() == 0
    assert "stopped" in server.log.read_text()


def test_csrf_wrong_password_rate_limit_and_audit(home: Path) -> None:
    with running_web(home) as server:
        client = Client(server.url)
        assert client.sign_in("inv", "not the password") == 401
        assert client.sign_in("inv") == 303
        status, body = client.request("/cases")
        assert status == 200 and "inv" in body
        assert client.request("/cases", {"name": "no-token"})[0] == 403
        assert client.request("/cases", {"name": "no-token", "csrf": "forged"})[0] == 403
        token = client.csrf("/cases")
        assert client.request("/cases", {"name": "2026-041", "csrf": token})[0] == 303
        cases = json.loads(cli(home, "case", "list", "--json"))
        assert [c["case"] for c in cases] == ["2026-041"]

        other = Client(server.url)
        codes = [other.sign_in("staff", f"wrong password {i}") for i in range(5)]
        assert codes == [401] * 4 + [429]  # the limit is 5 failures per client address; inv's counted too
        assert other.sign_in("staff") == 429  # even the right password waits out the window
    entries = json.loads(cli(home, "db", "verify", "--json"))
    assert entries  # both chains intact after the web app wrote to them
    from sqlalchemy import select

    from p2pwatch.storage.db import default_url, make_engine, writer_sessionmaker
    from p2pwatch.storage.models import AuditEntry

    engine = make_engine(default_url(home))
    try:
        with writer_sessionmaker(engine)() as s:
            signins = [(e.detail["user"], e.detail["ok"]) for e in s.execute(
                select(AuditEntry).where(AuditEntry.action == "web.signin").order_by(AuditEntry.seq)).scalars()]
            created = [e.actor for e in s.execute(select(AuditEntry).where(AuditEntry.action == "case.create"))
                       .scalars()]
    finally:
        engine.dispose()
    assert signins[:2] == [("inv", False), ("inv", True)]
    assert ("staff", False) in signins and ("staff", True) not in signins
    assert created == ["web:inv"]


def test_roles(home: Path) -> None:
    cli(home, "case", "create", "someone-elses")
    with running_web(home) as server:
        staff = Client(server.url)
        assert staff.sign_in("staff") == 303
        token = staff.csrf("/cases")
        assert staff.request("/cases", {"name": "mine", "csrf": token})[0] == 303
        status, body = staff.request("/cases")
        assert "mine" in body and "someone-elses" not in body
        assert staff.request("/cases/someone-elses")[0] == 404
        assert staff.request("/lookup")[0] == 403
        assert staff.request("/audit")[0] == 403
        assert staff.request("/users")[0] == 403
        assert staff.request("/cases/mine/export", {"csrf": token})[0] == 403
        status, body = staff.request("/cases/mine")
        assert status == 200 and "Export the evidence bundle" not in body

        admin = Client(server.url)
        assert admin.sign_in("admin") == 303
        token = admin.csrf("/users")
        assert admin.request("/users", {"csrf": token, "action": "disable", "username": "admin"})[0] == 303
        assert "cannot disable your own account" in admin.request("/users")[1]
        assert admin.request("/users", {"csrf": token, "action": "disable", "username": "staff"})[0] == 303
        assert staff.request("/cases")[0] == 303  # the disabled account's open session has ended
        assert Client(server.url).sign_in("staff") == 401
        assert admin.request("/users", {"csrf": token, "action": "add", "username": "new.one", "role": "staff",
                                        "password": PASSWORD})[0] == 303
        assert Client(server.url).sign_in("new.one") == 303


def test_accept_language_and_switch(home: Path) -> None:
    with running_web(home) as server:
        client = Client(server.url)
        status, body = client.request("/signin", headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.5"})
        assert status == 200 and '<html lang="ko">' in body and "로그인" in body
        assert client.request("/lang/en?next=/signin")[0] == 303
        _, body = client.request("/signin", headers={"Accept-Language": "ko"})
        assert '<html lang="en">' in body and "Sign in" in body


def test_bad_input_gets_one_clear_answer(home: Path) -> None:
    with running_web(home, extra_env={"P2PWATCH_WEB_MAX_UPLOAD_MB": "1"}) as server:
        client = Client(server.url)
        assert client.sign_in("inv") == 303
        token = client.csrf("/cases")
        assert client.request("/cases", {"name": "c1", "csrf": token})[0] == 303
        assert client.request("/cases", {"name": "c1", "csrf": token})[0] == 303  # a duplicate: flashed, not a 500
        _, body = client.request("/cases")
        assert "already exists" in body
        assert client.request("/cases/nope")[0] == 404
        status, body = client.request("/lookup", {"csrf": token, "target": "not-an-infohash"})
        assert status == 400 and "is not an infohash" in body
        status, body = client.request("/torrents/" + "ab" * 20)
        assert status == 404 and "not in the database" in body

        status, _ = client.upload("/cases/c1/register", {"csrf": token}, {"file": ("empty.bin", b"")})
        assert status == 303
        _, body = client.request("/cases/c1")
        assert "could not be fingerprinted" in body and "Nothing registered yet" in body
        status, body = client.upload("/cases/c1/register", {"csrf": token}, {"file": ("notes.txt", b"x" * 5000)})
        assert status == 200 and hashlib.sha256(b"x" * 5000).hexdigest() in body
        status, body = client.upload("/cases/c1/register", {"csrf": token},
                                     {"file": ("big.bin", b"\0" * (1024 * 1024 + 10))})
        assert status == 413 and "larger than the 1 MB" in body
        assert client.upload("/cases/c1/register", {}, {"file": ("notes.txt", b"y" * 10)})[0] == 403

        status, body = client.upload("/verify", {"csrf": token}, {"bundle": ("garbage.zip", b"PK\3\4 not a zip")})
        assert status == 200 and "NOT VERIFIED" in body

        status, body = client.request("/cases/c1/withdraw")
        assert status == 200 and "What is deleted" in body and "1 registered fingerprints" in body
        assert client.request("/cases/c1/withdraw", {"csrf": token, "confirm_name": "c2"})[0] == 303
        assert json.loads(cli(home, "case", "list", "--json"))[0]["withdrawn_at"] is None
        assert client.request("/cases/c1/withdraw", {"csrf": token, "confirm_name": "c1"})[0] == 303
        case = json.loads(cli(home, "case", "show", "c1", "--json"))
        assert case["withdrawn_at"] is not None and case["contents"] == []
        status, body = client.upload("/cases/c1/register", {"csrf": token}, {"file": ("notes.txt", b"z" * 100)})
        assert status == 409 and "was withdrawn" in body


def test_behind_a_trusted_proxy_the_browser_address_counts(home: Path) -> None:
    with running_web(home, extra_env={"P2PWATCH_WEB_TRUSTED_PROXY_HOPS": "1"}) as server:
        for i in range(5):  # five people behind the proxy each mistype once: nobody is locked out
            client = Client(server.url)
            token = client.csrf("/signin")
            status, _ = client.request("/signin", {"csrf": token, "username": f"user{i}", "password": "nope"},
                                       headers={"X-Forwarded-For": f"198.51.100.{i + 1}"})
            assert status == 401
        client = Client(server.url)
        token = client.csrf("/signin")
        status, _ = client.request("/signin", {"csrf": token, "username": "inv", "password": PASSWORD},
                                   headers={"X-Forwarded-For": "198.51.100.9"})
        assert status == 303
    from sqlalchemy import select

    from p2pwatch.storage.db import default_url, make_engine, writer_sessionmaker
    from p2pwatch.storage.models import AuditEntry

    engine = make_engine(default_url(home))
    try:
        with writer_sessionmaker(engine)() as s:
            clients = [e.detail["client"] for e in s.execute(
                select(AuditEntry).where(AuditEntry.action == "web.signin").order_by(AuditEntry.seq)).scalars()]
    finally:
        engine.dispose()
    assert clients == [f"198.51.100.{i}" for i in (1, 2, 3, 4, 5, 9)]


def test_watch_and_unwatch_from_the_case_page(home: Path) -> None:
    infohash = "ef" * 20
    with running_web(home) as server:
        client = Client(server.url)
        assert client.sign_in("inv") == 303
        token = client.csrf("/cases")
        assert client.request("/cases", {"name": "c1", "csrf": token})[0] == 303
        magnet = f"magnet:?xt=urn:btih:{infohash}&dn=x"
        assert client.request("/cases/c1/watch", {"csrf": token, "target": magnet})[0] == 303
        _, body = client.request("/cases/c1")
        assert f"Watching {infohash}" in body and f'href="/torrents/{infohash}"' in body
        assert [w["infohash"] for w in json.loads(cli(home, "case", "show", "c1", "--json"))["watched"]] == [infohash]
        assert client.request("/cases/c1/watch", {"csrf": token, "target": "/etc/passwd"})[0] == 303
        assert "is not an infohash" in client.request("/cases/c1")[1]  # never a path on the server
        status, body = client.request(f"/torrents/{infohash}")
        assert status == 200 and "No swarm samples recorded yet." in body and "unknown" in body
        assert client.request("/cases/c1/unwatch", {"csrf": token, "target": infohash})[0] == 303
        assert json.loads(cli(home, "case", "show", "c1", "--json"))["watched"] == []
        staff = Client(server.url)
        assert staff.sign_in("staff") == 303
        assert staff.request("/cases/c1/watch", {"csrf": staff.csrf("/cases"), "target": infohash})[0] == 403
