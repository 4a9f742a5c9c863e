"""Every investigator command, with good input and with the mistakes people make.

A mistake prints one line on stderr naming the problem and the fix, exits 2 (usage) or 1 (failure),
never shows a traceback, and writes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from p2pwatch.cli import main
from p2pwatch.storage.db import default_url, downgrade_database, make_engine, writer_sessionmaker
from p2pwatch.storage.models import AuditEntry, Content, Keyword


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--home", str(home), *args])


def one_line_error(result: Result, code: int, needle: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert run(home, "db", "upgrade").exit_code == 0
    assert run(home, "case", "create", "c1").exit_code == 0
    return home


def count(home: Path, model: type) -> int:
    engine = make_engine(default_url(home))
    try:
        with writer_sessionmaker(engine)() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


def test_case_lifecycle(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "f.bin"
    data.write_bytes(os.urandom(50_000))
    result = run(home, "register", "--case", "c1", str(data), "--keyword", "Kim Jiyoung", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["contents"][0]["new"] and doc["keywords_added"] == 1
    again = json.loads(run(home, "register", "--case", "c1", str(data), "--json").stdout)
    assert again["contents"][0]["new"] is False
    listed = json.loads(run(home, "case", "list", "--json").stdout)
    assert [(c["case"], c["contents"], c["keywords"]) for c in listed] == [("c1", 1, 1)]
    shown = json.loads(run(home, "case", "show", "c1", "--json").stdout)
    assert shown["contents"][0]["fingerprint_id"] == doc["contents"][0]["fingerprint_id"]
    assert "f.bin" not in json.dumps(shown)  # names are not kept unless --label
    watched = json.loads(run(home, "watch", "--case", "c1", "a" * 40, "--json").stdout)
    assert watched == [{"infohash": "a" * 40, "name": None}]
    assert json.loads(run(home, "matches", "--json").stdout) == []
    assert json.loads(run(home, "matches", "--case", "c1", "--json").stdout) == []
    result = run(home, "case", "withdraw", "c1", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"case": "c1", "fingerprints_deleted": 1, "keywords_deleted": 1,
                                         "torrents_unwatched": 1}
    assert count(home, Content) == 0 and count(home, Keyword) == 0
    engine = make_engine(default_url(home))
    with writer_sessionmaker(engine)() as s:
        actions = list(s.execute(select(AuditEntry.action).order_by(AuditEntry.seq)).scalars())
    engine.dispose()
    assert actions[-1] == "case.withdraw" and "content.register" in actions
    one_line_error(run(home, "register", "--case", "c1", str(data)), 2, "withdrawn")


def test_unknown_case(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "f.bin"
    data.write_bytes(b"x" * 1000)
    for args in (["register", "--case", "nope", str(data)], ["watch", "--case", "nope", "a" * 40],
                 ["case", "show", "nope"], ["case", "withdraw", "nope"], ["matches", "--case", "nope"],
                 ["export", "--case", "nope", "-o", str(tmp_path / "b.zip")]):
        one_line_error(run(home, *args), 2, "no case named 'nope'")
    assert count(home, Content) == 0


@pytest.mark.parametrize("bad", ["xyz", "0" * 39, "magnet:?dn=x", "magnet:?xt=urn:btih:zz", "g" * 40])
def test_malformed_infohash_or_magnet(home: Path, bad: str) -> None:
    for args in (["watch", "--case", "c1", bad], ["peers", bad], ["timeline", bad],
                 ["lookup", bad, "--bootstrap", "127.0.0.1:1", "--allow-local"]):
        result = run(home, *args)
        one_line_error(result, 2, "")
        assert "infohash" in result.stderr or "magnet" in result.stderr or "torrent" in result.stderr


def test_unreadable_and_wrong_files_write_nothing(home: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(os.urandom(10_000))
    one_line_error(run(home, "register", "--case", "c1", str(good), str(tmp_path / "missing.bin")), 2, "no such file")
    unreadable = tmp_path / "secret.bin"
    unreadable.write_bytes(b"x" * 100)
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads anything; the directory case below covers root
        one_line_error(run(home, "register", "--case", "c1", str(good), str(unreadable)), 1, "secret.bin")
    one_line_error(run(home, "register", "--case", "c1", str(good), str(tmp_path)), 1, "")
    assert count(home, Content) == 0  # the good file was not registered either
    torrent = tmp_path / "bad.torrent"
    torrent.write_bytes(b"d4:infod4:name3:abcee")
    one_line_error(run(home, "watch", "--case", "c1", str(torrent)), 2, "not a valid .torrent")
    one_line_error(run(home, "verify", str(tmp_path / "missing.zip")), 2, "")


def test_peers_and_timeline_of_unknown_torrent(home: Path) -> None:
    one_line_error(run(home, "peers", "b" * 40), 2, "not in the database")
    one_line_error(run(home, "timeline", "b" * 40), 2, "not in the database")


def test_export_needs_a_key_and_torrents(home: Path, tmp_path: Path) -> None:
    one_line_error(run(home, "export", "--case", "c1", "-o", str(tmp_path / "b.zip")), 2, "no torrent")
    assert not (tmp_path / "b.zip").exists()


def test_stale_or_missing_schema(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    one_line_error(run(fresh, "case", "list"), 1, "p2pwatch db upgrade")
    assert not (fresh / "p2pwatch.db").exists()  # nothing created just to find it empty
    home = tmp_path / "stale"
    assert run(home, "db", "upgrade").exit_code == 0
    engine = make_engine(default_url(home))
    downgrade_database(engine, "base")
    engine.dispose()
    for args in (["case", "create", "x"], ["matches"], ["monitor", "--duration", "1", "--bootstrap", "127.0.0.1:1"]):
        one_line_error(run(home, *args), 1, "p2pwatch db upgrade")


def test_bad_config_file(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text("[dht]\nprot = 1\n")
    one_line_error(run(home, "--config", str(config), "monitor", "--duration", "1"), 2, "dht.prot")


def test_usage_errors_are_exit_2(home: Path) -> None:
    result = run(home, "peers", "a" * 40, "--min-level", "9")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    result = run(home, "nosuchcommand")
    assert result.exit_code == 2
