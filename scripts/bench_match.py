"""Bytes the matcher fetches per method, and the precision/recall of the perceptual stage through the lazy view.

    python scripts/bench_match.py                  # the bytes table (about 5 minutes on 2 cores)
    python scripts/bench_match.py --corpus 50      # plus precision/recall on a 50-source corpus (+10 min)
    python scripts/bench_match.py --corpus 8 --no-bytes   # a quick precision/recall run

Bytes (libtorrent seeding on loopback, the matcher reading through a TorrentReader as ``p2pwatch lookup``
does, a fresh reader per run so nothing is cached; payload bytes as libtorrent counts them; medians of
``runs``): a synthetic 720p H.264 video of at least ``size-mb`` MB (lavfi scenes, x264 ultrafast with B-frames
at ``bitrate``, GOP 250), for every piece size: libtorrent's automatic choice (what qBittorrent and Deluge
use) and 1 and 4 MiB:

* ``exact-metadata``: the registered file as a single-file v1 torrent (the piece table proves it);
* ``exact-piece``: the same file behind a small text file in an unaligned multi-file v1 torrent;
* ``perceptual``: a torrent of the 720p encode, the registered content being a 640x360 encode of the same
  source; MP4 with the index at the end (ffmpeg's default) and with ``-movflags +faststart``; and the cost of
  ruling it out when the registry holds only another video (no match).

Precision/recall: ``corpus`` generated source videos and images are registered (fingerprint_file), and every
alteration of scripts/bench_fingerprint.py (scaled, re-encoded at several qualities, MPEG-4 Part 2, trimmed,
remuxed into Matroska, trimmed and remuxed; images resized and recompressed) plus ``corpus / 2`` decoys goes
through ``perceptual_matches`` exactly as in a lookup: a single-file torrent of 16 KiB pieces, served by a
file-backed piece source through the lazy view to ffmpeg. Each candidate is compared with every registered
item of its kind; a comparison is positive when the candidate derives from that item.

Measured on 2 shared cores (``--runs 3``, two runs, each generating its own video, hence the ranges; with
the byte budget of p2pwatch/match/perceptual.py: 3 % of the file, floor of 3 seek points; with the lazy view fetching
a piece only once ffmpeg took the one before, docs/DECISIONS.md): a 197 MB, 345 s, 4.6 Mbit/s 720p video, one
seeder (corpus figures: ``--corpus 20``, issue 4):

| method | torrent | piece | bytes fetched | of the file | budget |
| --- | --- | --- | --- | --- | --- |
| exact-metadata | single-file v1 | any | 0 | 0 % | |
| exact-piece | behind readme.txt | 256 KiB / 1 MiB / 4 MiB | 1 piece | 0.13 / 0.53 / 2.13 % | |
| perceptual, match | mp4, index at end | 256 KiB | 2.49-2.62 MB (10 pieces, 3 of 5 points) | 1.27-1.33 % | kept |
| perceptual, match | mp4, faststart | 256 KiB | 2.88-3.15 MB (11-12 pieces, 4 of 6 points) | 1.47-1.60 % | kept |
| perceptual, ruled out | mp4, index at end | 256 KiB | 2.49-2.88 MB | 1.27-1.46 % | kept |
| perceptual, match | index at end / faststart | 1 MiB | 3.3-5.2 / 4.2 MB (4-5 / 4 pieces) | 1.67-2.66 / 2.13 % | kept |
| perceptual, match | index at end / faststart | 4 MiB | 15.9-16.8 / 12.6 MB (4 / 3 pieces) | 8.1-8.5 / 6.4 % | over |

Every row matched (or ruled out) as expected. "over": the floor of seek points does not fit (the head and the
index alone are 2 of the budget's 1.4 pieces at 4 MiB): it is read anyway and the proof's ``budget``
says so (docs/DECISIONS.md). Each seek point costs the key frame and the dozen packets ffmpeg reads ahead
(about 0.7 MB here), rounded up to whole pieces; the index and the first piece come on top, and when the budget
binds the first point is the start of the video, which the probe has fetched already. Corpus (20 sources,
8 alterations each, 10 decoys; 3,240 non-matching video comparisons), 16 KiB pieces: videos 157 TP / 0 FP /
3 FN (precision 100 %, recall 98.1 %; the misses are 6 s trimmed clips) at frame threshold 6, 8 and 10; images
80 / 0 / 0. Held to the floor of 3 seek points (budget 0) the videos give 148 / 0 / 12 (100 %, 92.5 %): short
trimmed clips need more points, which their size always affords (the budget is at least 4 MiB). The corpus
files are 100-300 KB, so those reads cover them whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("P2PWATCH_NETGUARD_ALLOW", "127.0.0.0/8")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from bench_fingerprint import Score  # one precision/recall tally for both benchmarks

from p2pwatch.match import media
from p2pwatch.match.fingerprint import Fingerprint, fingerprint_file
from p2pwatch.match.matcher import RegisteredContent, RegistryIndex, match_torrent
from p2pwatch.match.perceptual import PerceptualSettings, perceptual_matches
from p2pwatch.testswarm import media as mf
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent

MiB = 1024 * 1024


# --- a file-backed piece source (the corpus runs need no swarm) ------------------------------------------

class FilePieceSource:
    """Pieces of a single-file torrent read from the file itself; ``downloaded`` counts distinct pieces."""

    def __init__(self, path: Path, piece_length: int) -> None:
        self.path = path
        self.piece_length = piece_length
        self.size = path.stat().st_size
        self.pieces: set[int] = set()

    async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, Any]:
        out = {}
        with open(self.path, "rb") as handle:
            for index in wanted:
                handle.seek(index * self.piece_length)
                out[index] = handle.read(self.piece_length)
                self.pieces.add(index)
        return out

    def downloaded(self) -> int:
        return sum(min(self.piece_length, self.size - i * self.piece_length) for i in self.pieces)


def single_file_torrent(path: Path, piece_length: int, name: str | None = None) -> Metainfo:
    return parse_torrent(make_v1_torrent(name or path.name, [(name or path.name, path)], piece_length=piece_length,
                                         single_file=True))


# --- the large video ------------------------------------------------------------------------------------

def make_large_video(workdir: Path, size_mb: int, bitrate_mbps: float, seed: int = 1) -> tuple[Path, Path, Path]:
    """A 1280x720 25 fps video of at least ``size_mb`` MB (x264 ultrafast, B-frames, GOP 250, index at the end),
    its faststart remux, and a 640x360 encode of the same source (the registered content)."""
    big, faststart, small = workdir / "large.mp4", workdir / "large-faststart.mp4", workdir / "registered.mp4"
    seconds = size_mb * 8 / bitrate_mbps * 1.08
    segments = max(3, int(seconds // 30))
    rng = random.Random(seed)
    inputs: list[str] = []
    for _ in range(segments):
        inputs += ["-f", "lavfi", "-t", f"{seconds / segments:.3f}", "-i", mf.source_spec(rng, "320x180", 25)]
    labels = "".join(f"[{i}:v]" for i in range(segments))
    graph = (f"{labels}concat=n={segments}:v=1:a=0,format=yuv420p,split=2[a][b];"
             f"[a]scale=1280:720:flags=bicubic[big];[b]scale=640:360:flags=area[small]")
    rate = f"{bitrate_mbps:g}M"
    mf.run_ffmpeg(*inputs, "-filter_complex", graph,
                  "-map", "[big]", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "250",
                  "-b:v", rate, "-maxrate", rate, "-bufsize", f"{2 * bitrate_mbps:g}M", str(big),
                  "-map", "[small]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "250", str(small))
    mf.run_ffmpeg("-i", str(big), "-c", "copy", "-movflags", "+faststart", str(faststart))
    return big, faststart, small


def auto_piece_length(size: int) -> int:
    """The piece size libtorrent's create_torrent picks when given 0 (qBittorrent's and Deluge's default)."""
    import libtorrent as lt

    fs = lt.file_storage()
    fs.add_file("x", size)
    return int(lt.create_torrent(fs, 0, flags=lt.create_torrent.v1_only).piece_length())


@dataclass
class Row:
    method: str
    layout: str
    piece_length: int
    file_size: int
    results: list[tuple[int, int, bool, float, dict[str, Any]]] = field(default_factory=list)  # bytes, total...
    failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        fetched = statistics.median(r[0] for r in self.results)
        total = statistics.median(r[1] for r in self.results)
        verdicts = {r[2] for r in self.results}
        verdict = "match" if verdicts == {True} else "no match" if verdicts == {False} else "mixed"
        secs = statistics.median(r[3] for r in self.results)
        extra = self.results[0][4]
        notes = [f"{k} {v}" for k, v in extra.items()]
        if self.failed:
            notes.append(f"{len(self.failed)} more run(s) failed: {self.failed[0][:80]}")
        detail = ", ".join(notes)
        return (f"| {self.method} | {self.layout} | {self.piece_length // 1024} KiB | {fetched:,} | "
                f"{100 * fetched / self.file_size:.2f} % | {fetched / self.piece_length:.1f} | {total:,} | "
                f"{verdict} | {secs:.1f} | {detail} |")


async def _run_reader(index: RegistryIndex, meta: Metainfo, endpoint: tuple[str, int], bind: str,
                      settings: PerceptualSettings) -> tuple[list[Any], int, float]:
    from p2pwatch.probe.bulk_fetch import FetchOptions, open_torrent_reader

    async def perceptual(idx: RegistryIndex, m: Metainfo, source: Any, done: set[tuple[int, str]]) -> list[Any]:
        return await perceptual_matches(idx, m, source, done, settings)

    options = FetchOptions(bind_ip=bind, peers=(endpoint,), allow_local=True, timeout=120)
    started = time.perf_counter()
    async with open_torrent_reader(meta, options) as reader:
        report = await match_torrent(index, meta, reader, perceptual, timeout=120)
        if report.errors:
            raise RuntimeError(f"matcher errors: {report.errors}")
        return report.matches, reader.downloaded(), time.perf_counter() - started


def bench_bytes(workdir: Path, size_mb: int, bitrate: float, runs: int, piece_sizes: Sequence[int]) -> None:
    from p2pwatch.testswarm.localswarm import LocalSwarm

    started = time.perf_counter()
    big, faststart, small = make_large_video(workdir, size_mb, bitrate)
    size = big.stat().st_size
    info = media.probe_video(str(big))
    print(f"\ngenerated {big.name}: {size / 1e6:.0f} MB, {info.width}x{info.height} {info.codec}, "
          f"{info.duration:.0f} s, {8 * size / (info.duration or 1) / 1e6:.1f} Mbit/s; registered "
          f"{small.name}: {small.stat().st_size / 1e6:.1f} MB 640x360; in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    exact_fp = fingerprint_file(big, media=False)
    media_fp = fingerprint_file(small)
    print(f"fingerprints in {time.perf_counter() - started:.0f} s "
          f"({len(media_fp.media.frame_hashes) if media_fp.media else 0} registered frames)")
    other_fp = fingerprint_file(mf.make_video(workdir / "other.mp4", 99, seconds=60.0, size="640x360", rate=25))
    exact_index = RegistryIndex([RegisteredContent(exact_fp.fingerprint_id, "bench", exact_fp)])
    media_index = RegistryIndex([RegisteredContent(media_fp.fingerprint_id, "bench", media_fp)])
    other_index = RegistryIndex([RegisteredContent(other_fp.fingerprint_id, "bench", other_fp)])
    settings = PerceptualSettings()
    readme = workdir / "readme.txt"
    readme.write_text("notes\n" * 1000)
    rows: list[Row] = []
    with LocalSwarm(workdir, extra_settings={"enable_dht": False}) as swarm:
        seeder = swarm.start_session("127.0.0.2", dht=False)
        bind = "127.0.0.3"
        for piece_length in piece_sizes:
            layouts: list[tuple[str, str, bytes, RegistryIndex]] = [
                ("exact-metadata", "single-file v1", make_v1_torrent(big.name, [(big.name, big)],
                                                                     piece_length=piece_length, single_file=True),
                 exact_index),
                ("exact-piece", "behind readme.txt", make_v1_torrent(
                    "pack", [("readme.txt", readme), (big.name, big)], piece_length=piece_length), exact_index),
                ("perceptual", "mp4, index at end", make_v1_torrent(big.name, [(big.name, big)],
                                                                    piece_length=piece_length, single_file=True),
                 media_index),
                ("perceptual", "mp4, faststart", make_v1_torrent(faststart.name, [(faststart.name, faststart)],
                                                                 piece_length=piece_length, single_file=True),
                 media_index),
                ("perceptual", "mp4, index at end, not registered", make_v1_torrent(
                    big.name, [(big.name, big)], piece_length=piece_length, single_file=True), other_index),
            ]
            pack = workdir / "pack"  # the multi-file torrent's data: hard links of the same files
            pack.mkdir(exist_ok=True)
            for name, src in (("readme.txt", readme), (big.name, big)):
                if not (pack / name).exists():
                    os.link(src, pack / name)
            for torrent in {parse_torrent(t).infohash: t for _, _, t, _ in layouts}.values():
                swarm.seed(seeder, torrent, workdir)
            swarm.wait_seeding(timeout=600)
            for method, layout, torrent, index in layouts:
                meta = parse_torrent(torrent)
                row = Row(method, layout, piece_length, size)
                while len(row.results) < runs:
                    try:
                        matches, total, secs = trio.run(_run_reader, index, meta, seeder.endpoint, bind, settings)
                    except RuntimeError as exc:  # a FetchTimeout: the reader never got its peer; retried
                        row.failed.append(str(exc))
                        if len(row.failed) > runs:
                            raise
                        continue
                    wanted = [m for m in matches if m.method == method]
                    fetched = wanted[0].bytes_fetched if wanted else total
                    extra: dict[str, Any] = {}
                    if wanted and method == "perceptual":
                        proof = wanted[0].proof
                        budget = proof["budget"]
                        extra = {"samples": f"{proof['samples']} of {budget['planned_samples']} planned",
                                 "frames matched": proof["matched_frames"], "parts": proof["spread"],
                                 "pieces": proof["pieces_touched"],
                                 "budget": f"{budget['budget_bytes']:,} B"
                                           + (" EXCEEDED (floor of seek points)" if budget["over_budget"] else "")}
                    row.results.append((fetched, total, bool(wanted), secs, extra))
                rows.append(row)
                print(row.line(), flush=True)
    print(f"\n## Bytes fetched per method ({size / 1e6:.0f} MB video, medians of {runs} runs, fresh reader each)\n")
    print("| method | torrent | piece | bytes fetched | of the file | pieces | reader total | verdict | s | detail |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row.line())
    print(f"\nperceptual settings: {settings}")
    print(f"budget: {100 * settings.max_fetch_fraction:g} % of the file (at least {settings.min_fetch_bytes:,} B), "
          f"never fewer than {settings.min_spread} seek points; EXCEEDED marks a video whose floor did not fit "
          "(read anyway, recorded in the proof)")


# --- precision / recall through the lazy view ----------------------------------------------------------------

def build_corpus(workdir: Path, n: int, decoys: int, jobs: int
                 ) -> tuple[list[tuple[str, Fingerprint]], list[tuple[str | None, str, Path]]]:
    from concurrent.futures import ThreadPoolExecutor

    from bench_fingerprint import IMAGE_VARIANTS, VIDEO_VARIANTS

    def job(kind: str, seed: int, register: bool) -> tuple[str, list[tuple[str, Path]]]:
        folder = workdir / f"{kind}{seed}"
        listing = folder / "files.txt"  # a --workdir made earlier is reused
        if listing.exists():
            rows = [line.split(" ") for line in listing.read_text().split("\n")]
            return f"{kind}{seed}", [(name, folder / file) for name, file in rows]
        folder.mkdir(exist_ok=True)
        source = mf.make_video(folder / "source.mp4", seed) if kind == "v" else mf.make_image(folder / "source.png",
                                                                                             seed)
        files = [("decoy" if not register else "source", source)]
        if register:
            variants = VIDEO_VARIANTS if kind == "v" else IMAGE_VARIANTS
            files += [(name, make(source, folder)) for name, make in variants.items()]
        listing.write_text("\n".join(f"{name} {path.name}" for name, path in files))
        return f"{kind}{seed}", files

    specs = ([("v", i, True) for i in range(n)] + [("v", 10_000 + i, False) for i in range(decoys)]
             + [("i", 20_000 + i, True) for i in range(n)] + [("i", 30_000 + i, False) for i in range(decoys)])
    with ThreadPoolExecutor(jobs) as pool:
        made = list(pool.map(lambda s: job(*s), specs))
        registered_files = [(key, files[0][1]) for key, files in made if files[0][0] == "source"]
        fingerprints = list(pool.map(lambda kf: (kf[0], fingerprint_file(kf[1])), registered_files))
    candidates: list[tuple[str | None, str, Path]] = []
    for key, files in made:
        if files[0][0] == "decoy":
            candidates.append((None, "decoy-" + ("video" if key.startswith("v") else "image"), files[0][1]))
        else:
            candidates += [(key, name, path) for name, path in files[1:]]
    return fingerprints, candidates


async def _corpus_matches(index: RegistryIndex, candidates: list[tuple[str | None, str, Path]], jobs: int,
                          settings: PerceptualSettings, piece_length: int
                          ) -> list[tuple[set[str], int, int, float]]:
    results: list[tuple[set[str], int, int, float]] = [(set(), 0, 0, 0.0)] * len(candidates)
    limiter = trio.CapacityLimiter(jobs)

    async def one(i: int, path: Path) -> None:
        async with limiter:
            meta = single_file_torrent(path, piece_length, name=f"candidate{path.suffix}")
            source = FilePieceSource(path, piece_length)
            started = time.perf_counter()
            found = await perceptual_matches(index, meta, source, set(), settings)
            results[i] = ({m.content_id for m in found}, source.downloaded(), source.size,
                          time.perf_counter() - started)

    async with trio.open_nursery() as nursery:
        for i, (_, _, path) in enumerate(candidates):
            nursery.start_soon(one, i, path)
    return results


def bench_corpus(workdir: Path, n: int, decoys: int, jobs: int, piece_length: int, thresholds: Sequence[int]) -> None:
    started = time.perf_counter()
    fingerprints, candidates = build_corpus(workdir, n, decoys, jobs)
    generated = time.perf_counter()
    ids = {key: fp.fingerprint_id for key, fp in fingerprints}
    index = RegistryIndex([RegisteredContent(fp.fingerprint_id, key, fp) for key, fp in fingerprints])
    default = PerceptualSettings()
    print(f"\ncorpus: {n} videos x alterations + {decoys} decoy videos, {n} images x alterations + {decoys} decoy "
          f"images, generated and registered in {generated - started:.0f} s; matched through the lazy view "
          f"({jobs} at a time, {piece_length // 1024} KiB pieces)")
    print(f"\n## Perceptual stage through the lazy view ({default})\n")
    print("| candidates | TP | FP | FN | TN | precision | recall | fetched (median, max) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    by_variant: dict[str, Score] = {}
    for threshold in sorted(set(thresholds) | {default.frame_threshold}):
        settings = dataclasses.replace(default, frame_threshold=threshold)
        began = time.perf_counter()
        results = trio.run(_corpus_matches, index, candidates, jobs, settings, piece_length)
        scores: dict[str, Score] = {"videos": Score(), "images": Score()}
        fractions: dict[str, list[float]] = {"videos": [], "images": []}
        for (key, name, path), (found, fetched, size, _) in zip(candidates, results, strict=True):
            kind = "videos" if path.suffix in (".mp4", ".mkv", ".avi") else "images"
            fractions[kind].append(fetched / size)
            for reg_key, content_id in ids.items():
                if ("videos" if reg_key.startswith("v") else "images") != kind:
                    continue
                expected, got = reg_key == key, content_id in found
                scores[kind].add(expected, got)
                if threshold == default.frame_threshold:
                    by_variant.setdefault(f"{kind[:-1]}: {name}", Score()).add(expected, got)
        for kind in ("videos",) if threshold != default.frame_threshold else ("videos", "images"):
            label = f"{kind}, frame threshold {threshold}" if kind == "videos" else kind
            mark = " (default)" if threshold == default.frame_threshold and kind == "videos" else ""
            took = time.perf_counter() - began
            print(scores[kind].row(label + mark, f"{100 * statistics.median(fractions[kind]):.0f} %, "
                                                 f"{100 * max(fractions[kind]):.0f} %; {took:.0f} s"))
    # every video held to the floor of seek points: what a budget-bound (large-piece) torrent gets
    floor = dataclasses.replace(default, max_fetch_fraction=0.0, min_fetch_bytes=0)
    began = time.perf_counter()
    results = trio.run(_corpus_matches, index, candidates, jobs, floor, piece_length)
    at_floor = Score()
    for (key, _, path), (found, _, _, _) in zip(candidates, results, strict=True):
        if path.suffix in (".mp4", ".mkv", ".avi"):
            for reg_key, content_id in ids.items():
                if reg_key.startswith("v"):
                    at_floor.add(reg_key == key, content_id in found)
    print(at_floor.row(f"videos, budget 0: only the floor of {floor.min_spread} seek points",
                       f"{time.perf_counter() - began:.0f} s"))
    print("\nby alteration, at the defaults:\n")
    print("| alteration | TP | FP | FN | TN | precision | recall | |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, score in sorted(by_variant.items()):
        print(score.row(label, ""))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--bitrate", type=float, default=5.0, help="Mbit/s of the large video")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--piece-kib", type=int, action="append", help="piece sizes (default: auto, 1024, 4096)")
    parser.add_argument("--no-bytes", action="store_true", help="skip the bytes table")
    parser.add_argument("--corpus", type=int, default=0, help="distinct source videos and images (0: skip)")
    parser.add_argument("--decoys", type=int, default=None)
    parser.add_argument("--thresholds", default="6,8,10", help="frame thresholds to compare on the corpus")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated files here")
    args = parser.parse_args(argv)
    if not media.ffmpeg_available():
        parser.error("ffmpeg is needed (pip install imageio-ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="p2pwatch-bench-match-") as temp:
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.no_bytes:
            size = int(args.size_mb * 1e6)
            pieces = [k * 1024 for k in args.piece_kib] if args.piece_kib else [auto_piece_length(size), MiB, 4 * MiB]
            bench_bytes(workdir, args.size_mb, args.bitrate, args.runs, pieces)
        if args.corpus:
            decoys = args.decoys if args.decoys is not None else max(1, args.corpus // 2)
            corpus_dir = workdir / "corpus"
            corpus_dir.mkdir(exist_ok=True)
            bench_corpus(corpus_dir, args.corpus, decoys, args.jobs, 16 * 1024,
                         [int(t) for t in args.thresholds.split(",") if t])


if __name__ == "__main__":
    main()
