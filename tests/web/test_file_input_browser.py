"""The localised file pickers (templates/_file_input.html) in a real browser: Playwright for Python driving
Debian's chromium, never a browser download.

Chromium's own file input says "Choose File / No file chosen" in English whatever the page's language. On a
Korean page the picker shows a Korean <label> button and "선택한 파일 없음"; the native input is visually hidden
but reachable with Tab (the button then shows the focus ring) and is named by the field's label; the chosen
file names appear beside the button (several for the case page's multiple picker); the form submits. With
JavaScript off the native input shows instead, and the form still submits. With ``P2PWATCH_SCREENS=DIR`` the
pickers are photographed into DIR (outside the repository).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pwatch.locale import translations
from tests.conftest import require_component
from tests.web.webserver import PASSWORD, cli, prepare_home, running_web

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

pytestmark = [pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
KO = translations("ko")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_component("playwright", sync_playwright is not None, "pip install playwright (never `playwright install`)")
    require_component("chromium", Path(CHROMIUM).exists(), "apt-get install chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def shoot(page: Page, folder: Path, name: str) -> Path:
    out = Path(os.environ.get("P2PWATCH_SCREENS") or folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def sign_in(page: Page, base: str) -> None:
    page.goto(base + "/signin")
    page.fill("input[name=username]", "inv")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/cases")


def junk_bundle(folder: Path) -> Path:
    path = folder / "증거-패키지.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", "{}")
    return path


def test_korean_file_pickers_with_and_without_script(browser: Browser, tmp_path: Path) -> None:
    home = tmp_path / "home"
    prepare_home(home)
    cli(home, "case", "create", "2026-051")
    bundle = junk_bundle(tmp_path)
    with running_web(home) as server:
        base = server.url
        context = browser.new_context(locale="ko-KR", extra_http_headers={"Accept-Language": "ko"})
        page = context.new_page()
        errors: list[str] = []  # console errors (a CSP refusal is one) and failed loads, but the favicon's 404
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 404" not in m.text
                else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400
                and not r.url.endswith("/favicon.ico") else None)
        sign_in(page, base)
        page.goto(base + "/verify")
        button, chosen, native = (page.locator("label.file-button"), page.locator("#bundle-chosen"),
                                  page.locator("#bundle"))
        expect(button).to_be_visible()
        expect(button).to_have_text(KO.gettext("Choose a file"))
        expect(chosen).to_have_text(KO.gettext("No file chosen"))
        assert "Choose File" not in page.content() and "No file chosen" not in page.inner_text("main")
        box = native.bounding_box()
        assert box is not None and box["width"] <= 1 and box["height"] <= 1  # visually hidden
        expect(page.get_by_label(KO.gettext("Bundle (.zip)"))).to_have_attribute("type", "file")  # named
        for _ in range(40):  # reachable from the keyboard, and the button shows where the focus is
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "bundle":
                break
        assert page.evaluate("document.activeElement.id") == "bundle"
        assert button.evaluate("b => getComputedStyle(b).outlineStyle") == "solid"
        page.set_input_files("#bundle", str(bundle))
        expect(chosen).to_have_text(bundle.name)
        shoot(page, tmp_path, "ko-file-picker-chosen")
        page.click("main button[type=submit]")
        expect(page.locator("#verdict")).to_be_visible()  # the upload arrived and was checked
        expect(page.locator("main h2")).to_have_text(bundle.name)

        page.goto(base + "/cases/2026-051")
        expect(page.locator("label.file-button")).to_have_text(KO.gettext("Choose files"))
        one, two = tmp_path / "a.bin", tmp_path / "b.bin"
        one.write_bytes(b"a" * 100)
        two.write_bytes(b"b" * 100)
        page.set_input_files("#file", [str(one), str(two)])
        expect(page.locator("#file-chosen")).to_have_text("a.bin, b.bin")
        shoot(page, tmp_path, "ko-file-picker-case")
        assert errors == []
        context.close()

        # without JavaScript: the native input, and the form still submits
        context = browser.new_context(locale="ko-KR", extra_http_headers={"Accept-Language": "ko"},
                                      java_script_enabled=False)
        page = context.new_page()
        sign_in(page, base)
        page.goto(base + "/verify")
        expect(page.locator("label.file-button")).to_be_hidden()
        expect(page.locator("#bundle-chosen")).to_be_hidden()
        box = page.locator("#bundle").bounding_box()
        assert box is not None and box["width"] > 50
        page.set_input_files("#bundle", str(bundle))
        shoot(page, tmp_path, "ko-file-picker-no-script")
        page.click("main button[type=submit]")
        expect(page.locator("#verdict")).to_be_visible()
        context.close()
