"""The content stages behind triage (issue 13): exact-piece, then the one-keyframe screen, then the sampled
perceptual confirmation of the survivors only.

:func:`screened_match` runs :func:`p2pwatch.match.matcher.match_torrent` with a perceptual stage that first
screens each file triage chose (:func:`p2pwatch.match.keyframe.screen_file`) and hands only the survivors to
:func:`p2pwatch.match.perceptual.perceptual_matches`, compared only with the registered items their key
frame came near. Every piece goes through a :class:`~p2pwatch.match.content_budget.BudgetedSource`, so the
budget is charged before a piece is asked for and ``pieces_read`` is what the torrent cost.

The outcome is one of the decisions counted by the monitor: ``confirmed`` (a match, by any stage),
``rejected`` (every screened file ruled out, or the confirmation found no match; the reasons are kept),
``budget`` (the budget refused a piece before the torrent was decided).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from p2pwatch.match.content_budget import BudgetedSource, BudgetExhausted, ContentBudget
from p2pwatch.match.frame_lookup import FrameLookup
from p2pwatch.match.keyframe import KeyframeSettings, ScreenResult, screen_file
from p2pwatch.match.matcher import Match, MatchReport, PieceSource, RegistryIndex, match_torrent
from p2pwatch.match.perceptual import PerceptualSettings, perceptual_matches
from p2pwatch.match.triage import TriageDecision
from p2pwatch.torrent.metainfo import Metainfo

log = logging.getLogger(__name__)

CONFIRMED = "confirmed"
REJECTED = "rejected"
SKIPPED = "skipped"
BUDGET = "budget"


@dataclass
class ScreenLog:
    results: list[ScreenResult]
    budget_refused: bool = False


def budgeted(source: Any, metainfo: Metainfo, budget: ContentBudget | None) -> BudgetedSource:
    """Pieces are charged at their own size (:meth:`Metainfo.piece_size`; in a v2 torrent each file's pieces
    start at a piece boundary, so the sum of file lengths would leave the last pieces uncharged)."""
    return BudgetedSource(source, budget, metainfo.piece_length, metainfo.total_length,
                          piece_size=metainfo.piece_size)


async def screened_match(index: RegistryIndex, lookup: FrameLookup, metainfo: Metainfo, source: BudgetedSource,
                         decision: TriageDecision, *, perceptual: PerceptualSettings | None = None,
                         keyframe: KeyframeSettings | None = None, timeout: float = 60.0,
                         zero_byte: MatchReport | None = None) -> MatchReport:
    """Every content stage on the files ``decision`` chose; the report's ``triage`` says what was decided.
    ``zero_byte``: the names and exact-metadata stages as run earlier (not run again)."""
    screens = ScreenLog([])
    settings = perceptual or PerceptualSettings()
    chosen = set(decision.files)

    async def stage(idx: RegistryIndex, meta: Metainfo, src: PieceSource, done: set[tuple[int, str]]) -> list[Match]:
        proven = {f for f, _ in done}
        survivors: set[int] = set()
        near: set[str] = set()
        unhashed = False
        for f in meta.files:
            if f.index not in chosen or f.index in proven or f.pad or f.length < settings.min_file_bytes:
                continue
            try:
                result = await screen_file(f, meta, src, lookup, keyframe)
            except BudgetExhausted:
                screens.budget_refused = True
                raise
            screens.results.append(result)
            log.info("screen %s file %s: %s: %s", meta.infohash.hex(), f.display_path,
                     "survived" if result.survived else "rejected", result.reason)
            if result.survived:
                survivors.add(f.index)
                near |= set(result.near)
                unhashed = unhashed or not result.near
        if not survivors:
            return []
        items = None if unhashed else near  # a survivor that could not be hashed is compared with everything
        try:
            return await perceptual_matches(idx, meta, src, done, settings, files=survivors, items=items)
        except BudgetExhausted:
            screens.budget_refused = True
            raise

    report = await match_torrent(index, metainfo, source, stage, timeout=timeout, zero_byte=zero_byte)
    refused = screens.budget_refused or source.refused
    if report.matches:
        outcome, reason = CONFIRMED, ", ".join(sorted({m.method for m in report.matches}))
    elif refused:
        outcome, reason = BUDGET, "the content budget refused a piece before the torrent was decided"
    elif screens.results and not any(r.survived for r in screens.results):
        outcome, reason = REJECTED, "; ".join(r.reason for r in screens.results)
    elif screens.results:
        outcome, reason = REJECTED, "key frame near a registered one, but the sampled confirmation found no match"
    else:
        outcome, reason = REJECTED, ("; ".join(r.reason for r in report.rejections) or
                                     "; ".join(report.errors) or "no file could be screened")
    report.triage = {
        "decision": outcome, "reason": reason, "score": decision.score, "triage_reason": decision.reason,
        "pieces_read": source.pieces_read, "bytes_charged": source.charged,
        "screens": [{"file": r.path, "kind": r.kind.value, "survived": r.survived, "reason": r.reason,
                     "pieces": r.pieces, "near": len(r.near),
                     "hash": f"{r.hashes[0].phash:016x}" if r.hashes else None} for r in screens.results],
    }
    return report


def skipped_report(report: MatchReport, decision: TriageDecision) -> MatchReport:
    """Mark a zero-byte report (names and exact-metadata only) with the triage decision that skipped it."""
    outcome = CONFIRMED if report.matches else SKIPPED
    report.triage = {"decision": outcome, "reason": decision.reason if outcome == SKIPPED else "exact-metadata",
                     "score": decision.score, "triage_reason": decision.reason, "pieces_read": 0,
                     "bytes_charged": 0, "screens": []}
    return report
