"""The status page's charts: the history ring drawn as inline SVG, built as strings on the server.

Owns: the chart list (messages received/s, events delivered/s, backlog depth, oldest waiting age, API latency, API
errors by class, dead letters), their geometry (a `viewBox` with `width="100%"`, so a chart fills a phone's width as
well as a desktop column), axis min/max and time labels, legends, the "collecting…" placeholder, and the downsampling
that keeps a chart at most `MAX_POINTS` points whatever the sample interval. Every text is escaped; no script, no
external asset (plants are often offline). Must not read the bridge: it draws the samples it is given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from mqtt_bridge.observe.history import ERROR_CLASSES, LATENCY_OPERATIONS, HistorySample

__all__ = ["COLLECTING", "MAX_POINTS", "Series", "render_chart", "render_charts"]

COLLECTING = "collecting…"
MAX_POINTS = 360  # a phone is ~360 CSS px wide: more points than that draw nothing more
_W, _H = 320, 120  # the viewBox
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 6, 6, 16  # the plot area's margins inside it (room for the labels)
_COLORS = ("#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#57606a")

Reduce = Callable[[list[float]], float]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: a name for the legend and a value per sample (None: nothing measured then)."""

    name: str
    values: tuple[float | None, ...]


def _downsample(times_s: Sequence[float], series: Sequence[Series], reduce: Reduce,
                max_points: int) -> tuple[list[float], list[Series]]:
    """At most `max_points` per series: consecutive samples merged (`reduce` of the measured ones, at the last time)."""
    step = max(1, math.ceil(len(times_s) / max_points))
    if step == 1:
        return list(times_s), list(series)
    starts = range(0, len(times_s), step)
    times = [times_s[min(start + step, len(times_s)) - 1] for start in starts]
    merged: list[Series] = []
    for line in series:
        values: list[float | None] = []
        for start in starts:
            measured = [v for v in line.values[start:start + step] if v is not None]
            values.append(reduce(measured) if measured else None)
        merged.append(Series(line.name, tuple(values)))
    return times, merged


def _nice_ceiling(value: float) -> float:
    """The axis top: the smallest 1, 2, 2.5 or 5 times a power of ten that is at least `value` (1 for 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= factor * power * (1 + 1e-9):
            return factor * power
    return 10.0 * power


def _number(value: float) -> str:
    """A short label: 12, 2.5, 0.35, 250, 12k, 3.4M."""
    if value >= 1e6:
        return f"{value / 1e6:.2g}M" if value < 1e7 else f"{value / 1e6:.0f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def _clock(at_s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at_s))


def _runs(points: list[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """The unbroken stretches of a line (a None sample breaks it)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(point)
    return [run for run in runs if run]


def render_chart(chart_id: str, title: str, unit: str, times_s: Sequence[float], series: Sequence[Series], *,
                 reduce: Reduce = _mean, empty_text: str = "no data in this window", has_legend: bool = False,
                 max_points: int = MAX_POINTS) -> str:
    """Draw one chart as a `<figure>` holding an inline `<svg>`: a line per series, y from 0 to a round maximum.

    Fewer than two samples draw no axis but say `COLLECTING`; samples with nothing measured say `empty_text`. A
    legend names the series when there are several, or always with `has_legend` (e.g. the error classes).
    """
    caption = f"{title} ({unit})"
    head = f'<figure class="chart" id="{escape(chart_id)}"><figcaption>{escape(caption)}'
    measured = [v for line in series for v in line.values if v is not None]
    if len(times_s) < 2 or not measured:
        text = COLLECTING if len(times_s) < 2 else empty_text
        return f'{head}</figcaption><p class="collecting">{escape(text)}</p></figure>'
    latest = series[0].values[-1] if len(series) == 1 and series[0].values else None
    now = "" if latest is None else f' <span class="now">now {escape(_number(latest))}</span>'
    times, lines = _downsample(times_s, series, reduce, max_points)
    top = _nice_ceiling(max(measured))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(index: int) -> float:
        # by position, not by time: samples come at a fixed interval, and a wall clock that is stepped (NTP on a
        # box without a real-time clock) must not fold the line back; the labels show the first and last time
        return _LEFT + index / (len(times) - 1) * plot_w

    def y(value: float) -> float:
        return _TOP + plot_h - min(max(value, 0.0), top) / top * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="100%" role="img" '
             f'aria-label="{escape(caption)}" font-size="10" font-family="system-ui,sans-serif">',
             f"<title>{escape(caption)}</title>",
             f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa" stroke="#d0d7de"/>',
             f'<text class="ymax" x="{_LEFT - 3}" y="{_TOP + 8}" text-anchor="end">{escape(_number(top))}</text>',
             f'<text class="ymin" x="{_LEFT - 3}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
             f'<text class="xmin" x="{_LEFT}" y="{_H - 3}">{escape(_clock(times[0]))}</text>',
             f'<text class="xmax" x="{_W - _RIGHT}" y="{_H - 3}" text-anchor="end">'
             f"{escape(_clock(times[-1]))} UTC</text>"]
    legend: list[str] = []
    for index, line in enumerate(lines):
        color = _COLORS[index % len(_COLORS)]
        points = [None if v is None else (x(i), y(v)) for i, v in enumerate(line.values)]
        for run in _runs(points):
            if len(run) == 1:
                parts.append(f'<circle cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="1.8" fill="{color}"/>')
            else:
                coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
                parts.append(f'<polyline data-series="{escape(line.name)}" points="{coords}" fill="none" '
                             f'stroke="{color}" stroke-width="1.5" stroke-linejoin="round"/>')
        if has_legend or len(lines) > 1:
            legend.append(f'<span class="key"><i style="background:{color}"></i>{escape(line.name)}</span>')
    parts.append("</svg>")
    keys = f'<div class="legend">{"".join(legend)}</div>' if legend else ""
    return f"{head}{now}</figcaption>{''.join(parts)}{keys}</figure>"


def _errors(samples: Sequence[HistorySample]) -> list[Series]:
    """One line per error class seen in the window; a single zero line when there was none."""
    lines = [Series(name, tuple(s.api_errors_per_min[index] for s in samples))
             for index, name in enumerate(ERROR_CLASSES)]
    seen = [line for line in lines if any(v for v in line.values)]
    return seen or [Series("any class", tuple(0.0 for _ in samples))]


def render_charts(samples: Sequence[HistorySample]) -> str:
    """Every chart of the status page's "Last hour" section, from the samples (oldest first)."""
    times = [s.at_s for s in samples]

    def one(name: str, values: Sequence[float | None]) -> list[Series]:
        return [Series(name, tuple(values))]

    latency = [Series(op, tuple(s.api_latency_ms[index] for s in samples))
               for index, op in enumerate(LATENCY_OPERATIONS)]
    latency = [line for line in latency if any(v is not None for v in line.values)] or latency[:1]
    return "".join((
        render_chart("chart-received", "Messages received", "msg/s", times,
                     one("received", [s.received_per_s for s in samples])),
        render_chart("chart-delivered", "Events delivered", "events/s", times,
                     one("delivered", [s.delivered_per_s for s in samples])),
        render_chart("chart-backlog", "Backlog depth", "events", times,
                     one("waiting", [s.backlog_depth for s in samples]), reduce=max),
        render_chart("chart-oldest", "Oldest waiting", "s", times,
                     one("oldest", [s.oldest_age_s for s in samples]), reduce=max),
        render_chart("chart-latency", "API latency, mean per interval", "ms", times, latency,
                     empty_text="no API request in this window", has_legend=True),
        render_chart("chart-errors", "API errors by class", "per min", times, _errors(samples), has_legend=True),
        render_chart("chart-dead", "Dead letters", "per min", times,
                     one("dead letters", [s.dead_letters_per_min for s in samples])),
    ))
