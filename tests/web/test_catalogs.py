"""The Korean and English catalogs are complete and consistent (issue 14).

* every message the code and the templates use (extracted by Babel, as scripts/update_catalogs.py does) is in
  both catalogs, translated, with the same ``%(name)s`` fields; no catalog entry is left over;
* no ``_()`` call hides inside an f-string (Babel on Python 3.11 cannot see it there, so it would never be
  translated);
* the Korean text uses the glossary's terms (docs/glossary-ko.md) every time.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from p2pwatch.locale import LANGUAGES, catalog_path, local_time, negotiate, pick_language, translations

ROOT = Path(__file__).resolve().parents[2]
FIELDS = re.compile(r"%\((\w+)\)s")


def _extracted() -> dict[str, list[str]]:
    spec = importlib.util.spec_from_file_location("update_catalogs", ROOT / "scripts" / "update_catalogs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.extracted())


EXTRACTED = _extracted()


def _catalog(language: str) -> dict[str, str]:
    with open(catalog_path(language), "rb") as f:
        return {m.id: m.string for m in read_po(f, locale=language) if m.id}


def test_extraction_finds_the_web_cli_and_report_messages() -> None:
    places = {p.split(":")[0] for ps in EXTRACTED.values() for p in ps}
    assert {"web/templates/case.html", "cli/cases.py", "bundle/report.py", "web/pages_cases.py"} <= places
    assert "Sign in" in EXTRACTED
    assert "Only levels 3 and 4 are evidence that a peer distributed the content." in EXTRACTED


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalog_is_complete(language: str) -> None:
    catalog = _catalog(language)
    missing = sorted(set(EXTRACTED) - set(catalog))
    untranslated = sorted(m for m in EXTRACTED if m in catalog and not catalog[m].strip())
    leftover = sorted(set(catalog) - set(EXTRACTED))
    assert missing == [], f"not in the {language} catalog (run scripts/update_catalogs.py): {missing[:10]}"
    assert untranslated == [], f"untranslated in {language}: {untranslated[:10]}"
    assert leftover == [], f"no longer used, remove from {language}: {leftover[:10]}"
    wrong = [m for m in EXTRACTED if set(FIELDS.findall(m)) != set(FIELDS.findall(catalog[m]))]
    assert wrong == [], f"{language} translations with other %(fields)s: {wrong[:5]}"


def test_no_translation_call_inside_an_f_string() -> None:
    offences = []
    for path in sorted((ROOT / "p2pwatch").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id in (
                            "_", "tr"):
                        offences.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert offences == []


#: English pattern → the Korean term every translation of it uses (docs/glossary-ko.md).
GLOSSARY = [
    (r"\bcases?\b(?! ?(allows|number))", "사건"),
    (r"\bwithdraw", "철회"),
    (r"\blead(s)?\b", "단서"),
    (r"\bdistribut", "유포"),
    (r"\baudit", "감사 기록"),
    (r"\binfohash", "인포해시"),
    (r"\bmagnet", "마그넷"),
    (r"\bevidence bundle|\bbundle\b(?!\.json)", "증거 패키지|패키지"),
    (r"(?<!-)\bkeywords?\b", "검색어"),
    (r"\bmatch(es)?\b(?!ing)", "일치"),
    (r"\bpeers?\b", "피어"),
    (r"\bswarm\b", "스웜"),
    (r"(?<!\.)\btorrents?\b", "토렌트"),
    (r"(?<!`)\bwatch(ed|ing)?\b", "모니터링|직접 지정"),
    (r"\bsign(ed)?[ -]in", "로그인"),
    (r"\bfingerprints\b|\bregistered fingerprint", "해시 지문"),
    (r"\bdormant\b", "휴면"),
    (r"\bgone\b", "소멸"),
]


def test_korean_uses_the_glossary_terms() -> None:
    ko = _catalog("ko")
    offences = []
    for english, korean in GLOSSARY:
        for msgid, text in ko.items():
            if re.search(english, FIELDS.sub("", msgid), re.IGNORECASE) and not re.search(korean, text):
                offences.append(f"{msgid!r} → {text!r} lacks {korean!r}")
    assert offences == []


def test_translations_load_and_negotiate() -> None:
    assert translations("ko").gettext("Sign in") == "로그인"
    assert translations("en").gettext("Sign in") == "Sign in"
    assert negotiate("ko-KR,ko;q=0.9,en-US;q=0.8") == "ko"
    assert negotiate("en-GB,en;q=0.9,ko;q=0.5") == "en"
    assert negotiate("fr-FR,de;q=0.5") == "en"
    assert negotiate("fr, ko;q=0.1") == "ko"
    assert negotiate("ko;q=0, en;q=0.1") == "en"
    assert negotiate(None) == "en"
    assert pick_language(None, {"LANG": "ko_KR.UTF-8"}) == "ko"
    assert pick_language(None, {"LANG": "C.UTF-8"}) == "en"
    assert pick_language(None, {"P2PWATCH_LANG": "en", "LANG": "ko_KR.UTF-8"}) == "en"
    assert pick_language("ko", {"LANG": "en_US"}) == "ko"
    assert local_time("2026-12-07T00:30:00+00:00", "Asia/Seoul") == "2026-12-07 09:30:00 KST"
    assert local_time("2026-12-07T00:30:00Z", "UTC") == "2026-12-07 00:30:00 UTC"
