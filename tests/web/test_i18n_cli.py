"""Korean and English outside the browser (issue 14): CLI tables and error lines by LANG/--lang, report.html
in the export's language and time zone, the server-drawn SVG timeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from p2pwatch.bundle.report import render_report
from p2pwatch.cli import main
from p2pwatch.web.svgplot import timeline_svg


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--home", str(home), *args], env=env)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert run(home, "db", "upgrade").exit_code == 0
    assert run(home, "case", "create", "2026-041").exit_code == 0
    return home


KOREAN = {"P2PWATCH_LANG": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": "ko_KR.UTF-8"}


def test_lang_environment_and_option(home: Path) -> None:
    korean = run(home, "case", "list", env=KOREAN)
    assert korean.exit_code == 0 and "사건" in korean.stdout and "검색어" in korean.stdout
    english = run(home, "--lang", "en", "case", "list", env=KOREAN)
    assert "keywords" in english.stdout and "검색어" not in english.stdout
    error = run(home, "case", "show", "nope", env=KOREAN)
    assert error.exit_code == 2
    assert error.stderr.strip() == ("p2pwatch: 오류: 'nope'(이)라는 사건이 없습니다 "
                                    "(`p2pwatch case create nope`로 만드십시오)")
    plain = run(home, "case", "show", "nope", env={**KOREAN, "LANG": "C.UTF-8"})
    assert plain.stderr.strip() == "p2pwatch: error: no case named 'nope' (create it with `p2pwatch case create nope`)"
    json_doc = run(home, "case", "list", "--json", env=KOREAN)
    assert '"keywords"' in json_doc.stdout  # JSON stays the same in every language
    bad = run(home, "--lang", "fr", "case", "list")
    assert bad.exit_code == 2 and "--lang" in bad.stderr


def test_report_html_in_korean_with_local_times() -> None:
    doc = {"case": {"name": "2026-041"}, "created_at": "2026-12-07T00:30:00.000000Z",
           "signing_key_fingerprint": "ab" * 32, "observations": {"rows": 3},
           "peers": [{"level": 3, "level_name": "served", "ip": "203.0.113.7", "port": 51413,
                      "first_seen": "2026-12-07T00:30:00.000000Z", "last_seen": "2026-12-07T01:00:00.000000Z"}]}
    ko = render_report(doc, {}, language="ko", time_zone="Asia/Seoul")
    assert '<html lang="ko">' in ko and "증거 단계의 의미" in ko and "3 전송 확인" in ko
    assert "2026-12-07 09:30:00 KST" in ko and "2026-12-07T00:30:00.000000Z" in ko  # local and chain time
    en = render_report(doc, {})
    assert '<html lang="en">' in en and "What the evidence levels mean" in en and "3 served" in en


def test_svg_timeline_escapes_and_handles_no_samples() -> None:
    empty = timeline_svg([], time_zone="Asia/Seoul", title="t", empty_text="nothing <yet>")
    assert "nothing &lt;yet&gt;" in empty and "<polyline" not in empty
    samples = [{"at": "2026-12-07T00:00:00+00:00", "source": "<script>", "dht_peers": 3},
               {"at": "2026-12-07T06:00:00+00:00", "source": "<script>", "dht_peers": 7},
               {"at": "2026-12-07T03:00:00+00:00", "source": "udp://t", "seeders": 1, "leechers": 2}]
    svg = timeline_svg(samples, time_zone="Asia/Seoul", title="peers", empty_text="")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<polyline") == 2 and "2026-12-07 09:00 KST" in svg and "2026-12-07 15:00 KST" in svg


def test_unwatch_command(home: Path) -> None:
    import json

    infohash = "ab" * 20
    assert run(home, "watch", "--case", "2026-041", infohash).exit_code == 0
    assert run(home, "case", "create", "2026-042").exit_code == 0
    assert run(home, "watch", "--case", "2026-042", infohash).exit_code == 0
    first = run(home, "unwatch", "--case", "2026-041", infohash, "--json")
    assert first.exit_code == 0 and json.loads(first.stdout) == [{"infohash": infohash, "monitoring_stopped": False}]
    second = run(home, "unwatch", "--case", "2026-042", infohash, "--json")
    assert json.loads(second.stdout) == [{"infohash": infohash, "monitoring_stopped": True}]
    assert json.loads(run(home, "case", "show", "2026-042", "--json").stdout)["watched"] == []
    unknown = run(home, "unwatch", "--case", "2026-041", "cd" * 20)
    assert unknown.exit_code == 2 and "not in the database" in unknown.stderr


def test_web_refuses_a_database_without_schema(tmp_path: Path) -> None:
    result = run(tmp_path / "fresh", "web", "--bind", "127.0.0.1:1")
    assert result.exit_code != 0 and "db upgrade" in result.stderr and "Traceback" not in result.stderr
