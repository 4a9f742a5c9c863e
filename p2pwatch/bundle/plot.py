"""The swarm timeline of a bundle: peer counts over time as a small PNG line chart, drawn by hand.

No plotting library is needed (matplotlib is heavy and not a dependency): the chart is an RGB raster drawn
with Bresenham lines and a 3x5 pixel font for the axis numbers, written as a PNG (RFC 2083) with ``zlib`` and
``struct``. One line per (torrent, source); the legend (colour, number, torrent, source) is returned for the
report, and the numbers are drawn beside the colour swatches in the image. Same samples, same bytes.
"""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime
from typing import Any

WIDTH, HEIGHT = 960, 380
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 20, 50
BACKGROUND, AXIS, GRID, TEXT = (255, 255, 255), (60, 60, 60), (225, 225, 225), (40, 40, 40)
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
_FONT = {  # 3x5 glyphs, rows top to bottom, 3 bits each
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 1, 1),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), "-": (0, 0, 7, 0, 0), ":": (0, 2, 0, 2, 0),
    ".": (0, 0, 0, 0, 2), " ": (0, 0, 0, 0, 0),
}


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(BACKGROUND) * (width * height))

    def set(self, x: int, y: int, colour: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(colour)

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int]) -> None:
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                self.set(x, y, colour)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int], width: int = 1) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.rect(x0, y0, x0 + width - 1, y0 + width - 1, colour)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, text: str, colour: tuple[int, int, int] = TEXT, scale: int = 2) -> None:
        for ch in text:
            for row, bits in enumerate(_FONT.get(ch, _FONT[" "])):
                for col in range(3):
                    if bits & (4 >> col):
                        self.rect(x + col * scale, y + row * scale, x + col * scale + scale - 1,
                                  y + row * scale + scale - 1, colour)
            x += 4 * scale

    def png(self) -> bytes:
        stride = 3 * self.width
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + \
            chunk(b"IEND", b"")


def text_width(text: str, scale: int = 2) -> int:
    return 4 * scale * len(text)


def _seconds(value: Any) -> float:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.timestamp()


def sample_count(sample: dict[str, Any]) -> int | None:
    """Peers seen in one sample: ``peers``, else ``dht_peers``, else seeders + leechers."""
    for name in ("peers", "dht_peers"):
        if isinstance(sample.get(name), int):
            return int(sample[name])
    parts = [sample.get("seeders"), sample.get("leechers")]
    if any(isinstance(p, int) for p in parts):
        return sum(p for p in parts if isinstance(p, int))
    return None


def _label_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def render_timeline(samples: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    """The chart (PNG bytes) and its legend ``[{"number", "colour", "infohash", "source", "samples"}]``."""
    series: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for s in samples:
        count = sample_count(s)
        if count is None or s.get("at") is None:
            continue
        series.setdefault((str(s.get("infohash", "")), str(s.get("source", ""))), []).append((_seconds(s["at"]), count))
    canvas = Canvas(WIDTH, HEIGHT)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    points = [p for values in series.values() for p in values]
    t_min = min((t for t, _ in points), default=0.0)
    t_max = max((t for t, _ in points), default=1.0)
    t_max = t_max if t_max > t_min else t_min + 1
    top = max((c for _, c in points), default=1)
    step = max(1, -(-top // 4))
    top = step * 4
    for i in range(5):
        y = y1 - (y1 - y0) * i // 4
        canvas.line(x0, y, x1, y, GRID)
        label = str(step * i)
        canvas.text(x0 - 8 - text_width(label), y - 5, label)
    canvas.line(x0, y0, x0, y1, AXIS)
    canvas.line(x0, y1, x1, y1, AXIS)
    if points:
        canvas.text(x0, y1 + 12, _label_time(t_min))
        end = _label_time(t_max)
        canvas.text(x1 - text_width(end), y1 + 12, end)

    def place(t: float, c: int) -> tuple[int, int]:
        return (x0 + round((x1 - x0) * (t - t_min) / (t_max - t_min)), y1 - round((y1 - y0) * c / top))

    legend = []
    for number, key in enumerate(sorted(series), start=1):
        colour = COLOURS[(number - 1) % len(COLOURS)]
        values = sorted(series[key])
        previous = None
        for t, c in values:
            here = place(t, c)
            if previous is not None:
                canvas.line(*previous, *here, colour, width=2)
            canvas.rect(here[0] - 1, here[1] - 1, here[0] + 1, here[1] + 1, colour)
            previous = here
        if number <= 20:
            ly = y0 + (number - 1) * 16
            canvas.rect(x1 + 20, ly, x1 + 34, ly + 10, colour)
            canvas.text(x1 + 42, ly, str(number))
        legend.append({"number": number, "colour": "#{:02x}{:02x}{:02x}".format(*colour), "infohash": key[0],
                       "source": key[1], "samples": len(values)})
    return canvas.png(), legend
