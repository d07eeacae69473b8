"""The drain benchmark runs the real processor and flusher against the bench sink and reports their CPU cost."""

from __future__ import annotations

from mqtt_bridge.devtools.bench.drain_cost import measure


def test_drain_cost_delivers_every_message_once_and_reports_cpu_per_event() -> None:
    """A drain of 450 queued messages delivers 450 distinct events (else it raises) with CPU and rate figures."""
    [result] = measure(count=450, runs=1)
    assert result.events == 450
    assert result.events_per_s > 0 and result.cpu_s_per_10k > 0
    assert 0 < result.processor_cpu_s <= result.cpu_s and 0 < result.flusher_cpu_s <= result.cpu_s
