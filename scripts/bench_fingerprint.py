"""Benchmarks for fingerprints (issue 4): hashing speed against sha256sum, and the precision/recall of the
perceptual matcher on a generated corpus (ffmpeg lavfi sources only; nothing real, nothing kept).

    python scripts/bench_fingerprint.py --speed --size-mib 1024 --runs 3
    python scripts/bench_fingerprint.py --match --corpus 50          # about 3-5 minutes on 2 cores
    python scripts/bench_fingerprint.py --match --corpus 8           # a quick run

Speed: ``runs`` pairs of wall times, ``sha256sum FILE`` then ``fingerprint_file(FILE, media=False)`` (every hash:
MD5, SHA-1, SHA-256, v2 leaves, 11 v1 piece tables) on the same random file, page cache warm; the median of the
per-run ratios; then one profiled run that says where each CPU second goes (per task of
p2pwatch/match/fingerprint_hash.py). Run it under ``flock /tmp/p2pwatch-bench.lock`` on a shared machine.

Match: ``corpus`` source videos (three generated scenes each) are registered; every one is altered (scaled,
re-encoded at several CRFs, MPEG-4 Part 2, trimmed, remuxed into Matroska, trimmed + remuxed) and each
alteration is compared with every registered video, together with ``corpus / 2`` distinct decoy videos. A
comparison is positive when the candidate derives from that registered video. The same for images (resized
and recompressed as JPEG/WebP/PNG; decoy images). Tables: precision and recall at the default thresholds,
per alteration, and a sweep over thresholds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pwatch.match import media
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.fingerprint_hash import hash_file_object
from p2pwatch.testswarm import media as mf

VIDEO_VARIANTS: dict[str, Callable[[Path, Path], Path]] = {
    "scale-176-crf23": lambda s, d: mf.transcode(s, d / "scale176.mp4", width=176, crf=23),
    "scale-480-crf28": lambda s, d: mf.transcode(s, d / "scale480.mp4", width=480, crf=28),
    "crf32": lambda s, d: mf.transcode(s, d / "crf32.mp4", crf=32),
    "crf40": lambda s, d: mf.transcode(s, d / "crf40.mp4", crf=40),
    "mpeg4-q10": lambda s, d: mf.transcode(s, d / "mpeg4.avi", crf=30, codec="mpeg4"),
    "trim-3.3s+6s": lambda s, d: mf.transcode(s, d / "trim.mp4", start=3.3, duration=6.0, crf=26),
    "remux-mkv": lambda s, d: mf.remux(s, d / "remux.mkv"),
    "trim+remux-mkv": lambda s, d: mf.remux(s, d / "trimremux.mkv", start=4.0, duration=6.0),
}
IMAGE_VARIANTS: dict[str, Callable[[Path, Path], Path]] = {
    "jpeg-q70-x0.5": lambda s, d: mf.resize_recompress(s, d / "half.jpg", scale=0.5, quality=70),
    "jpeg-q30-x1": lambda s, d: mf.resize_recompress(s, d / "q30.jpg", scale=1.0, quality=30),
    "webp-q50-x0.75": lambda s, d: mf.resize_recompress(s, d / "w.webp", scale=0.75, quality=50),
    "png-x1.5": lambda s, d: mf.resize_recompress(s, d / "up.png", scale=1.5),
}


TASKS = {
    "md5": "MD5 (serial; no hardware support)",
    "sha1": "SHA-1 of the file = the chain from offset 0 (serial)",
    "long": "v1 chains longer than a chunk: 8 and 16 MiB (serial)",
    "sha256": "SHA-256 (serial)",
    "leaves": "v2 leaf layer, SHA-256 per 16 KiB (free)",
    "chains16384": "v1 chains 16-64 KiB, within a chunk (free)",
    "chains131072": "v1 chains 128-512 KiB, within a chunk (free)",
    "chains1048576": "v1 chains 1-4 MiB, within a chunk (free)",
    "reader": "reads into the chunk ring (readinto), hand-off",
}


def bench_speed(workdir: Path, size_mib: int, runs: int) -> None:
    target = workdir / "speed.bin"
    with open(target, "wb") as handle:
        for _ in range(size_mib):
            handle.write(os.urandom(1 << 20))
    with open(target, "rb") as handle:  # warm the page cache
        while handle.read(1 << 24):
            pass
    sums, fps, cpus, ratios = [], [], [], []
    print(f"\n## Fingerprint speed, {size_mib} MiB random file, page cache warm, {runs} runs\n")
    print("| run | sha256sum wall s | fingerprint_file wall s | fingerprint CPU s | ratio | load avg (1 min) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in range(runs):
        start = time.perf_counter()
        subprocess.run(["sha256sum", str(target)], check=True, capture_output=True)
        sums.append(time.perf_counter() - start)
        cpu0, start = time.process_time(), time.perf_counter()
        fp = fingerprint_file(target, media=False)
        fps.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu0)
        ratios.append(fps[-1] / sums[-1])
        print(f"| {run + 1} | {sums[-1]:.2f} | {fps[-1]:.2f} | {cpus[-1]:.2f} | {ratios[-1]:.2f} | "
              f"{os.getloadavg()[0]:.2f} |", flush=True)
    assert fp.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    a, b = statistics.median(sums), statistics.median(fps)
    print(f"| **median** | {a:.2f} | {b:.2f} | {statistics.median(cpus):.2f} | **{statistics.median(ratios):.2f}** "
          f"| |")
    print(f"\nmedian ratio fingerprint / sha256sum = **{statistics.median(ratios):.2f}** (goal <= 1.5; ratio of "
          f"medians {b / a:.2f}); sha256sum {size_mib / a:.0f} MiB/s, fingerprint_file {size_mib / b:.0f} MiB/s "
          f"(md5, sha1, sha256, v2 leaves, 11 v1 tables) on {os.cpu_count()} cores")
    profile: dict[str, float] = {}
    cpu0, start = time.process_time(), time.perf_counter()
    with open(target, "rb") as handle:
        hash_file_object(handle, target.stat().st_size, profile=profile)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(f"\n### Where the CPU goes (one profiled run: {wall:.2f} s wall, {cpu:.2f} CPU s)\n")
    print("| task | CPU s | per GiB |")
    print("| --- | --- | --- |")
    gib = size_mib / 1024
    for name, spent in sorted(profile.items(), key=lambda kv: -kv[1]):
        print(f"| {TASKS.get(name, name)} | {spent:.2f} | {spent / gib:.2f} |")
    rest = cpu - sum(profile.values())
    print(f"| scheduling, GIL, thread start (the rest) | {rest:.2f} | {rest / gib:.2f} |")
    target.unlink()


@dataclass
class Corpus:
    registered: list[media.MediaFingerprint]
    candidates: list[tuple[int | None, str, tuple[media.FrameHash, ...], tuple[media.FrameHash, ...]]]
    images: list[media.MediaFingerprint]
    image_candidates: list[tuple[int | None, str, media.MediaFingerprint]]


def build_corpus(workdir: Path, n: int, decoys: int, jobs: int) -> Corpus:
    def video_job(seed: int, register: bool) -> tuple[int, list[tuple[str, Path]]]:
        folder = workdir / f"v{seed}"
        folder.mkdir(exist_ok=True)
        source = mf.make_video(folder / "source.mp4", seed)
        if not register:
            return seed, [("decoy", source)]
        return seed, [("source", source)] + [(name, make(source, folder)) for name, make in VIDEO_VARIANTS.items()]

    def image_job(seed: int, register: bool) -> tuple[int, list[tuple[str, Path]]]:
        folder = workdir / f"i{seed}"
        folder.mkdir(exist_ok=True)
        source = mf.make_image(folder / "source.png", seed)
        if not register:
            return seed, [("decoy", source)]
        return seed, [("source", source)] + [(name, make(source, folder)) for name, make in IMAGE_VARIANTS.items()]

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        videos = list(pool.map(lambda i: video_job(i, True), range(n)))
        decoy_videos = list(pool.map(lambda i: video_job(i, False), range(10_000, 10_000 + decoys)))
        images = list(pool.map(lambda i: image_job(i, True), range(20_000, 20_000 + n)))
        decoy_images = list(pool.map(lambda i: image_job(i, False), range(30_000, 30_000 + decoys)))
        generated = time.perf_counter()
        registered = list(pool.map(lambda v: media.hash_video_source(str(v[1][0][1])), videos))
        jobs_v: list[tuple[int | None, str, Path]] = [
            (index, name, path) for index, (_, files) in enumerate(videos) for name, path in files[1:]]
        jobs_v += [(None, "decoy", files[0][1]) for _, files in decoy_videos]

        def candidate(job: tuple[int | None, str, Path]) -> tuple[int | None, str, tuple[media.FrameHash, ...],
                                                                  tuple[media.FrameHash, ...]]:
            index, name, path = job
            return (index, name, media.video_frame_hashes(str(path)),
                    media.video_frame_hashes(str(path), keyframes_only=True))

        candidates = list(pool.map(candidate, jobs_v))
        reg_images = [media.hash_image_file(files[0][1]) for _, files in images]
        image_candidates: list[tuple[int | None, str, media.MediaFingerprint]] = [
            (index, name, media.hash_image_file(path))
            for index, (_, files) in enumerate(images) for name, path in files[1:]]
        image_candidates += [(None, "decoy", media.hash_image_file(files[0][1])) for _, files in decoy_images]
    print(f"\ncorpus: {n} videos x {len(VIDEO_VARIANTS)} alterations + {decoys} decoy videos; {n} images x "
          f"{len(IMAGE_VARIANTS)} alterations + {decoys} decoy images; generated in {generated - started:.0f} s, "
          f"hashed in {time.perf_counter() - generated:.0f} s ({jobs} jobs)")
    return Corpus(registered, candidates, reg_images, image_candidates)


def _match(registered: media.MediaFingerprint, frames: Sequence[media.FrameHash],
           params: dict[str, float]) -> media.VideoMatch:
    return media.match_video(registered, frames, threshold=int(params["threshold"]),
                             min_frames=int(params["min_frames"]), min_ratio=params["min_ratio"],
                             offset_tolerance=params["offset_tolerance"])


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, expected: bool, got: bool) -> None:
        if expected and got:
            self.tp += 1
        elif expected:
            self.fn += 1
        elif got:
            self.fp += 1
        else:
            self.tn += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def row(self, label: str, extra: str | None = None) -> str:
        """A table row; ``extra`` adds one more column."""
        tail = "" if extra is None else f" {extra} |"
        return (f"| {label} | {self.tp} | {self.fp} | {self.fn} | {self.tn} | {100 * self.precision:.2f} % "
                f"| {100 * self.recall:.2f} % |{tail}")


HEADER = "| {} | TP | FP | FN | TN | precision | recall |\n| --- | --- | --- | --- | --- | --- | --- |"


def score_videos(corpus: Corpus, params: dict[str, float], *, keyframes: bool = False,
                 by_variant: bool = False) -> dict[str, Score]:
    scores: dict[str, Score] = {"all": Score()}
    for index, name, frames, key_frames in corpus.candidates:
        chosen = key_frames if keyframes else frames
        for reg_index, registered in enumerate(corpus.registered):
            got = _match(registered, chosen, params).matched
            expected = index == reg_index
            scores["all"].add(expected, got)
            if by_variant:
                scores.setdefault(name, Score()).add(expected, got)
    return scores


def score_images(corpus: Corpus, *, method: str, threshold: int, by_variant: bool = False) -> dict[str, Score]:
    scores: dict[str, Score] = {"all": Score()}
    for index, name, candidate in corpus.image_candidates:
        for reg_index, registered in enumerate(corpus.images):
            if method == "phash":
                got = media.hamming(registered.image_phash or 0, candidate.image_phash or 0) <= threshold
            elif method == "pdq":
                got = media.hamming(registered.image_pdq or b"", candidate.image_pdq or b"") <= threshold
            else:
                got = media.match_image(registered, candidate, threshold).matched
            expected = index == reg_index
            scores["all"].add(expected, got)
            if by_variant:
                scores.setdefault(name, Score()).add(expected, got)
    return scores


def report_match(corpus: Corpus) -> None:
    defaults: dict[str, float] = {"threshold": media.DEFAULT_FRAME_THRESHOLD, "min_frames": media.DEFAULT_MIN_FRAMES,
                "min_ratio": media.DEFAULT_MIN_RATIO, "offset_tolerance": media.DEFAULT_OFFSET_TOLERANCE}
    print(f"\n## Videos at the defaults {defaults}\n")
    print(HEADER.format("alteration"))
    scores = score_videos(corpus, defaults, by_variant=True)
    for name, score in scores.items():
        print(score.row(name))
    print("\n### Videos, key frames only on the candidate side (informational)\n")
    print(HEADER.format("alteration"))
    for name, score in score_videos(corpus, defaults, keyframes=True, by_variant=True).items():
        print(score.row(name))
    print("\n### Video threshold sweep (all alterations)\n")
    print(HEADER.format("threshold / min_frames / min_ratio"))
    for threshold in (6, 8, 10, 12, 14, 16):
        for min_frames in (2, 3, 4):
            params = dict(defaults, threshold=threshold, min_frames=min_frames)
            print(score_videos(corpus, params)["all"].row(f"{threshold} / {min_frames} / {params['min_ratio']}"))
    for min_ratio in (0.5, 0.7):
        params = dict(defaults, min_ratio=min_ratio)
        print(score_videos(corpus, params)["all"].row(f"{params['threshold']} / {params['min_frames']} / "
                                                        f"{min_ratio}"))
    positives = [(_match(corpus.registered[index], frames, defaults), name)
                 for index, name, frames, _ in corpus.candidates if index is not None]
    worst = min(positives, key=lambda m: m[0].matched_frames / max(1, m[0].expected_frames))
    negatives = [_match(reg, frames, defaults)
                 for index, _, frames, _ in corpus.candidates for i, reg in enumerate(corpus.registered)
                 if i != index]
    strongest = max(negatives, key=lambda m: (m.matched_frames, m.matched_frames / max(1, m.expected_frames)))
    print(f"\nweakest true match: {worst[1]}, {worst[0].matched_frames}/{worst[0].expected_frames} frames; "
          f"strongest non-match: {strongest.matched_frames}/{strongest.expected_frames} frames "
          f"(distances {list(strongest.distances)})")
    pdq = all(i.image_pdq is not None for i in corpus.images)
    default = f"pHash <= {media.DEFAULT_IMAGE_PHASH_THRESHOLD}" + (
        f" or PDQ <= {media.DEFAULT_PDQ_THRESHOLD}" if pdq else " (pdqhash not installed)")
    print(f"\n## Images at the default (match_image: {default})\n")
    print(HEADER.format("alteration"))
    for name, score in score_images(corpus, method="default", threshold=media.DEFAULT_IMAGE_PHASH_THRESHOLD,
                                    by_variant=True).items():
        print(score.row(name))
    print("\n### Image threshold sweep\n")
    print(HEADER.format("hash <= threshold"))
    for threshold in (4, 6, 8, 10, 12, 14, 16):
        print(score_images(corpus, method="phash", threshold=threshold)["all"].row(f"pHash <= {threshold}"))
    if pdq:
        for threshold in (16, 24, 31, 40, 50, 63):
            print(score_images(corpus, method="pdq", threshold=threshold)["all"].row(f"PDQ <= {threshold}"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", action="store_true", help="fingerprint speed vs sha256sum")
    parser.add_argument("--match", action="store_true", help="precision/recall of the perceptual matcher")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", type=int, default=50, help="distinct source videos (and images)")
    parser.add_argument("--decoys", type=int, default=None, help="decoy videos and images (default corpus/2)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated files here")
    args = parser.parse_args(argv)
    if not (args.speed or args.match):
        args.speed = args.match = True
    if args.match and not media.ffmpeg_available():
        parser.error("ffmpeg is needed for --match (pip install imageio-ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="p2pwatch-bench-") as temp:
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.speed:
            bench_speed(workdir, args.size_mib, args.runs)
        if args.match:
            decoys = args.decoys if args.decoys is not None else max(1, args.corpus // 2)
            report_match(build_corpus(workdir, args.corpus, decoys, args.jobs))


if __name__ == "__main__":
    main()
