"""The emulator page in a real headless browser, fed by the demo's simulated line through Mosquitto and the bridge:
labelled boxes, filters, counts per class and the detail view. Screenshots go to test-artifacts/emulator-page*.png.

The browser fixture is the status page test's (Debian's Chromium through the system chromedriver: skipped locally
without them, a failure when CI=true).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.devtools.simulator import SimulatedLine
from mqtt_bridge.sdk.publisher import Publisher
from tests.helpers import BridgeFactory, MosquittoBroker, wait_until
from tests.integration.test_status_page_browser import ARTIFACTS, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

DEMO_YAML = Path(__file__).resolve().parents[2] / "mqtt_bridge" / "devtools" / "demo.yaml"
ROUNDS = 3  # each publish_once: 3 inspection frames, 1 inference message, 1 safety frame
LABEL = re.compile(r"^(scratch|dent|missing_screw|person|forklift) 0\.\d\d$")


def _attr(element: Any, name: str) -> str:
    return str(element.get_attribute(name) or "")


def _texts(driver: Any, css: str) -> list[str]:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return [_attr(e, "textContent") for e in driver.find_elements("css selector", css)]
    except StaleElementReferenceException:  # the page re-renders when the events change
        return []


def _choose(driver: Any, field: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", f"f-{field}")).select_by_value(value)


def _boxes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [box for ev in events for im in ev.get("images") or [] for box in im.get("objectDetections") or []]


def test_emulator_page_labels_boxes_filters_counts_and_shows_an_event_json(
        mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory, browser: Any) -> None:  # noqa: F811
    """Demo routes and line: every box is labelled "class 0.87", filters narrow the list, counts match, detail JSON."""
    routes = [r for r in yaml.safe_load(DEMO_YAML.read_text())["routes"]
              if r["name"] in {"inspection", "inference", "safety"}]
    for use_case in sorted({r["use_case"] for r in routes}):
        emulator.add_use_case(f"Demo {use_case}", use_case)
    bridge_factory(mosquitto, emulator, routes=routes)
    with Publisher(mosquitto.host, mosquitto.port, client_id="page-line") as publisher:
        line = SimulatedLine(publisher, threading.Event(), seed=15)
        for _ in range(ROUNDS):
            line.publish_once()
    total = ROUNDS * 5
    wait_until(lambda: len(emulator.events()) == total, timeout_s=20, message="delivered")
    events: list[dict[str, Any]] = json.loads(json.dumps(emulator.events()))  # plain dicts for the checks
    boxes = _boxes(events)
    assert {"person", "forklift"} <= {b["class"] for b in boxes}

    browser.get(f"{emulator.url}/")
    wait_until(lambda: browser.find_element("id", "status").text.startswith(f"{total} of {total}"),
               timeout_s=10, message="events listed")
    with_images = sum(1 for ev in events for im in ev.get("images") or [] if im.get("url"))
    drawn = [b for ev in events for im in ev.get("images") or [] if im.get("url")
             for b in im.get("objectDetections") or []]
    wait_until(lambda: len(_texts(browser, ".ev .img svg text")) == len(drawn), timeout_s=10, message="labels")
    labels = _texts(browser, ".ev .img svg text")
    assert all(LABEL.match(text) for text in labels), labels
    assert sorted(labels) == sorted(f"{b['class']} {b['confidence']:.2f}" for b in drawn)
    assert len(browser.find_elements("css selector", ".ev .img img")) == with_images
    counts = {_attr(row, "data-class"): int(row.find_elements("css selector", "td")[1].text)
              for row in browser.find_elements("css selector", "#class-counts tr[data-class]")}
    assert counts == dict(Counter(b["class"] for b in boxes))
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "emulator-page.png"))

    safety = [ev for ev in events if ev["eventType"] == "safety_alert"]
    _choose(browser, "eventType", "safety_alert")
    wait_until(lambda: browser.find_element("id", "status").text.startswith(f"{len(safety)} of {total}"),
               timeout_s=5, message="event type filter")
    assert set(_texts(browser, ".ev .type")) == {"safety_alert"}
    counts_now = set(_texts(browser, "#class-counts tr[data-class] td:first-child"))
    assert counts_now == {b["class"] for b in _boxes(safety)} <= {"person", "forklift"}
    _choose(browser, "since", "3600")  # the time filter keeps these fresh events
    assert browser.find_element("id", "status").text.startswith(f"{len(safety)} of {total}")

    browser.find_elements("css selector", ".ev")[0].click()
    wait_until(lambda: browser.find_elements("id", "detail-json"), timeout_s=5, message="detail view")
    shown = json.loads(_attr(browser.find_element("id", "detail-json"), "textContent"))
    newest = next(ev for ev in events if ev["eventId"] == shown["eventId"])
    assert shown == newest and shown["eventType"] == "safety_alert"
    assert shown["eventData"]["alertType"] and shown["eventData"]["severity"] in {"low", "medium", "high"}
    assert _texts(browser, "#detail .img svg text")  # the detail view draws the labelled boxes too
    assert browser.save_screenshot(str(ARTIFACTS / "emulator-page-detail.png"))

    _choose(browser, "eventType", "")
    _choose(browser, "deviceId", "line1-cam1")
    on_device = [ev for ev in events if ev.get("deviceId") == "line1-cam1"]
    assert on_device and len(on_device) < total
    wait_until(lambda: browser.find_element("id", "status").text.startswith(f"{len(on_device)} of {total}"),
               timeout_s=5, message="device filter")
    assert {c.text for c in browser.find_elements("css selector", ".ev .type")} == {"quality_check"}
