"""The status page in a real headless browser: Debian's Chromium driven by Selenium through the system chromedriver
(no browser download). The screenshot is kept in test-artifacts/status-page.png."""

from __future__ import annotations

import os
import shutil
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
