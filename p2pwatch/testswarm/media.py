"""Synthetic media for tests and benchmarks (scripts/bench_*.py, triage_corpus.py): ffmpeg lavfi sources only
(no real content is ever used or kept).

Videos are built from two or three segments of generated sources (mandelbrot, life, cellauto, gradients,
sierpinski, zoneplate, geq patterns) with seed-dependent parameters, so that each has scene cuts and no two
seeds look alike. Variants (scaled, re-encoded at a given CRF, trimmed, remuxed into Matroska) and images
(a still of a source, resized and recompressed with Pillow) are derived from them. Everything is written
under a caller-given directory (pytest's ``tmp_path``).
"""

from __future__ import annotations

import math
import random
import subprocess
from pathlib import Path

from PIL import Image

from p2pwatch.errors import MediaError
from p2pwatch.match.media import ffmpeg_available, ffmpeg_exe

SIZE = "320x240"
RATE = 10


def have_ffmpeg() -> bool:
    return ffmpeg_available()


def run_ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; raise with its last lines on failure."""
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MediaError(f"ffmpeg failed: {' '.join(args)[:300]}: {done.stderr[-500:]}")


def source_spec(rng: random.Random, size: str = SIZE, rate: int = RATE) -> str:
    """One lavfi source graph with random parameters (a few families, each varied)."""
    family = rng.choice(["mandelbrot", "life", "cellauto", "gradients", "sierpinski", "zoneplate", "geq"])
    common = f"s={size}:r={rate}"
    if family == "mandelbrot":  # a random point of the main cardioid's or the period-2 bulb's boundary
        theta = rng.uniform(0, 2 * math.pi)
        if rng.random() < 0.7:
            x = math.cos(theta) / 2 - math.cos(2 * theta) / 4
            y = math.sin(theta) / 2 - math.sin(2 * theta) / 4
        else:
            x, y = -1 + math.cos(theta) / 4, math.sin(theta) / 4
        scale = rng.uniform(0.02, 0.4)
        outer = rng.choice(["iteration_count", "normalized_iteration_count", "outz"])
        return (f"mandelbrot={common}:start_x={x:.9f}:start_y={y:.9f}:start_scale={scale:.4f}"
                f":end_scale={scale * rng.uniform(0.01, 0.3):.6f}:outer={outer}:maxiter=1024"
                f",hue=h={rng.randint(0, 359)}")
    if family == "life":
        rule = rng.choice(["B3/S23", "B36/S23", "B3678/S34678", "B368/S245", "B34/S34"])
        return (f"life={common}:seed={rng.randint(0, 2**31)}:ratio={rng.uniform(0.1, 0.6):.2f}:rule={rule}"
                f":mold={rng.randint(0, 50)}:life_color=#{rng.randint(0x404040, 0xFFFFFF):06x}"
                f":death_color=#{rng.randint(0, 0x202020):06x},boxblur={rng.randint(1, 3)}")
    if family == "cellauto":
        return (f"cellauto={common}:rule={rng.choice([18, 22, 30, 45, 73, 90, 105, 110, 150])}"
                f":seed={rng.randint(0, 2**31)}:random_fill_ratio={rng.uniform(0.2, 0.8):.2f}"
                f":scroll={rng.choice([0, 1])},boxblur=2")
    if family == "gradients":
        return (f"gradients={common}:seed={rng.randint(0, 2**31)}:speed={rng.uniform(0.01, 0.08):.3f}"
                f":nb_colors={rng.randint(3, 8)}:type={rng.randint(0, 4)}")
    if family == "sierpinski":  # the fractal is fixed: a random window and rotation make views differ
        width, height = (int(v) for v in size.split("x"))
        return (f"sierpinski=s={3 * width}x{3 * height}:r={rate}:seed={rng.randint(0, 2**31)}"
                f":jump={rng.randint(1, 10)}:type={rng.choice(['carpet', 'triangle'])}"
                f",crop={width}:{height}:{rng.randint(0, 2 * width)}:{rng.randint(0, 2 * height)}"
                f",rotate={rng.uniform(0, 6.28):.2f},hue=h={rng.randint(0, 359)}")
    if family == "zoneplate":  # kept at low spatial frequencies, like natural pictures
        return (f"zoneplate={common}:k0={rng.randint(0, 200)}:kx={rng.randint(-20, 20)}"
                f":ky={rng.randint(-20, 20)}:kt={rng.randint(1, 30)}:kxt={rng.randint(-4, 4)}"
                f":kx2={rng.randint(4, 20)}:ky2={rng.randint(4, 20)}:kxy={rng.randint(-5, 5)},boxblur=2")
    a, b, c, d = (rng.uniform(4, 40), rng.uniform(0.2, 3), rng.uniform(4, 40), rng.uniform(0.2, 3))
    return (f"color=c=gray:{common},geq=lum='128+90*sin(X/{a:.2f}+T*{b:.2f})*cos(Y/{c:.2f}-T*{d:.2f})"
            f"+30*sin((X+Y)/{rng.uniform(10, 60):.2f})':cb=128:cr=128")


def make_video(path: Path, seed: int, *, seconds: float = 12.0, segments: int = 3, size: str = SIZE,
               rate: int = RATE, crf: int = 18) -> Path:
    """An H.264 video of ``segments`` generated scenes (MP4/MKV by ``path``'s suffix)."""
    rng = random.Random(seed)
    inputs: list[str] = []
    for _ in range(segments):
        inputs += ["-f", "lavfi", "-t", f"{seconds / segments:.3f}", "-i", source_spec(rng, size, rate)]
    labels = "".join(f"[{i}:v]" for i in range(segments))
    graph = f"{labels}concat=n={segments}:v=1:a=0,format=yuv420p[v]"
    run_ffmpeg(*inputs, "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast",
               "-crf", str(crf), "-g", str(rate * 2), str(path))
    return path


def transcode(src: Path, dst: Path, *, width: int | None = None, crf: int = 23, start: float | None = None,
              duration: float | None = None, codec: str = "libx264") -> Path:
    """Re-encode ``src``: optionally scaled to ``width`` (aspect kept), trimmed, at ``crf`` (or mpeg4 q)."""
    args: list[str] = []
    if start is not None:
        args += ["-ss", f"{start:.3f}"]
    if duration is not None:
        args += ["-t", f"{duration:.3f}"]
    args += ["-i", str(src)]
    if width is not None:
        args += ["-vf", f"scale={width}:-2"]
    if codec == "mpeg4":
        args += ["-c:v", "mpeg4", "-q:v", str(max(2, min(31, crf // 3)))]
    else:
        args += ["-c:v", codec, "-preset", "veryfast", "-crf", str(crf)]
    run_ffmpeg(*args, "-an", str(dst))
    return dst


def remux(src: Path, dst: Path, *, start: float | None = None, duration: float | None = None) -> Path:
    """Copy the streams into another container (``dst``'s suffix), optionally cut at key frames."""
    args = ["-ss", f"{start:.3f}"] if start is not None else []
    args += ["-t", f"{duration:.3f}"] if duration is not None else []
    run_ffmpeg(*args, "-i", str(src), "-c", "copy", str(dst))
    return dst


def make_image(path: Path, seed: int, *, size: str = SIZE) -> Path:
    """A still of a generated source (PNG/JPEG by suffix)."""
    rng = random.Random(seed)
    spec = source_spec(rng, size)
    run_ffmpeg("-f", "lavfi", "-i", spec, "-ss", f"{rng.uniform(0.5, 3.0):.2f}", "-frames:v", "1", str(path))
    return path


def resize_recompress(src: Path, dst: Path, *, scale: float = 0.5, quality: int = 70) -> Path:
    """Resize with Pillow and save as JPEG/WebP/PNG (by suffix) at ``quality``."""
    with Image.open(src) as image:
        rgb = image.convert("RGB")
        resized = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                             Image.Resampling.BICUBIC)
        resized.save(dst, quality=quality)
    return dst
