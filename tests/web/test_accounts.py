"""Web accounts (issue 14): ``p2pwatch user add|list|disable``, argon2id hashes, sign-in checks, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from p2pwatch.cli import main
from p2pwatch.errors import ConfigError
from p2pwatch.storage.db import default_url, make_engine, writer_sessionmaker
from p2pwatch.storage.models import AuditEntry, User
from p2pwatch.web.accounts import add_user, authenticate, disable_user, load_account

pytest_plugins = ["tests.pg"]
PASSWORD = "correct horse battery"


def run(home: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--home", str(home), *args], input=stdin)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert run(home, "db", "upgrade").exit_code == 0
    return home


def test_user_add_list_disable(home: Path) -> None:
    result = run(home, "user", "add", "kim.jiyoung", "--role", "investigator", "--password-stdin", "--json",
                 stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["role"] == "investigator"
    engine = make_engine(default_url(home))
    try:
        with writer_sessionmaker(engine)() as s:
            stored = s.execute(select(User)).scalar_one()
            assert stored.password_hash.startswith("$argon2id$")
            assert PASSWORD not in stored.password_hash
    finally:
        engine.dispose()
    listed = json.loads(run(home, "user", "list", "--json").stdout)
    assert [(r["user"], r["role"], r["disabled_at"]) for r in listed] == [("kim.jiyoung", "investigator", None)]
    assert "kim.jiyoung" in run(home, "user", "list").stdout
    assert run(home, "user", "disable", "kim.jiyoung").exit_code == 0
    assert json.loads(run(home, "user", "list", "--json").stdout)[0]["disabled_at"] is not None


@pytest.mark.parametrize(("args", "stdin", "code", "needle"), [
    (["user", "add", "a", "--role", "staff", "--password-stdin"], "short\n", 2, "at least 10"),
    (["user", "add", "bad name!", "--role", "staff", "--password-stdin"], PASSWORD + "\n", 2, "not a valid"),
    (["user", "add", "a", "--role", "boss", "--password-stdin"], PASSWORD + "\n", 2, "boss"),
    (["user", "add", "a", "--role", "staff"], "", 2, "--password-stdin"),
    (["user", "disable", "nobody"], None, 2, "no account named 'nobody'"),
])
def test_user_mistakes_are_one_line(home: Path, args: list[str], stdin: str | None, code: int, needle: str) -> None:
    result = run(home, *args, stdin=stdin)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert json.loads(run(home, "user", "list", "--json").stdout) == []


def test_duplicate_account_refused(home: Path) -> None:
    assert run(home, "user", "add", "a", "--role", "staff", "--password-stdin", stdin=PASSWORD).exit_code == 0
    again = run(home, "user", "add", "a", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_authenticate_and_audit(storage_engine: Engine) -> None:
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        user = add_user(s, "park", "staff", PASSWORD)
        uid = user.id
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        assert authenticate(s, "park", "wrong password!", client="127.0.0.1") is None
        assert authenticate(s, "nobody", PASSWORD) is None
        account = authenticate(s, "park", PASSWORD)
        assert account is not None and account.role == "staff"
        assert account.can("register") and not account.can("peers") and not account.can("export")
    with writer_sessionmaker(storage_engine)() as s, s.begin():
        signins = [(e.detail["user"], e.detail["ok"]) for e in
                   s.execute(select(AuditEntry).where(AuditEntry.action == "web.signin")
                             .order_by(AuditEntry.seq)).scalars()]
        assert signins == [("park", False), ("nobody", False), ("park", True)]
        assert s.get(User, uid).last_signin_at is not None  # type: ignore[union-attr]
        disable_user(s, "park")
        assert load_account(s, uid) is None
        assert authenticate(s, "park", PASSWORD) is None
    with writer_sessionmaker(storage_engine)() as s, s.begin(), pytest.raises(ConfigError):
        add_user(s, "park", "staff", PASSWORD)
