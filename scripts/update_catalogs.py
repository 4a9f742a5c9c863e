"""Extract every translatable message from p2pwatch's code and templates and merge it into the Korean and
English catalogs (p2pwatch/locale/{ko,en}/LC_MESSAGES/messages.po), keeping existing translations.

English entries are filled with the message itself; Korean entries left empty must be translated by hand
(docs/glossary-ko.md). ``tests/web/test_catalogs.py`` fails while any entry is missing or empty. Run:
``python scripts/update_catalogs.py`` (prints a table of counts, then one JSON line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "p2pwatch"
sys.path.insert(0, str(ROOT))
from p2pwatch.locale import LANGUAGES, catalog_path  # noqa: E402

METHOD_MAP = [("**.py", "python"), ("web/templates/**.html", "jinja2.ext:babel_extract")]
OPTIONS = {"web/templates/**.html": {"extensions": "jinja2.ext.i18n"}}


def extracted() -> dict[str, list[str]]:
    """msgid -> places (file:line) for every message in the code and the templates."""
    found: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
            str(PACKAGE), METHOD_MAP, options_map=OPTIONS, keywords={"_": None, "tr": None, "N_": None, "gettext": None,
                                                                     "ngettext": (1, 2)}):
        ids = message if isinstance(message, tuple) else (message,)
        for msgid in ids[:1]:
            if msgid:
                found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


def merge(language: str, messages: dict[str, list[str]]) -> dict[str, int]:
    path = catalog_path(language)
    old = Catalog(locale=language)
    if path.exists():
        with open(path, "rb") as f:
            old = read_po(f, locale=language)
    new = Catalog(locale=language, project="p2pwatch", domain="messages", charset="utf-8")
    untranslated = 0
    for msgid in sorted(messages):
        previous = old.get(msgid)
        text = previous.string if previous is not None and previous.string else ""
        if not text and language == "en":
            text = msgid
        untranslated += not text
        new.add(msgid, text, locations=[(p.rsplit(":", 1)[0], int(p.rsplit(":", 1)[1])) for p in messages[msgid][:3]])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        write_po(f, new, width=120, omit_header=False, sort_output=True)
    return {"messages": len(messages), "untranslated": untranslated,
            "dropped": sum(1 for m in old if m.id and m.id not in messages)}


def main() -> int:
    messages = extracted()
    results = {language: merge(language, messages) for language in LANGUAGES}
    print(f"{'catalog':<8} {'messages':>9} {'untranslated':>13} {'dropped':>8}")
    for language, r in results.items():
        print(f"{language:<8} {r['messages']:>9} {r['untranslated']:>13} {r['dropped']:>8}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
