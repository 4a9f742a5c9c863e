"""Keyword matching: NFKC + case folding, equivalent separators, token boundaries for Latin, substrings for
Hangul/CJK, decomposed Hangul, spans in the original text; hypothesis for crashes and self-matching."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch.errors import ConfigError
from p2pwatch.match.keywords import KeywordMatcher, compact, keyword_hits, normalize, validate_keyword

NFD = lambda text: unicodedata.normalize("NFD", text)  # noqa: E731


@pytest.mark.parametrize("text", [
    "kim_jiyoung", "Kim.Jiyoung", "KIM-JIYOUNG.mp4", "kim jiyoung", "[Kim]Jiyoung (2023)", "kim+jiyoung",
    "KimJiyoung2023.mkv", "kimjiyoung", "ｋｉｍ　ｊｉｙｏｕｎｇ", "folder/Kim__Jiyoung/clip 01.avi",
    "김지영kim jiyoung",
])
def test_latin_keyword_hits_across_separators(text: str) -> None:
    hits = keyword_hits(["Kim Jiyoung"], [text])
    assert len(hits) == 1 and hits[0].keyword == "Kim Jiyoung" and hits[0].text == text
    assert compact(hits[0].matched_text) == "kimjiyoung"


@pytest.mark.parametrize("text", ["akim jiyoung", "kim jiyoungs", "kimberly jiyoung", "kim", "jiyoung kim",
                                  "skim-jiyoung", "kim-jiyoungsoo"])
def test_latin_keyword_respects_token_boundaries(text: str) -> None:
    assert keyword_hits(["Kim Jiyoung"], [text]) == []


def test_split_spelling_still_hits_on_whole_tokens() -> None:
    # "ji young" spelled in two tokens: the keyword's letters equal a run of whole tokens
    assert [h.span for h in keyword_hits(["Kim Jiyoung"], ["kim_ji_young2"])] == [(0, 12)]


@pytest.mark.parametrize("text", ["김지영_2023.mkv", "[김지영] 영상", "영상김지영최고", "김 지영.mp4", "김.지.영"])
def test_hangul_keyword_hits_as_substring(text: str) -> None:
    for keyword in ("김지영", NFD("김지영"), "김 지영"):
        for candidate in (text, NFD(text)):
            hits = keyword_hits([keyword], [candidate])
            assert len(hits) == 1, (keyword, candidate)
            assert compact(hits[0].matched_text) == "김지영"


def test_hangul_does_not_hit_other_names() -> None:
    assert keyword_hits(["김지영"], ["김지연_2023.mkv", "이지영", "김지"]) == []


def test_spans_point_into_the_original_text() -> None:
    text = "Some.Folder/KIM-JIYOUNG (1).mp4"
    (hit,) = keyword_hits(["kim jiyoung"], [text])
    assert hit.span == (12, 23) and hit.matched_text == "KIM-JIYOUNG"
    decomposed = NFD("영상_김지영.mkv")
    (hit,) = keyword_hits(["김지영"], [decomposed])
    assert unicodedata.normalize("NFC", hit.matched_text) == "김지영"
    twice = keyword_hits(["kim jiyoung", "김지영"], ["kim jiyoung / KIM JIYOUNG 김지영", "nothing"])
    assert [(h.keyword, h.span) for h in twice] == [("kim jiyoung", (0, 11)), ("kim jiyoung", (14, 25)),
                                                    ("김지영", (26, 29))]


def test_normalize() -> None:
    assert normalize("  KIM-JIYOUNG.mp4  [x]") == "kim jiyoung mp4 x"
    assert normalize(NFD("김지영_2023")) == "김지영 2023"
    assert normalize("Straße ﬁle") == "strasse file"
    assert normalize("...") == "" and compact("Ｋｉｍ Ｊｉｙｏｕｎｇ") == "kimjiyoung"


def test_keywords_without_letters_are_ignored_or_refused() -> None:
    assert keyword_hits(["", "...", "  "], ["anything ... at all"]) == []
    with pytest.raises(ConfigError):
        validate_keyword(" -_- ")
    assert validate_keyword("Kim Jiyoung") == "kimjiyoung"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_normalize_never_fails_and_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(max_size=10), st.text(max_size=10))
def test_a_keyword_hits_itself_between_separators(keyword: str, before: str, after: str) -> None:
    if not compact(keyword):
        return
    matcher = KeywordMatcher([keyword])
    assert matcher.hits([keyword])
    assert matcher.hits([f"{before} {keyword} {after}"])
