"""The one-keyframe screen (issue 13) with real ffmpeg-made videos: copies survive it, decoys are rejected
with a piece or a few, a flat first key frame is looked past; and on a loopback swarm (a libtorrent seeder)
through ``run_matcher`` as the monitor calls it: copies confirmed, decoys rejected at the screen with their
pieces counted, and a budget too small for the torrent stops it without exceeding the budget."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pwatch.config import MonitorConfig
from p2pwatch.investigate.lookup import Screening, run_matcher
from p2pwatch.match.content_budget import BudgetedSource, BudgetSettings, ContentBudget
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.frame_lookup import FrameLookup
from p2pwatch.match.keyframe import KeyframeSettings, screen_file
from p2pwatch.match.matcher import RegisteredContent, RegistryIndex
from p2pwatch.match.media_types import ContentKind
from p2pwatch.testswarm.media import (
    have_ffmpeg,
    make_image,
    make_video,
    remux,
    resize_recompress,
    run_ffmpeg,
    transcode,
)
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent
from tests.conftest import loopback_address, require_component

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm
except ImportError:  # pragma: no cover - reported by require_component
    lt = None  # type: ignore[assignment]

PIECE = 64 * 1024


class FileSource:
    """Pieces of one file from disk; counts the distinct pieces asked for."""

    def __init__(self, path: Path, piece_length: int) -> None:
        self.data = path.read_bytes()
        self.piece_length = piece_length
        self.pieces: set[int] = set()

    async def read_pieces_async(self, wanted: Any, timeout: float | None = None) -> dict[int, bytes]:
        out = {}
        for i in wanted:
            self.pieces.add(i)
            out[i] = self.data[i * self.piece_length : (i + 1) * self.piece_length]
        return out

    def downloaded(self) -> int:
        return len(self.pieces) * self.piece_length


def _single(path: Path, piece_length: int = PIECE) -> Metainfo:
    return parse_torrent(make_v1_torrent(path.name, [(path.name, path)], piece_length=piece_length, single_file=True))


def _black_lead_in(src: Path, out: Path) -> Path:
    """``src`` with two seconds of black before it (a flat first key frame), re-encoded."""
    run_ffmpeg("-f", "lavfi", "-t", "2", "-i", "color=c=black:s=640x360:r=25", "-i", str(src), "-filter_complex",
               "[0:v][1:v]concat=n=2:v=1:a=0,format=yuv420p[v]", "-map", "[v]", "-c:v", "libx264", "-preset",
               "veryfast", "-crf", "24", str(out))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_component("ffmpeg", have_ffmpeg(), "pip install imageio-ffmpeg")
    d = tmp_path_factory.mktemp("keyframe")
    video = make_video(d / "registered.mp4", 5, seconds=20.0, size="640x360", rate=25)
    image = make_image(d / "registered.png", 20_005, size="320x240")
    return {
        "video": video, "image": image,
        "reencoded": transcode(video, d / "reencoded.mp4", crf=30),
        "resized": transcode(video, d / "resized.mp4", width=320, crf=26),
        "trimmed": transcode(video, d / "trimmed.mp4", start=7.3, duration=8.0, crf=26),
        "trimmed-remux": remux(video, d / "trimmed.mkv", start=9.0, duration=8.0),
        "black-lead-in": _black_lead_in(video, d / "lead-in.mp4"),
        "image-copy": resize_recompress(image, d / "copy.jpg", scale=0.75, quality=70),
        "decoy-1": make_video(d / "decoy1.mp4", 31, seconds=20.0, size="640x360", rate=25),
        "decoy-2": make_video(d / "decoy2.mp4", 32, seconds=20.0, size="640x360", rate=25),
        "decoy-3": make_video(d / "decoy3.mkv", 33, seconds=20.0, size="640x360", rate=25),
        "decoy-image": resize_recompress(make_image(d / "other.png", 20_033, size="320x240"), d / "other.jpg"),
    }


@pytest.fixture(scope="module")
def registry(corpus: dict[str, Path]) -> RegistryIndex:
    items = [fingerprint_file(corpus["video"]), fingerprint_file(corpus["image"])]
    return RegistryIndex([RegisteredContent(fp.fingerprint_id, "case", fp) for fp in items])


@pytest.mark.parametrize("name", ["reencoded", "resized", "trimmed", "trimmed-remux", "black-lead-in", "image-copy"])
async def test_copies_survive_the_screen(name: str, corpus: dict[str, Path], registry: RegistryIndex) -> None:
    meta = _single(corpus[name])
    lookup = FrameLookup(registry)
    result = await screen_file(meta.files[0], meta, FileSource(corpus[name], PIECE), lookup)
    assert result.survived, result
    assert result.near and result.hashes, result  # survived by a hash near a registered one, not by default
    expected = ContentKind.IMAGE if name.startswith("image") else ContentKind.VIDEO
    assert result.kind is expected
    if name == "black-lead-in":  # the flat first key frame was looked past
        assert result.hashes[0].t > 1.5, result


@pytest.mark.parametrize("name", ["decoy-1", "decoy-2", "decoy-3", "decoy-image"])
async def test_decoys_are_rejected_with_few_pieces(name: str, corpus: dict[str, Path], registry: RegistryIndex
                                                   ) -> None:
    meta = _single(corpus[name])
    source = FileSource(corpus[name], PIECE)
    # the exact index and the brute-force scan agree on it
    for lookup in (FrameLookup(registry), FrameLookup(registry, brute_force=True)):
        result = await screen_file(meta.files[0], meta, source, lookup, KeyframeSettings())
        assert not result.survived and "bits" in result.reason, result
        assert 1 <= result.pieces <= 6, result
        if name.startswith("decoy-image"):
            assert result.kind is ContentKind.IMAGE
        else:  # a small part of the video
            assert result.kind is ContentKind.VIDEO and result.pieces < len(meta.piece_hashes) // 3, result
    assert len(source.pieces) <= 6


async def test_a_generous_threshold_lets_decoys_through(corpus: dict[str, Path], registry: RegistryIndex) -> None:
    """The verdict depends on the threshold, not on a constant: at 64 bits every key frame is near."""
    meta = _single(corpus["decoy-1"])
    result = await screen_file(meta.files[0], meta, FileSource(corpus["decoy-1"], PIECE), FrameLookup(registry),
                               KeyframeSettings(threshold=64))
    assert result.survived and result.near


def _config() -> MonitorConfig:
    config = MonitorConfig()
    config.matcher.fetch_timeout = 60.0
    return config


@pytest.mark.interop
async def test_screen_on_a_loopback_swarm(tmp_path: Path, corpus: dict[str, Path], registry: RegistryIndex) -> None:
    require_component("libtorrent", lt is not None, "pip install libtorrent")
    names = ["reencoded", "trimmed", "image-copy", "decoy-1", "decoy-2", "decoy-3", "decoy-image"]
    torrents: dict[str, tuple[bytes, Metainfo]] = {}
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(corpus[name], folder / corpus[name].name)
        data = make_v1_torrent(corpus[name].name, [(corpus[name].name, folder / corpus[name].name)],
                               piece_length=PIECE if not name.endswith("image") else 16 * 1024, single_file=True)
        torrents[name] = (data, parse_torrent(data))
    config = _config()
    budget = ContentBudget(BudgetSettings(bytes_per_day=64 * 1024 * 1024))
    screening = Screening.for_index(registry, config, budget)
    reports = {}
    with LocalSwarm(tmp_path, extra_settings={"enable_dht": False}) as swarm:
        seeder = swarm.start_session(loopback_address(), dht=False)
        for name, (data, _) in torrents.items():
            swarm.seed(seeder, data, tmp_path / name)
        await trio.to_thread.run_sync(lambda: swarm.wait_seeding(timeout=60))
        with trio.fail_after(300):
            for name, (_, meta) in torrents.items():
                reports[name] = await run_matcher(registry, meta, [seeder.endpoint], config,
                                                  bind_ip=loopback_address(), allow_local=True, screening=screening)
    for name in ("reencoded", "trimmed", "image-copy"):
        report = reports[name]
        assert report.triage is not None and report.triage["decision"] == "confirmed", (name, report)
        assert [m.method for m in report.matches] == ["perceptual"], (name, report.matches)
    for name in ("decoy-1", "decoy-2", "decoy-3", "decoy-image"):
        report = reports[name]
        assert not report.matches and report.triage is not None, (name, report)
        assert report.triage["decision"] == "rejected", (name, report.triage)
        screens = report.triage["screens"]
        assert len(screens) == 1 and not screens[0]["survived"], (name, screens)
        assert 1 <= report.triage["pieces_read"] <= 6, (name, report.triage)
    charged = sum(r.triage["bytes_charged"] for r in reports.values() if r.triage)
    assert charged == budget.bytes.total > 0


async def test_a_torrent_the_budget_cannot_pay_for_stops_at_the_budget(corpus: dict[str, Path],
                                                                      registry: RegistryIndex) -> None:
    """The content stages charge every piece before asking for it: with two pieces of budget the screen of a
    re-encoded copy cannot finish, its decision is ``budget``, and not a byte more than two pieces is asked."""
    from p2pwatch.match.screened import screened_match
    from p2pwatch.match.triage import Triage

    config = _config()
    meta = _single(corpus["reencoded"], 16 * 1024)
    budget = ContentBudget(BudgetSettings(bytes_per_day=2 * 16 * 1024))
    files = FileSource(corpus["reencoded"], 16 * 1024)
    source = BudgetedSource(files, budget, meta.piece_length, meta.files[0].length)
    decision = Triage(registry).decide(meta)
    assert decision.queued
    report = await screened_match(registry, FrameLookup(registry), meta, source, decision,
                                  keyframe=dataclasses.replace(KeyframeSettings(), piece_timeout=10))
    assert report.triage is not None and report.triage["decision"] == "budget", report.triage
    assert len(files.pieces) <= 2 and budget.bytes.total <= 2 * 16 * 1024 and budget.refused >= 1
    assert config.triage.enabled
