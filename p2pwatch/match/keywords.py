"""Keyword matching on torrent names and file paths (issue 4, matcher stage 1: names make candidates).

Text and keywords are compared after Unicode NFKC normalisation and case folding, so full-width letters,
ligatures, Hangul in precomposed syllables or in decomposed conjoining jamo (NFD, as macOS writes file
names), and any letter case compare equal. Every character that is not a letter, digit or combining mark is
a separator, and all separators are equivalent: ``Kim Jiyoung`` hits ``kim_jiyoung``, ``Kim.Jiyoung``,
``KIM-JIYOUNG.mp4``, ``[Kim]Jiyoung`` and ``KimJiyoung`` alike.

* Latin and other spaced scripts match on token boundaries: the keyword (its separators removed) must equal
  a run of whole tokens of the text. Tokens also break at lower-to-upper case changes (``KimJiyoung``),
  between letters and digits (``jiyoung2023``) and where a spaced script meets an unspaced one.
* Hangul, CJK ideographs, kana, Thai, Lao, Khmer and Myanmar are written without spaces, so a keyword with
  any such character matches as a substring of the text with its separators removed: ``김지영`` hits
  ``김지영_2023.mkv`` and ``[김 지영]``.

Departures: NFKC turns Hangul *compatibility* jamo typed one by one (ㄱ, ㅣ, ㅁ) into leading consonants, so a
name spelled that way does not compose into syllables; accents are kept (``Zoë`` does not hit ``Zoe``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from p2pwatch.errors import ConfigError

_UNSPACED = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul jamo
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Hangul compatibility jamo, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul jamo extended A
    (0xAC00, 0xD7FF),  # Hangul syllables, jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3FFFF),  # CJK extensions B..
)
#: Hangul medial vowels and final consonants: they continue the syllable their leading consonant began.
_JAMO_CONTINUATION = ((0x1160, 0x11FF), (0xD7B0, 0xD7FF))


def _in(ranges: Sequence[tuple[int, int]], ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in ranges)


def is_unspaced(ch: str) -> bool:
    """True for characters of scripts written without spaces between words."""
    return _in(_UNSPACED, ch)


def _is_word(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM"


def _units(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` that normalise independently: a starter and what combines with it."""
    spans: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        joins = unicodedata.combining(ch) != 0 or _in(_JAMO_CONTINUATION, ch)
        if joins and spans:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


@dataclass(frozen=True)
class _Char:
    ch: str
    start: int  # span of the original text this character came from
    end: int
    upper: bool  # the original was upper or title case (for camelCase breaks)


def _normalized_chars(text: str) -> list[_Char]:
    out: list[_Char] = []
    for start, end in _units(text):
        unit = text[start:end]
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", unit).casefold())
        upper = unit[:1].isupper() or unicodedata.category(unit[0]) == "Lt"
        out.extend(_Char(ch, start, end, upper) for ch in folded)
    return out


def normalize(text: str) -> str:
    """NFKC, case folded, every run of separators turned into one space, trimmed."""
    words = ["".join(c.ch for c in token) for token in _tokens(_normalized_chars(text), fine=False)]
    return " ".join(words)


def compact(text: str) -> str:
    """:func:`normalize` without the separators."""
    return "".join(c.ch for c in _normalized_chars(text) if _is_word(c.ch))


def _breaks_between(prev: _Char, cur: _Char) -> bool:
    if is_unspaced(prev.ch) != is_unspaced(cur.ch):
        return True
    if prev.ch.isdigit() != cur.ch.isdigit() and unicodedata.category(cur.ch)[0] != "M":
        return True
    return cur.upper and not prev.upper and prev.ch.isalpha() and cur.start != prev.start


def _tokens(chars: Sequence[_Char], *, fine: bool = True) -> list[list[_Char]]:
    """Runs of word characters; ``fine`` also breaks at case, digit and script changes."""
    tokens: list[list[_Char]] = []
    current: list[_Char] = []
    for c in chars:
        if not _is_word(c.ch):
            if current:
                tokens.append(current)
            current = []
            continue
        if fine and current and _breaks_between(current[-1], c):
            tokens.append(current)
            current = []
        current.append(c)
    if current:
        tokens.append(current)
    return tokens


@dataclass(frozen=True)
class Hit:
    """``keyword`` (as given) occurs in ``text`` at ``span`` (start, end) of the original text."""

    keyword: str
    text: str
    span: tuple[int, int]

    @property
    def matched_text(self) -> str:
        return self.text[self.span[0] : self.span[1]]


def validate_keyword(keyword: str) -> str:
    """The keyword's compact form; raises :class:`ConfigError` when nothing of it would match."""
    form = compact(keyword)
    if not form:
        raise ConfigError(f"keyword {keyword!r} has no letters or digits: give a name or a title")
    return form


@dataclass(frozen=True)
class _Keyword:
    given: str
    form: str
    unspaced: bool


class KeywordMatcher:
    """Keywords compiled once, matched against many texts."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self._keywords: list[_Keyword] = []
        for keyword in keywords:
            form = compact(keyword)
            if form:
                self._keywords.append(_Keyword(keyword, form, any(is_unspaced(ch) for ch in form)))

    def hits(self, texts: Iterable[str]) -> list[Hit]:
        found: list[Hit] = []
        for text in texts:
            chars = _normalized_chars(text)
            tokens = _tokens(chars)
            words = [c for c in chars if _is_word(c.ch)]
            joined = "".join(c.ch for c in words)
            for kw in self._keywords:
                spans = _substring_spans(kw.form, joined, words) if kw.unspaced else _token_spans(kw.form, tokens)
                found.extend(Hit(kw.given, text, span) for span in spans)
        return found


def _substring_spans(form: str, joined: str, words: Sequence[_Char]) -> list[tuple[int, int]]:
    spans = []
    at = joined.find(form)
    while at >= 0:
        spans.append((words[at].start, words[at + len(form) - 1].end))
        at = joined.find(form, at + 1)
    return spans


def _token_spans(form: str, tokens: Sequence[Sequence[_Char]]) -> list[tuple[int, int]]:
    texts = ["".join(c.ch for c in token) for token in tokens]
    spans = []
    for i in range(len(texts)):
        acc = ""
        for j in range(i, len(texts)):
            acc += texts[j]
            if not form.startswith(acc):
                break
            if acc == form:
                spans.append((tokens[i][0].start, tokens[j][-1].end))
                break
    return spans


def keyword_hits(keywords: Iterable[str], texts: Iterable[str]) -> list[Hit]:
    """Every occurrence of every keyword in every text (keywords with no letters or digits are ignored)."""
    return KeywordMatcher(keywords).hits(texts)
