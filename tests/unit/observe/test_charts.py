"""The status page's inline SVG charts: valid XML, a point per sample, escaped text, round axes, "collecting…"
before there is data, breaks where nothing was measured, and at most MAX_POINTS points whatever the interval."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mqtt_bridge.observe.charts import COLLECTING, MAX_POINTS, Series, render_chart, render_charts
from mqtt_bridge.observe.history import ERROR_CLASSES, HistorySample

_SVG = "{http://www.w3.org/2000/svg}"
START_S = 1_790_000_000.0


def _parse(fragment: str) -> ET.Element:
    # our own output, parsed to check it is well-formed (ET raises otherwise); no untrusted input here
    return ET.fromstring(f"<div>{fragment}</div>")  # noqa: S314


def _points(figure: ET.Element) -> list[list[tuple[float, float]]]:
    """The (x, y) points of every polyline in a chart, one list per polyline."""
    out = []
    for line in figure.iter(f"{_SVG}polyline"):
        out.append([(float(x), float(y)) for x, y in (pair.split(",") for pair in line.attrib["points"].split())])
    return out


def _chart(values: list[float | None], name: str = "received", **options: object) -> ET.Element:
    times = [START_S + 10.0 * index for index in range(len(values))]
    return _parse(render_chart("chart-x", "Messages received", "msg/s", times, [Series(name, tuple(values))],
                               **options))  # type: ignore[arg-type]


def _text(root: ET.Element, css_class: str) -> str:
    found = [el for el in root.iter() if el.attrib.get("class") == css_class]
    assert len(found) == 1, css_class
    return "".join(found[0].itertext())


def test_charts_draw_one_point_per_sample_in_valid_svg() -> None:
    """Five samples are one polyline of five points, left to right, higher values higher up."""
    root = _chart([0.0, 1.0, 4.0, 2.0, 3.0])
    svg = root.find(f".//{_SVG}svg")
    assert svg is not None and svg.attrib["viewBox"] == "0 0 320 120" and svg.attrib["width"] == "100%"
    (line,) = _points(root)
    assert len(line) == 5
    xs = [x for x, _ in line]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    ys = [y for _, y in line]
    assert ys[2] < ys[4] < ys[3] < ys[1] < ys[0]  # SVG y grows downwards


def test_charts_place_samples_by_position_when_the_wall_clock_steps_back() -> None:
    """A wall clock stepped back between samples (NTP on a box without an RTC) does not fold the line back."""
    times = [START_S, START_S + 10.0, START_S - 3600.0, START_S - 3590.0]
    root = _parse(render_chart("chart-x", "T", "u", times, [Series("s", (1.0, 2.0, 3.0, 4.0))]))
    (line,) = _points(root)
    xs = [x for x, _ in line]
    assert xs == sorted(xs) and len(set(xs)) == 4


def test_charts_axis_labels_are_zero_a_round_maximum_and_the_times() -> None:
    """The y axis runs from 0 to a round value at or above the largest sample; x shows first and last time (UTC)."""
    root = _chart([0.5, 7.3, 2.0])
    assert (_text(root, "ymin"), _text(root, "ymax")) == ("0", "10")
    assert _text(root, "xmin") == "14:13:20"  # START_S: 2026-09-21T14:13:20Z
    assert _text(root, "xmax") == "14:13:40 UTC"
    assert _text(_chart([1.0, 2.2]), "ymax") == "2.5"
    assert _text(_chart([0.0, 0.0]), "ymax") == "1"  # a flat zero line still has an axis


def test_charts_title_carries_the_unit_and_the_latest_value() -> None:
    """The caption names the unit, and a single-line chart shows its latest value."""
    root = _chart([1.0, 2.0, 12.5])
    caption = "".join(root.find(".//figcaption").itertext())  # type: ignore[union-attr]
    assert caption.startswith("Messages received (msg/s)")
    assert _text(root, "now") == "now 12.5"


@pytest.mark.parametrize("values", [[], [3.0]])
def test_charts_say_collecting_before_there_are_two_samples(values: list[float | None]) -> None:
    """With no sample, or a single one, a chart says "collecting…" and draws no empty axis."""
    root = _chart(values)
    assert root.find(f".//{_SVG}svg") is None
    assert _text(root, "collecting") == COLLECTING


def test_charts_without_a_measured_value_say_so() -> None:
    """Samples with nothing measured (no API request for a latency chart) say the chart's empty text."""
    root = _chart([None, None, None], empty_text="no API request in this window")
    assert root.find(f".//{_SVG}svg") is None
    assert _text(root, "collecting") == "no API request in this window"


def test_charts_break_the_line_where_nothing_was_measured() -> None:
    """A None sample splits the line in two; a lone measured sample is a dot."""
    root = _chart([1.0, 2.0, None, 3.0, 4.0, 5.0, None, 6.0])
    assert [len(line) for line in _points(root)] == [2, 3]
    assert len(list(root.iter(f"{_SVG}circle"))) == 1


def test_charts_escape_every_text() -> None:
    """Series names and titles are escaped: markup in them stays text, and the fragment stays well-formed XML."""
    hostile = '</text><script>alert("x")</script>&'
    times = [START_S, START_S + 10.0]
    fragment = render_chart("chart-<x>", f"Title {hostile}", "u&<>", times,
                            [Series(hostile, (1.0, 2.0)), Series("b", (2.0, 1.0))])
    assert "<script" not in fragment
    root = _parse(fragment)
    assert root.find("figure").attrib["id"] == "chart-<x>"  # type: ignore[union-attr]
    assert f"Title {hostile} (u&<>)" in "".join(root.find(".//figcaption").itertext())  # type: ignore[union-attr]
    assert [line.attrib["data-series"] for line in root.iter(f"{_SVG}polyline")] == [hostile, "b"]
    assert hostile in _text(root, "legend")


def test_charts_downsample_to_at_most_max_points() -> None:
    """An hour at one sample a second (3600) draws MAX_POINTS points, their mean keeping the level."""
    root = _chart([float(index % 2) for index in range(3600)])
    (line,) = _points(root)
    assert len(line) == MAX_POINTS
    assert len({y for _, y in line}) == 1  # 0/1 alternating: every merged point is the mean, 0.5


def test_charts_downsampled_gauges_keep_their_peaks() -> None:
    """A gauge chart merges samples by their maximum: a one-sample backlog spike is not averaged away."""
    values: list[float | None] = [0.0] * 3600
    values[1800] = 500.0
    root = _chart(values, reduce=max)
    (line,) = _points(root)
    top = min(y for _, y in line)
    assert top == pytest.approx(6.0)  # the top of the plot area: the spike reaches the axis maximum
    assert _text(root, "ymax") == "500"


def _sample(index: int, *, errors: dict[str, float] | None = None) -> HistorySample:
    errors = errors or {}
    return HistorySample(at_s=START_S + 10.0 * index, interval_s=10.0, received_per_s=5.0 + index,
                         delivered_per_s=4.0, backlog_depth=index, oldest_age_s=0.5 * index,
                         dead_letters_per_min=0.0, api_latency_ms=(20.0 + index, None),
                         api_errors_per_min=tuple(errors.get(name, 0.0) for name in ERROR_CLASSES))


def test_charts_status_page_draws_every_chart_with_a_point_per_sample() -> None:
    """The page's seven charts, each with one point per sample; latency draws the operations that were measured."""
    root = _parse(render_charts([_sample(index) for index in range(6)]))
    ids = [figure.attrib["id"] for figure in root.iter("figure")]
    assert ids == ["chart-received", "chart-delivered", "chart-backlog", "chart-oldest", "chart-latency",
                   "chart-errors", "chart-dead"]
    for figure in root.iter("figure"):
        assert [len(line) for line in _points(figure)] == [6], figure.attrib["id"]
    latency = next(f for f in root.iter("figure") if f.attrib["id"] == "chart-latency")
    assert [line.attrib["data-series"] for line in latency.iter(f"{_SVG}polyline")] == ["batch"]


def test_charts_errors_draw_a_line_per_class_seen() -> None:
    """The error chart has one line per class that had errors in the window, with a legend naming them."""
    samples = [_sample(0), _sample(1, errors={"server": 3.0}), _sample(2, errors={"network": 1.0}), _sample(3)]
    root = _parse(render_charts(samples))
    errors = next(f for f in root.iter("figure") if f.attrib["id"] == "chart-errors")
    assert [line.attrib["data-series"] for line in errors.iter(f"{_SVG}polyline")] == ["server", "network"]
    assert "server" in _text(errors, "legend") and "network" in _text(errors, "legend")


def test_charts_errors_name_the_class_even_when_only_one_had_errors() -> None:
    """A single error class still gets its legend: the line alone would not say which class failed."""
    root = _parse(render_charts([_sample(0), _sample(1, errors={"auth": 2.0}), _sample(2)]))
    errors = next(f for f in root.iter("figure") if f.attrib["id"] == "chart-errors")
    assert _text(errors, "legend") == "auth"


def test_charts_status_page_says_collecting_before_the_first_samples() -> None:
    """Right after start (no sample yet) every chart says "collecting…"."""
    root = _parse(render_charts([]))
    assert [_text(figure, "collecting") for figure in root.iter("figure")] == [COLLECTING] * 7
