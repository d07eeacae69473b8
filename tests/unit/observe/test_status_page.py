"""The status document: the raw log's depth and oldest unprocessed age next to the buffer's backlog."""

from __future__ import annotations

from mqtt_bridge.observe.metrics import BufferGauges
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.observe.status_page import StatusReport
from mqtt_bridge.observe.trace import MessageTrace
from mqtt_bridge.service import ServiceState


def _state() -> ServiceState:
    return ServiceState(is_alive=True, is_ready=True, mqtt_connected=True, mqtt_subscribed=True, api_ready=True,
                        buffer_writable=True, backpressured=False, buffer_depth=3, dead_letters=1, last_error="")


def test_status_page_buffer_shows_the_raw_log_backlog() -> None:
    """`buffer` in /status.json carries rawDepth and rawOldestAgeS from the buffer gauges, beside depth."""
    report = StatusReport(Stats(), _state, lambda: BufferGauges(4096, 2.0, 42, 7.25), MessageTrace(10), ["cams"])
    buffer = report.status()["buffer"]
    assert buffer == {"depth": 3, "bytes": 4096, "oldestAgeS": 2.0, "deadLetters": 1, "rawDepth": 42,
                      "rawOldestAgeS": 7.25}
