"""The corpus of scripts/bench_triage.py (issue 13): registered videos and images with planted copies among
decoys, all generated with ffmpeg's lavfi sources (p2pwatch/testswarm/media.py) into a temporary directory; the
registry padded with synthetic items; and metainfo-only torrents shaped like what a crawler sees.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2pwatch.match.fingerprint import Fingerprint, fingerprint_file
from p2pwatch.match.hash_index_measure import synthetic_frame_hashes
from p2pwatch.match.matcher import RegisteredContent, RegistryIndex
from p2pwatch.match.media_types import ContentKind, FrameHash, MediaFingerprint
from p2pwatch.testswarm import media as mf
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint
from p2pwatch.torrent import bencoding
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent

VIDEO_VARIANTS = {
    "reencoded": lambda s, d: mf.transcode(s, d / "reencoded.mp4", crf=32),
    "resized": lambda s, d: mf.transcode(s, d / "resized.mp4", width=176, crf=23),
    "trimmed": lambda s, d: mf.transcode(s, d / "trimmed.mp4", start=3.3, duration=6.0, crf=26),
    "trimmed-remux": lambda s, d: mf.remux(s, d / "trimmed.mkv", start=4.0, duration=6.0),
}
IMAGE_VARIANTS = {
    "resized": lambda s, d: mf.resize_recompress(s, d / "half.jpg", scale=0.5, quality=70),
    "recompressed": lambda s, d: mf.resize_recompress(s, d / "q30.jpg", scale=1.0, quality=30),
    "webp": lambda s, d: mf.resize_recompress(s, d / "w.webp", scale=0.75, quality=50),
}


@dataclass
class Candidate:
    kind: str  # "video" or "image"
    label: str  # exact, renamed, reencoded, ..., decoy
    source: str | None  # the registered item it derives from
    files: list[tuple[str, Path]]
    meta: Metainfo | None = None
    decision: str = ""
    matched: set[str] = field(default_factory=set)
    pieces: int = 0
    screens: list[dict[str, Any]] = field(default_factory=list)
    keyframes: list[int] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0


# --- the corpus ---------------------------------------------------------------------------------------

def build_corpus(workdir: Path, videos: int, images: int, decoy_videos: int, decoy_images: int, jobs: int
                 ) -> tuple[dict[str, Path], list[Candidate]]:
    readme = workdir / "readme.txt"
    readme.write_text("notes\n" * 300)

    def job(kind: str, seed: int, registered: bool) -> tuple[str, Path, list[Candidate]]:
        folder = workdir / f"{kind}{seed}"
        folder.mkdir(exist_ok=True)
        key = f"{kind}{seed}"
        if kind == "video":
            source = mf.make_video(folder / "source.mp4", seed)
        else:
            source = mf.make_image(folder / "source.png", seed)
        if not registered:
            return key, source, [Candidate(kind, "decoy", None, [(f"{key}{source.suffix}", source)])]
        out = [Candidate(kind, "exact", key, [(f"{key}{source.suffix}", source)]),
               Candidate(kind, "renamed", key, [("readme.txt", readme), (f"copy{source.suffix}", source)])]
        for label, make in (VIDEO_VARIANTS if kind == "video" else IMAGE_VARIANTS).items():
            path = make(source, folder)
            out.append(Candidate(kind, label, key, [(f"{key}-{label}{path.suffix}", path)]))
        return key, source, out

    specs = ([("video", i, True) for i in range(videos)] + [("image", 20_000 + i, True) for i in range(images)]
             + [("video", 10_000 + i, False) for i in range(decoy_videos)]
             + [("image", 30_000 + i, False) for i in range(decoy_images)])
    with ThreadPoolExecutor(jobs) as pool:
        made = list(pool.map(lambda s: job(*s), specs))
    sources = {key: path for key, path, cands in made if cands[0].label != "decoy"}
    return sources, [c for _, _, cands in made for c in cands]


def fingerprints(sources: dict[str, Path], jobs: int) -> dict[str, Fingerprint]:
    with ThreadPoolExecutor(jobs) as pool:
        return dict(zip(sources, pool.map(fingerprint_file, sources.values()), strict=True))


def pad_registry(index: RegistryIndex, target: int, seed: int = 13) -> int:
    """Synthetic registered videos (random fingerprints, frame-like hashes) until ``target`` hashes."""
    have = len(index.frames) + len(index.image_phashes)
    missing = max(0, target - have)
    rng = random.Random(seed)
    codes = synthetic_frame_hashes(missing, np.random.default_rng(seed))
    per_item = 100
    for n, lo in enumerate(range(0, missing, per_item)):
        chunk = codes[lo : lo + per_item].tolist()
        duration = rng.uniform(30.0, 1200.0)
        step = duration / len(chunk)
        video = MediaFingerprint(ContentKind.VIDEO, 640, 360, duration, "h264",
                                 tuple(FrameHash(round(i * step, 3), int(h)) for i, h in enumerate(chunk)))
        fp = synthetic_fingerprint(rng, 100_000 + n, video)  # small: its leaf hashes cost memory
        index.add(RegisteredContent(f"synthetic-{n}", "synthetic", fp))
    return missing


def metadata_decoys(n: int, seed: int = 7) -> list[Metainfo]:
    """Torrents shaped like what a crawler sees, described by their metainfo only (no data behind them)."""
    rng = random.Random(seed)
    shapes = [
        ("album", lambda: [(f"{i:02d} track.flac", rng.randint(20, 60) * 10**6) for i in range(12)]
         + [("cover.jpg", rng.randint(100, 900) * 1000), ("album.cue", 2000)]),
        ("software", lambda: [("setup.exe", rng.randint(50, 4000) * 10**6), ("readme.txt", 4000)]),
        ("ebooks", lambda: [(f"book{i}.epub", rng.randint(200, 5000) * 1000) for i in range(rng.randint(1, 40))]),
        ("tv-pack", lambda: [(f"S01E{i:02d}.mkv", rng.randint(250, 1500) * 10**6) for i in range(10)]
         + [(f"S01E{i:02d}.srt", 50_000) for i in range(10)]),
        ("film", lambda: [("film.mkv", rng.randint(1500, 60_000) * 10**6), ("film.nfo", 3000)]),
        ("iso", lambda: [("linux.iso", rng.randint(700, 5000) * 10**6)]),
        ("photos", lambda: [(f"IMG_{i:04d}.JPG", rng.randint(2, 9) * 10**6) for i in range(rng.randint(5, 80))]),
        ("game", lambda: [(f"data{i}.bin", rng.randint(100, 4000) * 10**6) for i in range(rng.randint(1, 6))]),
    ]
    out = []
    for i in range(n):
        name, files = shapes[i % len(shapes)][0], shapes[i % len(shapes)][1]()
        total = sum(length for _, length in files)
        piece = max(1 << 18, 1 << (max(1, total // 1500)).bit_length())  # 1,000-2,000 pieces, as clients pick
        info = {b"name": f"{name}-{i}".encode(), b"piece length": piece,
                b"pieces": rng.randbytes(20) * (-(-total // piece)),
                b"files": [{b"length": length, b"path": [p.encode()]} for p, length in files]}
        out.append(parse_torrent(bencoding.encode({b"info": info})))
    return out
