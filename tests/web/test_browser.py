"""The web app in a real browser (issue 14): Playwright for Python driving Debian's chromium, never a browser
download. One investigator's morning on the loopback demo swarm, then what a staff account may not do.

Sign in (a wrong password refused first), create a case, register a generated video (hashed on the server,
the upload deleted), register the demo swarm's video, look up the demo swarm's exact copy and see its match
appear, open the torrent page with its plot and peers, export and download a bundle that
``python -m evidence verify`` accepts, switch to Korean; a form post without the CSRF token is refused; a
staff account cannot see peer addresses or export. With ``P2PWATCH_SCREENS=DIR`` the main pages are
photographed in both languages into DIR (outside the repository).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pwatch.match.media import ffmpeg_available, ffmpeg_exe
from tests.conftest import require_component
from tests.web.webserver import PASSWORD, cli, prepare_home, running_web

try:
    import libtorrent as lt
except ImportError:  # pragma: no cover
    lt = None

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

pytestmark = [pytest.mark.interop, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PREFIX = "127.0.46"
CASE = "2026-041"


def _require() -> None:
    require_component("playwright", sync_playwright is not None, "pip install playwright (never `playwright install`)")
    require_component("chromium", Path(CHROMIUM).exists(), "apt-get install chromium")
    require_component("libtorrent", lt is not None)
    require_component("ffmpeg", ffmpeg_available(), "pip install imageio-ffmpeg")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _require()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def shoot(page: Page, name: str) -> None:
    folder = os.environ.get("P2PWATCH_SCREENS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def sign_in(page: Page, base: str, name: str, password: str = PASSWORD) -> None:
    page.goto(base + "/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def generated_video(folder: Path) -> Path:
    out = folder / "testsrc2.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=10:duration=3", "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def web_config(path: Path, bootstrap: list[str]) -> Path:
    path.write_text("\n".join([
        'time_zone = "Asia/Seoul"',
        "[dht]", f'bind = "{PREFIX}.100"', f"bootstrap = {json.dumps(bootstrap)}", "allow_local = true",
        "query_timeout = 2.0",
        "[probe]", 'encryption = "off"', "connect_timeout = 3.0", "metadata_timeout = 10.0", "piece_timeout = 15.0",
        "[matcher]", "fetch_timeout = 60.0",
        "[web]", "lookup_timeout = 90.0", "secure_cookies = false", ""]))
    return path


def test_investigator_and_staff_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    from p2pwatch.testswarm.demoswarm import DemoContent, start_demo_swarm, stop_demo_swarm

    home = tmp_path / "home"
    prepare_home(home)
    content = DemoContent.generate(tmp_path / "content")
    video = generated_video(tmp_path)
    uploads_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "p2pwatch-upload-*")))
    demo = start_demo_swarm(content, prefix=PREFIX)
    try:
        exact = next(t for t in demo.torrents if t.label == "exact")
        config = web_config(tmp_path / "web.toml", demo.bootstrap)
        with running_web(home, config=config) as server:
            _investigator(browser, server.url, home, tmp_path, video, content.registered, exact.infohash)
            _staff(browser, server.url, exact.infohash)
            _admin(browser, server.url, tmp_path / "downloaded.zip")
    finally:
        stop_demo_swarm(demo)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "p2pwatch-upload-*"))) == uploads_before
    audit = _audit_actions(home)
    assert {"web.signin", "case.create", "content.register", "web.lookup", "web.peers.view", "export",
            "case.grant"} <= {a for a, _ in audit}
    assert ("export", "web:inv") in audit and ("web.peers.view", "web:inv") in audit
    assert ("web.peers.view", "web:staff") not in audit
    assert json.loads(cli(home, "db", "verify", "--json"))  # both chains still verify


def _audit_actions(home: Path) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from p2pwatch.storage.db import default_url, make_engine, writer_sessionmaker
    from p2pwatch.storage.models import AuditEntry

    engine = make_engine(default_url(home))
    try:
        with writer_sessionmaker(engine)() as s:
            return [(e.action, e.actor) for e in s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()]
    finally:
        engine.dispose()


def _investigator(browser: Browser, base: str, home: Path, tmp_path: Path, video: Path, demo_video: Path,
                  infohash: str) -> None:
    context = browser.new_context(accept_downloads=True, locale="en-US", extra_http_headers={"Accept-Language": "en"})
    page = context.new_page()
    page.goto(base + "/")
    assert page.url.endswith("/signin")
    expect(page.locator("input[name=username]")).to_be_visible()
    shoot(page, "en-01-signin")
    sign_in(page, base, "inv", "not the password")
    expect(page.locator("[role=alert]")).to_contain_text("Wrong account name or password")
    assert page.url.split("?")[0].endswith("/signin")
    sign_in(page, base, "inv")
    expect(page.locator("h1")).to_have_text("Cases")

    # a form post without the CSRF token is refused (the browser's own cookies go with it)
    refused = page.request.post(base + "/cases", form={"name": "forged"})
    assert refused.status == 403
    page.fill("#name", CASE)
    page.click("text=Create case")
    expect(page.locator("h1")).to_have_text(f"Case {CASE}")

    page.set_input_files("#file", str(video))
    page.click("button:has-text('Register')")
    summary = page.locator("section.fingerprint").first
    expect(summary).to_contain_text(hashlib.sha256(video.read_bytes()).hexdigest())
    expect(summary).to_contain_text("Perceptual frame hashes")
    assert page.locator("img, video, canvas").count() == 0  # never a frame or thumbnail
    shoot(page, "en-03-registered")
    page.goto(base + f"/cases/{CASE}")
    page.set_input_files("#file", str(demo_video))
    page.click("button:has-text('Register')")
    expect(page.locator("section.fingerprint").first).to_contain_text(
        hashlib.sha256(demo_video.read_bytes()).hexdigest())
    page.goto(base + "/cases")
    shoot(page, "en-02-cases")

    page.goto(base + "/lookup")
    page.fill("#target", infohash)
    page.click("button:has-text('Look up')")
    assert re.search(r"/lookup/[\w-]+$", page.url)
    shoot(page, "en-04-lookup-running")
    expect(page.locator("#lookup-done")).to_be_visible(timeout=150_000)  # the page refreshes itself until done
    expect(page.locator(".match").first).to_contain_text(f"Match for case {CASE}")
    shoot(page, "en-05-lookup-done")

    page.goto(base + "/lookup")  # a second look adds a second swarm sample: the plot draws a line
    page.fill("#target", infohash)
    page.click("button:has-text('Look up')")
    expect(page.locator("#lookup-done")).to_be_visible(timeout=150_000)

    page.goto(base + f"/cases/{CASE}/matches")
    row = page.locator("tr.match").first
    expect(row).to_contain_text("exact-metadata")
    expect(row).to_contain_text(infohash[:16])
    shoot(page, "en-06-matches")

    page.click(f"a[href='/torrents/{infohash}']")
    expect(page.locator("svg.plot")).to_be_visible()
    assert page.locator("svg.plot polyline").count() >= 1
    assert page.locator("svg.plot circle").count() >= 2
    expect(page.locator("#swarm-status")).to_have_text("alive")
    expect(page.locator("td.peer-address").first).to_be_visible()
    expect(page.locator("tr.lvl3 td.peer-address").first).to_be_visible()
    shoot(page, "en-07-torrent")

    page.goto(base + f"/cases/{CASE}")
    page.fill("#member", "staff")
    page.click("button:has-text('Give access')")
    expect(page.locator(".flash.ok")).to_contain_text("staff can now open case")
    shoot(page, "en-08-case")
    with page.expect_download() as info:
        page.click("#export")
    bundle = tmp_path / "downloaded.zip"
    info.value.save_as(bundle)
    verdict = subprocess.run([sys.executable, "-m", "evidence", "verify", str(bundle)], capture_output=True,
                             text=True, cwd=str(Path(__file__).resolve().parents[2]))
    assert verdict.returncode == 0, verdict.stdout[-2000:]
    _check_report(bundle, "en")

    page.goto(base + "/verify")
    page.set_input_files("#bundle", str(bundle))
    page.click("button:has-text('Verify')")
    expect(page.locator("#verdict")).to_contain_text("VERIFIED")
    shoot(page, "en-09-verify")
    page.goto(base + "/audit")
    expect(page.locator("table")).to_contain_text("web.peers.view")
    shoot(page, "en-10-audit")
    page.goto(base + f"/cases/{CASE}/withdraw")
    expect(page.locator("main")).to_contain_text("What is deleted")
    shoot(page, "en-11-withdraw")

    page.click("a[lang=ko]")
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.locator("main")).to_contain_text("삭제되는 것")
    shoot(page, "ko-11-withdraw")
    for path, name in (("/cases", "ko-02-cases"), (f"/cases/{CASE}", "ko-08-case"),
                       (f"/cases/{CASE}/matches", "ko-06-matches"), (f"/torrents/{infohash}", "ko-07-torrent"),
                       ("/lookup", "ko-04-lookup"), ("/audit", "ko-10-audit")):
        page.goto(base + path)
        expect(page.locator("header nav")).to_contain_text("사건")
        shoot(page, name)
    expect(page.locator("h1")).to_have_text("감사 기록")
    page.goto(base + f"/torrents/{infohash}")
    expect(page.locator("#swarm-status")).to_have_text("활동")
    with page.expect_download() as info:
        page.goto(base + f"/cases/{CASE}")
        page.click("#export")
    korean = tmp_path / "korean.zip"
    info.value.save_as(korean)
    _check_report(korean, "ko")
    page.click("text=로그아웃")
    shoot(page, "ko-01-signin")
    context.close()


def _check_report(bundle: Path, language: str) -> None:
    import zipfile

    with zipfile.ZipFile(bundle) as z:
        html = z.read("report.html").decode()
    assert f'<html lang="{language}">' in html
    if language == "ko":
        assert "증거 단계의 의미" in html and "KST" in html
    else:
        assert "What the evidence levels mean" in html


def _staff(browser: Browser, base: str, infohash: str) -> None:
    context = browser.new_context(locale="en-US", extra_http_headers={"Accept-Language": "en"})
    page = context.new_page()
    sign_in(page, base, "staff")
    expect(page.locator("h1")).to_have_text("Cases")
    expect(page.locator("main")).to_contain_text(CASE)  # the investigator gave access
    page.goto(base + f"/torrents/{infohash}")
    expect(page.locator("#no-peer-addresses")).to_be_visible()
    assert page.locator("td.peer-address").count() == 0
    body = page.content()
    assert PREFIX not in body  # no demo-swarm address anywhere on the page
    shoot(page, "en-12-torrent-as-staff")
    page.goto(base + f"/cases/{CASE}")
    assert page.locator("#export").count() == 0
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    export: Any = page.request.post(base + f"/cases/{CASE}/export", form={"csrf": token})
    assert export.status == 403 and export.headers.get("content-type", "").startswith("text/html")
    assert page.request.get(base + "/lookup").status == 403
    context.close()


def _admin(browser: Browser, base: str, bundle: Path) -> None:
    context = browser.new_context(locale="en-US", extra_http_headers={"Accept-Language": "en"})
    page = context.new_page()
    sign_in(page, base, "admin")
    page.goto(base + "/users")
    expect(page.locator("table")).to_contain_text("investigator")
    shoot(page, "en-13-users")
    page.click("a[lang=ko]")
    expect(page.locator("h1")).to_have_text("계정 관리")
    shoot(page, "ko-13-users")
    page.goto(base + "/verify")
    page.set_input_files("#bundle", str(bundle))
    page.click("button:has-text('검증')")
    expect(page.locator("#verdict")).to_contain_text("검증 완료")
    shoot(page, "ko-09-verify")
    context.close()
