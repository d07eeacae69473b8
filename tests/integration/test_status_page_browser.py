"""The status page in a real headless browser: Debian's Chromium driven by Selenium through the system chromedriver
(no browser download). The screenshots are kept in test-artifacts/: status-page.png (the page), status-charts.png
(its last-hour charts) and status-charts-phone.png (the charts at a phone's width)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.helpers import (
    BridgeFactory,
    MosquittoBroker,
    PahoClient,
    detection_message,
    events_by_seq,
    is_ci,
    wait_until,
)

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOPIC = "t/factory/L1/cam1/detections"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1100")


def _need(what: str) -> None:
    if is_ci():
        pytest.fail(f"{what} is missing (apt-get install -y chromium chromium-driver; pip install selenium)")
    pytest.skip(f"{what} is missing")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium (Debian's) through the system chromedriver; skips locally, fails in CI when missing."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not os.access(chromium, os.X_OK):
        _need("chromium")
    if not os.access(driver_path, os.X_OK):
        _need("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as ChromeService
    except ImportError:
        _need("selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=ChromeService(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: Any, element_id: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(driver.find_element("id", element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):  # the page re-renders every 2 s
        return ""


CHARTS = ("chart-received", "chart-delivered", "chart-backlog", "chart-oldest", "chart-latency", "chart-errors",
          "chart-dead")
# what the browser drew: per chart, the points of its SVG polylines and dots (a measured value between two gaps, as
# API latency has in intervals without a request), read from the SVG DOM (so the browser parsed them),
# the series names, whether any point sits above the plot's bottom (a non-zero value) and the "collecting…" note
_CHARTS_JS = """
return Array.from(document.querySelectorAll('#charts figure.chart')).map((f) => {
  const lines = Array.from(f.querySelectorAll('svg polyline'));
  const ys = lines.flatMap((p) => Array.from({length: p.points.numberOfItems}, (_, i) => p.points.getItem(i).y))
    .concat(Array.from(f.querySelectorAll('svg circle'), (c) => c.cy.baseVal.value));
  const plot = f.querySelector('svg rect');
  const bottom = plot ? plot.y.baseVal.value + plot.height.baseVal.value : 0;
  const svg = f.querySelector('svg');
  return {id: f.id, points: ys.length, series: lines.map((p) => p.dataset.series),
          legend: (f.querySelector('.legend') || {}).textContent || "",
          nonzero: ys.some((y) => y < bottom - 0.5), collecting: !!f.querySelector('.collecting'),
          width: svg ? svg.getBoundingClientRect().width : 0};
});
"""


def _charts(driver: Any) -> dict[str, dict[str, Any]]:
    from selenium.common.exceptions import JavascriptException

    try:
        return {chart["id"]: chart for chart in driver.execute_script(_CHARTS_JS)}
    except JavascriptException:  # the charts were being replaced by their refresh
        return {}


def _charts_drawn(driver: Any, min_points: int) -> bool:
    charts = _charts(driver)
    return set(charts) == set(CHARTS) and all(c["points"] >= min_points and c["nonzero"] and not c["collecting"]
                                              for c in charts.values())


def test_status_page_shows_live_numbers_dead_letters_and_finds_a_message(
        mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory, browser: Any) -> None:
    """Logged in with the token, the page shows live counts, the dead letters with reasons, and a message's path."""
    service = bridge_factory(mosquitto, emulator, health={"enabled": True, "port": 0, "token": "page-tok"})
    base = f"http://127.0.0.1:{service.health_port}"
    with PahoClient(mosquitto, client_id="page-publisher").connect() as publisher:
        publisher.publish_many([(TOPIC, detection_message(seq, with_image=seq % 5 == 0)) for seq in range(20)])
        publisher.publish_many([(TOPIC, b"{not json"), ("t/inference/cam9", b'{"predictions": "nope"}')])
        wait_until(lambda: len(events_by_seq(emulator.events())) == 20, timeout_s=20, message="delivered")
        wait_until(lambda: service.buffer.dead_letter_count == 2, timeout_s=10, message="dead letters")

        browser.get(f"{base}/status")  # the login form: POSTs the token, sets the session cookie, redirects
        field = browser.find_element("name", "token")
        field.send_keys("page-tok")
        field.submit()
        wait_until(lambda: browser.current_url == f"{base}/status" and "login" not in browser.title.lower()
                   and browser.find_elements("id", "delivered"), timeout_s=10, message="logged in")
        assert browser.current_url == f"{base}/status"
        wait_until(lambda: _text(browser, "delivered") == "20", timeout_s=10, message="delivered count shown")
        assert _text(browser, "overall") == "ready"
        assert _text(browser, "deadcount") == "2"
        dead_table = _text(browser, "dead")
        assert "invalid_json" in dead_table and "invalid_message" in dead_table
        assert "inspection" in _text(browser, "routes") and "inference" in _text(browser, "routes")

        publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(20, 25)])
        wait_until(lambda: _text(browser, "delivered") == "25", timeout_s=15, message="page updates by itself")

    event_id = str(events_by_seq(emulator.events())[0][0]["eventId"])
    search = browser.find_element("id", "q")
    search.send_keys(event_id)
    browser.find_element("css selector", "#search button").click()
    wait_until(lambda: "delivered" in _text(browser, "trace"), timeout_s=10, message="trace result")
    trace = _text(browser, "trace")
    for stage in ("received", "buffered", "image uploaded", "delivered"):
        assert stage in trace, stage
    assert event_id in trace

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    search.clear()
    search.send_keys("t/factory/L1/")
    browser.find_element("css selector", "#search button").click()
    wait_until(lambda: _text(browser, "trace").count(TOPIC) >= 25, timeout_s=10, message="topic search")


def _history(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/status/history.json", timeout=5) as response:  # noqa: S310 - local test URL
        samples: list[dict[str, Any]] = json.loads(response.read())["samples"]
    return samples


def test_status_page_draws_the_last_hour_charts_with_data(
        mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory, browser: Any) -> None:
    """After traffic, a dead letter and an API outage (a backlog, failed batches), every chart of the page is drawn
    with data points (counted in the browser's SVG DOM), the error chart names the class, the page refreshes the
    charts by itself, and at a phone's width they fit the screen. Screenshots: test-artifacts/status-charts.png and
    status-charts-phone.png."""
    # one history sample a second (health.history_interval_s, 10 s by default) so that the charts fill quickly
    service = bridge_factory(mosquitto, emulator, health={"enabled": True, "port": 0, "history_interval_s": 1})
    base = f"http://127.0.0.1:{service.health_port}"
    browser.get(f"{base}/status")
    assert browser.find_element("id", "charts")
    with PahoClient(mosquitto, client_id="charts-publisher").connect() as publisher:
        publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(10)])
        publisher.publish_many([(TOPIC, b"{not json")])
        wait_until(lambda: len(events_by_seq(emulator.events())) == 10, timeout_s=20, message="delivered")
        emulator.set_faults(status_always=503)  # the API is down: a backlog builds up and batches fail
        publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(10, 20)])
        # two samples of it: the failing requests (retried at least every api.retry_max_s) span both intervals
        wait_until(lambda: sum(s["backlogDepth"] >= 10 and s["oldestAgeS"] > 0 for s in _history(base)) >= 2,
                   timeout_s=20, message="two samples of the backlog")
        emulator.clear_faults()
        wait_until(lambda: len(events_by_seq(emulator.events())) == 20, timeout_s=20, message="backlog delivered")
    assert service.stats.count("api_retries", "503") >= 1

    try:
        wait_until(lambda: _charts_drawn(browser, min_points=3), timeout_s=20, message="every chart drawn with data")
    except AssertionError as exc:  # say what the browser drew
        raise AssertionError(f"{exc}; drawn: {_charts(browser)}") from None
    charts = _charts(browser)
    assert "server" in charts["chart-errors"]["series"] and "server" in charts["chart-errors"]["legend"]
    assert "batch" in charts["chart-latency"]["series"]
    drawn = charts["chart-received"]["points"]
    wait_until(lambda: _charts(browser).get("chart-received", {}).get("points", 0) > drawn, timeout_s=15,
               message="the page refreshes its charts")

    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("document.getElementById('charts').scrollIntoView()")
    desktop = ARTIFACTS / "status-charts.png"
    assert browser.save_screenshot(str(desktop))
    assert desktop.stat().st_size > 10_000

    browser.set_window_size(390, 844)  # a phone
    wait_until(lambda: browser.execute_script("return window.innerWidth") <= 400, timeout_s=5, message="resized")
    browser.execute_script("document.getElementById('charts').scrollIntoView()")
    inner = browser.execute_script("return window.innerWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= inner, "page wider than a phone"
    widths = {c["id"]: c["width"] for c in _charts(browser).values()}
    assert set(widths) == set(CHARTS) and all(200 < width <= inner for width in widths.values()), widths
    phone = ARTIFACTS / "status-charts-phone.png"
    assert browser.save_screenshot(str(phone))
    assert phone.stat().st_size > 10_000
