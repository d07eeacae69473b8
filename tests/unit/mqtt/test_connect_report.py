"""The connect-failure line: one per attempt, rate-limited when it repeats, the problem kept for /readyz and the
status page, and each failure counted by cause (issue 13 item 1)."""

from __future__ import annotations

import logging

import pytest

from mqtt_bridge.mqtt.connect_report import ConnectReport, RepeatLimiter
from mqtt_bridge.mqtt.diagnosis import ConnectCause, Endpoint, diagnose_connack, diagnose_exception, diagnose_taken_over

END = Endpoint("127.0.0.1", 1883, "bridge-1")
REFUSED = diagnose_exception(ConnectionRefusedError(111, "Connection refused"), END)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeat_limiter_logs_each_backoff_step_then_once_a_minute() -> None:
    """The first failure, each longer delay, then at most one line a minute with the number held back."""
    limiter = RepeatLimiter(every_s=60)
    said = [limiter.admit(ConnectCause.REFUSED, delay, at) for at, delay in
            [(0, 3), (3, 4), (7, 8), (15, 8), (23, 8), (31, 8), (67, 8), (75, 8)]]
    assert said == [0, 0, 0, None, None, None, 3, None]


def test_repeat_limiter_logs_a_new_cause_at_once() -> None:
    """A different cause is said at once, even within the minute."""
    limiter = RepeatLimiter()
    assert limiter.admit(ConnectCause.REFUSED, 8, 0) == 0
    assert limiter.admit(ConnectCause.REFUSED, 8, 1) is None
    assert limiter.admit(ConnectCause.NOT_AUTHORIZED, 8, 2) == 0


def test_connect_report_failed_logs_one_clear_line(caplog: pytest.LogCaptureFixture) -> None:
    """The line has host, port, protocol, cause, retry delay, the cause in words and what to check."""
    counted: list[str] = []
    report = ConnectReport(END, counted.append, clock=_Clock())
    with caplog.at_level(logging.WARNING, "mqtt_bridge"):
        report.failed(REFUSED, "5", 3.0)
    [line] = [r.getMessage() for r in caplog.records]
    assert line == ("mqtt connect failed host=127.0.0.1 port=1883 protocol=5 cause=refused retry_in_s=3: "
                    "connection refused: nothing listens on 127.0.0.1:1883; check mqtt.host and mqtt.port, that the "
                    "broker runs, and its listener's port")
    assert counted == ["refused"]
    assert report.problem == REFUSED.describe(END, "5")


def test_connect_report_counts_every_failure_but_logs_the_repeat_once(caplog: pytest.LogCaptureFixture) -> None:
    """Held-back repeats are still counted (metric) and the next line says how many were held back."""
    clock = _Clock()
    counted: list[str] = []
    report = ConnectReport(END, counted.append, clock=clock)
    with caplog.at_level(logging.WARNING, "mqtt_bridge"):
        for _ in range(4):
            report.failed(REFUSED, "5", 30.0)
            clock.now += 30
        report.failed(REFUSED, "5", 30.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(counted) == 5
    assert len(lines) == 3 and "repeated=1" in lines[1] and "repeated=1" in lines[2]


def test_connect_report_connected_clears_the_problem() -> None:
    """Once the broker accepts, the problem is gone from /readyz and the status page."""
    report = ConnectReport(END)
    report.failed(diagnose_connack(0x86, END), "5", 1)
    report.connected()
    assert report.problem == ""


def test_connect_report_keeps_a_takeover_until_the_connection_lasts() -> None:
    """A takeover stays shown while the bridges kick each other out; a minute of stable connection clears it."""
    clock = _Clock()
    report = ConnectReport(END, clock=clock)
    report.failed(diagnose_taken_over(END, is_certain=True), "5", 1)
    report.connected()
    assert "session taken over" in report.problem
    clock.now += 61
    assert report.problem == ""


def test_connect_report_failure_hook_error_does_not_escape(caplog: pytest.LogCaptureFixture) -> None:
    """A failing metrics hook is logged and the network thread carries on."""
    def broken(cause: str) -> None:
        raise RuntimeError("metrics down")

    report = ConnectReport(END, broken)
    with caplog.at_level(logging.WARNING, "mqtt_bridge"):
        report.failed(REFUSED, "5", 1)
    assert any("hook failed" in r.getMessage() for r in caplog.records)
