"""Korean and English for everything a person reads (issue 14): gettext catalogs kept as ``.po`` files.

The catalogs ``p2pwatch/locale/{ko,en}/LC_MESSAGES/messages.po`` are read with Babel and compiled in memory
on first use, so neither CI nor an install needs a build step. ``tests/web/test_catalogs.py`` checks that
every message the code and the templates use is translated in both. The glossary of Korean terms is
docs/glossary-ko.md.

* ``tr(text)``, imported as ``_``, translates in the current language (a context variable, so each web
  request has its own).
* ``N_(text)`` marks a text for extraction only (translated later, where it is shown).
* ``pick_language`` reads ``--lang``, ``P2PWATCH_LANG``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``;
  ``negotiate`` reads an HTTP Accept-Language header (RFC 9110 §12.5.4).
* ``local_time`` shows a UTC time in the configured zone (``time_zone``, default Asia/Seoul).
"""

from __future__ import annotations

import contextvars
import functools
import io
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from p2pwatch.errors import ConfigError

LANGUAGES = ("ko", "en")
DEFAULT_LANGUAGE = "en"
DEFAULT_TIME_ZONE = "Asia/Seoul"
DOMAIN = "messages"
ROOT = Path(__file__).resolve().parent
_current: contextvars.ContextVar[str] = contextvars.ContextVar("p2pwatch_language", default=DEFAULT_LANGUAGE)


def catalog_path(language: str) -> Path:
    return ROOT / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(language: str) -> Any:
    """The gettext translations of ``language``, compiled in memory from its .po file."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import Translations

    with open(catalog_path(language), "rb") as f:
        catalog = read_po(f, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def normalize_language(text: str | None) -> str | None:
    """``ko_KR.UTF-8`` → ``ko``; None when it is none of ours (``C``, ``POSIX``, ``fr``)."""
    if not text:
        return None
    code = text.strip().split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    return code if code in LANGUAGES else None


def pick_language(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if explicit:
        chosen = normalize_language(explicit)
        if chosen is None:
            raise ConfigError(f"--lang must be one of {', '.join(LANGUAGES)}, not {explicit!r}")
        return chosen
    for name in ("P2PWATCH_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name)
        if value:
            return normalize_language(value) or DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def negotiate(accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """The best of our languages for an Accept-Language header (quality values; ``*`` means the default)."""
    best, best_q = default, -1.0
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        language = default if tag.strip() == "*" else normalize_language(tag)
        score = q - position * 1e-6  # earlier wins among equal weights
        if language is not None and q > 0 and score > best_q:
            best, best_q = language, score
    return best


def set_language(language: str) -> contextvars.Token[str]:
    return _current.set(language if language in LANGUAGES else DEFAULT_LANGUAGE)


def reset_language(token: contextvars.Token[str]) -> None:
    _current.reset(token)


def current_language() -> str:
    return _current.get()


def gettext(message: str) -> str:
    return str(translations(_current.get()).gettext(message))


def ngettext(singular: str, plural: str, n: int) -> str:
    return str(translations(_current.get()).ngettext(singular, plural, n))


def tr(message: str, /, **values: Any) -> str:
    """Translate ``message``; with ``values``, fill its ``%(name)s`` fields. Modules import it as ``_``
    (``from p2pwatch.locale import tr as _``), the name the catalog extraction looks for."""
    text = gettext(message)
    return text % values if values else text


_ = tr


def N_(message: str) -> str:
    """Mark ``message`` for the catalogs without translating it here."""
    return message


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or DEFAULT_TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"time_zone {name!r} is not a known IANA time zone (for example Asia/Seoul)") from None


def local_time(moment: datetime | str | None, time_zone: str = DEFAULT_TIME_ZONE, *, seconds: bool = True) -> str:
    """``2026-12-07 09:30:00 KST`` for a UTC datetime or ISO text; empty for None."""
    if moment is None or moment == "":
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    shown = moment.astimezone(zone(time_zone))
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")
