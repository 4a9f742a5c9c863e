"""The perceptual stage's byte budget: how many seek points a video gets for its size and piece length, that a
budget-bound video still matches on the floor of seek points with the overrun in its proof, and that a strict
budget skips it instead."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.matcher import RegisteredContent, RegistryIndex
from p2pwatch.match.perceptual import POINT_SECONDS, PerceptualSettings, perceptual_matches, plan_samples
from p2pwatch.testswarm.media import have_ffmpeg, make_video, transcode
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import parse_torrent
from tests.conftest import require_component

MiB = 1024 * 1024


def test_plan_fits_the_fraction_at_small_pieces() -> None:
    settings = PerceptualSettings()
    size, duration = 200_000_000, 345.0
    plan = plan_samples(size, duration, 256 * 1024, 600_000, settings)
    assert plan.budget == 6_000_000 and not plan.over_budget
    assert plan.point_cost == int(size / duration * POINT_SECONDS) + 256 * 1024
    assert plan.floor == settings.min_spread <= plan.planned <= settings.samples
    assert plan.spent_before + plan.planned * plan.point_cost <= plan.budget


def test_plan_keeps_the_floor_when_it_cannot_fit() -> None:
    settings = PerceptualSettings()
    plan = plan_samples(200_000_000, 345.0, 4 * MiB, 8 * MiB, settings)  # head and index: two 4 MiB pieces
    assert plan.over_budget and plan.planned == plan.floor == settings.min_spread
    doc = plan.to_json(fetched=24 * MiB, taken=3)
    assert doc["over_budget"] is True and doc["fetched_bytes"] == 24 * MiB and doc["planned_samples"] == 3


def test_small_files_get_every_point_and_the_fraction_is_configurable() -> None:
    settings = PerceptualSettings()
    plan = plan_samples(3 * MiB, 20.0, 16 * 1024, 64 * 1024, settings)  # budget: min_fetch_bytes, the whole file
    assert plan.planned == settings.samples and not plan.over_budget
    tight = dataclasses.replace(settings, max_fetch_fraction=0.01, min_fetch_bytes=0)
    assert plan_samples(200_000_000, 345.0, 256 * 1024, 600_000, tight).planned == 3  # 2 MB: the floor just fits
    assert plan_samples(200_000_000, 0.0, 256 * 1024, 600_000, settings).planned >= settings.min_spread


class FileSource:
    """Pieces of one file from disk; ``downloaded`` counts distinct pieces, as a reader does."""

    def __init__(self, path: Path, piece_length: int) -> None:
        self.data = path.read_bytes()
        self.piece_length = piece_length
        self.pieces: set[int] = set()

    async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for index in wanted:
            self.pieces.add(index)
            out[index] = self.data[index * self.piece_length : (index + 1) * self.piece_length]
        return out

    def downloaded(self) -> int:
        return sum(len(self.data[i * self.piece_length : (i + 1) * self.piece_length]) for i in self.pieces)


def test_over_budget_video_matches_on_the_floor_or_is_skipped_when_strict(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    require_component("ffmpeg", have_ffmpeg(), "pip install imageio-ffmpeg")
    source = make_video(tmp_path / "source.mp4", 41, seconds=30.0, segments=6)
    candidate = transcode(source, tmp_path / "candidate.mp4", width=240, crf=30)
    registered = fingerprint_file(source)
    index = RegistryIndex([RegisteredContent(registered.fingerprint_id, "case", registered)])
    meta = parse_torrent(make_v1_torrent("c.mp4", [("c.mp4", candidate)], piece_length=16 * 1024,
                                         single_file=True))
    tight = PerceptualSettings(max_fetch_fraction=0.0, min_fetch_bytes=0, early_stop=False)

    async def run(settings: PerceptualSettings) -> tuple[list[Any], int]:
        src = FileSource(candidate, 16 * 1024)
        found = await perceptual_matches(index, meta, src, set(), settings)
        return found, src.downloaded()

    generous, _ = trio.run(run, dataclasses.replace(tight, min_fetch_bytes=1 << 30))
    assert generous and generous[0].proof["samples"] > tight.min_spread
    assert generous[0].proof["budget"]["over_budget"] is False
    found, fetched = trio.run(run, tight)
    assert [m.content_id for m in found] == [registered.fingerprint_id]
    budget = found[0].proof["budget"]
    assert found[0].proof["samples"] == budget["samples"] == budget["floor"] == tight.min_spread
    assert budget["over_budget"] is True and budget["budget_bytes"] == 0 and budget["fetched_bytes"] == fetched
    with caplog.at_level(logging.INFO, logger="p2pwatch.match.perceptual"):
        skipped, _ = trio.run(run, dataclasses.replace(tight, strict_budget=True))
    assert skipped == [] and "skipped (strict budget)" in caplog.text
