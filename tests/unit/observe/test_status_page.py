"""The status page: the raw log backlog in `/status.json`, and the history routes on a real health server: the
charts drawn into `/status`, the fragment the page re-reads (`/status/charts`) and `/status/history.json`, all behind
the page's token."""

from __future__ import annotations

import http.client
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import orjson
import pytest

from mqtt_bridge.observe.health import HealthServer
from mqtt_bridge.observe.history import History
from mqtt_bridge.observe.metrics import BufferGauges
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.observe.status_page import StatusReport
from mqtt_bridge.observe.trace import MessageTrace
from tests.unit.observe.state_stub import StateStub

TOKEN = "tok-hist-5e1"
_SVG = "{http://www.w3.org/2000/svg}"


def _report(stats: Stats, history: History | None) -> StatusReport:
    state = StateStub(buffer_depth=7)
    return StatusReport(stats, lambda: state, lambda: BufferGauges(0, 3.0), MessageTrace(10), ["inspection"],
                        history=history)


@pytest.fixture
def stats() -> Stats:
    return Stats()


@pytest.fixture
def history(stats: Stats) -> History:
    state = StateStub(buffer_depth=7)
    return History(stats, lambda: state, lambda: BufferGauges(0, 3.0), interval_s=10.0)


@pytest.fixture
def server(stats: Stats, history: History) -> Iterator[HealthServer]:
    running = HealthServer("127.0.0.1", 0, StateStub, report=_report(stats, history), token=TOKEN)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _get(server: HealthServer, path: str, token: str | None = TOKEN) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type", ""), body


def _fill(stats: Stats, history: History, samples: int) -> None:
    for index in range(samples):
        stats.add("messages_received", 10 * (index + 1), label="inspection")
        history.sample(stats.started_at_s + 10.0 * (index + 1))


@pytest.mark.parametrize("path", ["/status/history.json", "/status/charts"])
def test_status_page_history_needs_the_token(server: HealthServer, path: str) -> None:
    """Without the token the history and its charts answer 401, like the rest of the status page."""
    assert _get(server, path, token=None)[0] == 401
    assert _get(server, path, token="wrong")[0] == 401


def test_status_page_history_json_lists_the_samples(server: HealthServer, stats: Stats, history: History) -> None:
    """`/status/history.json` holds every sample, oldest first, with the rates and gauges."""
    _fill(stats, history, 3)
    status, kind, body = _get(server, "/status/history.json")
    assert (status, kind) == (200, "application/json")
    document = orjson.loads(body)
    assert document["intervalS"] == 10.0 and document["capacity"] == 360
    assert [s["receivedPerS"] for s in document["samples"]] == [1.0, 2.0, 3.0]
    assert {s["backlogDepth"] for s in document["samples"]} == {7}
    assert {s["oldestAgeS"] for s in document["samples"]} == {3.0}


def test_status_page_draws_the_charts_into_the_page(server: HealthServer, stats: Stats, history: History) -> None:
    """`/status` carries the charts inline (readable without JS), a point per sample, and the fragment route
    returns the same charts for the page's refresh."""
    _fill(stats, history, 4)
    status, kind, body = _get(server, "/status")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    page = body.decode()
    start = page.index('<div class="body charts" id="charts"')
    section = page[start:page.index("</section>", start)]
    root = ET.fromstring(section)  # noqa: S314 - the bridge's own page: its inline charts are well-formed XML
    assert root.attrib["data-refresh-s"] == "10"
    received = next(f for f in root.iter("figure") if f.attrib["id"] == "chart-received")
    (line,) = received.iter(f"{_SVG}polyline")
    assert len(line.attrib["points"].split()) == 4
    fragment_status, _, fragment = _get(server, "/status/charts")
    assert fragment_status == 200
    charts = ET.fromstring(f"<div>{fragment.decode()}</div>")  # noqa: S314 - our own fragment
    assert charts.find(".//figure[@id='chart-received']") is not None


def test_status_page_says_collecting_before_the_first_sample(server: HealthServer) -> None:
    """Just after start the page's charts say "collecting…" instead of drawing empty axes."""
    page = _get(server, "/status")[2].decode()
    assert page.count('<p class="collecting">collecting…</p>') == 7
    assert "<polyline" not in page


def test_status_page_without_history_has_no_charts(stats: Stats) -> None:
    """A report built without a history serves the page without the chart section, and no history routes."""
    running = HealthServer("127.0.0.1", 0, StateStub, report=_report(stats, None))
    running.start()
    try:
        status, _, body = _get(running, "/status", token=None)
        assert status == 200 and b'id="charts"' not in body and b"<!--charts-->" not in body
        assert _get(running, "/status/history.json", token=None)[0] == 404
    finally:
        running.stop()


def test_status_page_buffer_shows_the_raw_log_backlog() -> None:
    """`buffer` in /status.json carries rawDepth and rawOldestAgeS from the buffer gauges, beside depth."""
    state = StateStub(buffer_depth=3, dead_letters=1)
    report = StatusReport(Stats(), lambda: state, lambda: BufferGauges(4096, 2.0, 42, 7.25), MessageTrace(10),
                          ["cams"])
    buffer = report.status()["buffer"]
    assert buffer == {"depth": 3, "bytes": 4096, "oldestAgeS": 2.0, "deadLetters": 1, "rawDepth": 42,
                      "rawOldestAgeS": 7.25}
