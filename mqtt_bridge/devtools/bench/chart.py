"""The benchmark's chart: median events/s per system in drain and max mode, as a PNG beside the JSON results.

Owns: the drawing (Pillow, which the product uses only in `images.checks`); the figures are `devtools.bench.report`'s.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from mqtt_bridge.devtools.bench.report import SYSTEMS, Summary

__all__ = ["draw_chart"]


def draw_chart(summary: Summary, path: Path) -> None:
    """A bar chart of the median events/s per system, drain and max modes, as a PNG at `path`."""

    modes = [m for m in ("drain", "max") if m in summary]
    systems = [s for s in SYSTEMS if any(s in summary[m] for m in modes)]
    width, height, margin = 900, 360, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    peak = max([v["events_per_s"] or 0 for m in modes for v in summary[m].values()] + [1])
    colors = dict(zip(SYSTEMS, [(31, 119, 180), (110, 170, 220), (255, 127, 14), (255, 187, 120), (120, 120, 120),
                                (190, 190, 190)], strict=True))
    group_w = (width - 2 * margin) / max(1, len(modes))
    bar_w = (group_w - 40) / max(1, len(systems))
    for gi, mode in enumerate(modes):
        for si, system in enumerate(systems):
            value = summary[mode].get(system, {}).get("events_per_s") or 0
            x0 = margin + gi * group_w + 20 + si * bar_w
            y0 = height - margin - (height - 2 * margin) * value / peak
            draw.rectangle((x0, y0, x0 + bar_w - 6, height - margin), fill=colors[system])
            draw.text((x0, y0 - 14), f"{value / 1000:,.1f}k", fill="black")
        draw.text((margin + gi * group_w + group_w / 2 - 20, height - margin + 8), mode, fill="black")
    for si, system in enumerate(systems):
        draw.rectangle((margin + si * 135, 12, margin + si * 135 + 12, 24), fill=colors[system])
        draw.text((margin + si * 135 + 16, 12), system, fill="black")
    draw.text((margin, height - 20), "events/s (median), higher is better", fill="black")
    image.save(path)
