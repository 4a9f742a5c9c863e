"""The peer-count timeline as an inline SVG (issue 14), drawn on the server: no script, no image request.

The same series as the bundle's timeline.png (p2pwatch.bundle.plot: one line per source, counts from
``sample_count``), with axis times in the configured zone. Text is escaped; the SVG is safe to inline.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from p2pwatch.bundle.plot import COLOURS, sample_count
from p2pwatch.locale import local_time

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 150, 14, 40


def _seconds(value: Any) -> float:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def timeline_svg(samples: list[dict[str, Any]], *, time_zone: str, title: str, empty_text: str) -> str:
    series: dict[str, list[tuple[float, int]]] = {}
    for s in samples:
        count = sample_count(s)
        if count is not None and s.get("at") is not None:
            series.setdefault(str(s.get("source", "")), []).append((_seconds(s["at"]), count))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
             f"<title>{escape(title)}</title>", f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>']
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    points = [p for values in series.values() for p in values]
    if not points:
        parts.append(f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle" fill="#666">'
                     f"{escape(empty_text)}</text></svg>")
        return "".join(parts)
    t_min, t_max = min(t for t, _ in points), max(t for t, _ in points)
    t_max = t_max if t_max > t_min else t_min + 1
    step = max(1, -(-max(c for _, c in points) // 4))
    top = step * 4
    for i in range(5):
        y = y1 - (y1 - y0) * i / 4
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{step * i}</text>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#444"/>'
                 f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#444"/>')
    short = t_max - t_min < 3600  # within an hour the minutes alone would repeat
    for t, anchor, x in ((t_min, "start", x0), (t_max, "end", x1)):
        label = local_time(datetime.fromtimestamp(t, UTC), time_zone, seconds=short)
        parts.append(f'<text x="{x}" y="{y1 + 16}" text-anchor="{anchor}">{escape(label)}</text>')

    def place(t: float, c: int) -> str:
        return f"{x0 + (x1 - x0) * (t - t_min) / (t_max - t_min):.1f},{y1 - (y1 - y0) * c / top:.1f}"

    for number, source in enumerate(sorted(series)):
        colour = "#{:02x}{:02x}{:02x}".format(*COLOURS[number % len(COLOURS)])
        values = sorted(series[source])
        coords = " ".join(place(t, c) for t, c in values)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        parts.extend(f'<circle cx="{xy.split(",")[0]}" cy="{xy.split(",")[1]}" r="2.5" fill="{colour}"/>'
                     for xy in coords.split())
        ly = y0 + number * 18
        label = source if len(source) <= 22 else source[:21] + "…"
        parts.append(f'<rect x="{x1 + 12}" y="{ly}" width="12" height="10" fill="{colour}"/>'
                     f'<text x="{x1 + 30}" y="{ly + 9}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
