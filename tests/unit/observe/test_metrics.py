"""Metrics: Stats histograms, the per-bridge Prometheus registry, and the timed API wrapper."""

from __future__ import annotations

import pytest

from mqtt_bridge.api.client import BatchAnswer
from mqtt_bridge.errors import RetryableApiError
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.observe.metrics import BufferGauges, Metrics, TimedEventsApi
from mqtt_bridge.observe.stats import LATENCY_BUCKETS_S, Stats
from tests.unit.observe.state_stub import StateStub


def _state() -> StateStub:
    return StateStub(buffer_depth=7, dead_letters=2)


def _render(stats: Stats, oldest_s: float = 12.5) -> str:
    body, kind = Metrics(stats, _state, lambda: BufferGauges(4096, oldest_s)).render()
    assert kind.startswith("text/plain")
    return body.decode()


def test_stats_observe_counts_each_value_in_its_bucket() -> None:
    """A histogram counts observations per bucket and keeps their sum and count."""
    stats = Stats()
    stats.observe("api_request_seconds", 0.004, label="batch")
    stats.observe("api_request_seconds", 0.3, label="batch")
    stats.observe("api_request_seconds", 99.0, label="batch")
    snap = stats.histograms()[("api_request_seconds", "batch")]
    assert snap.count == 3
    assert snap.sum == pytest.approx(99.304)
    assert snap.counts[0] == 1
    assert snap.counts[LATENCY_BUCKETS_S.index(0.5)] == 1
    assert snap.counts[-1] == 1


def test_metrics_render_lists_every_issue_metric_with_labels() -> None:
    """/metrics has per-route, per-reason and per-status counters, buffer gauges, latency and connection state."""
    stats = Stats()
    stats.add("messages_received", 3, label="inspection")
    stats.add("events_delivered", 3)
    stats.add("dead_letters", label="invalid_json")
    stats.add("api_retries", 2, label="503")
    stats.set("last_delivery_time_seconds", 1_700_000_000.0)
    stats.observe("api_request_seconds", 0.02, label="batch")
    text = _render(stats)
    for line in ('mqtt_bridge_messages_received_total{route="inspection"} 3.0',
                 "mqtt_bridge_events_delivered_total 3.0",
                 'mqtt_bridge_dead_letters_total{reason="invalid_json"} 1.0',
                 'mqtt_bridge_api_retries_total{status="503"} 2.0',
                 "mqtt_bridge_buffer_depth 7.0", "mqtt_bridge_buffer_bytes 4096.0",
                 "mqtt_bridge_oldest_undelivered_age_seconds 12.5", "mqtt_bridge_mqtt_connected 1.0",
                 "mqtt_bridge_last_delivery_timestamp_seconds 1.7e+09",
                 'mqtt_bridge_api_request_seconds_bucket{le="0.025",operation="batch"} 1.0',
                 'mqtt_bridge_api_request_seconds_count{operation="batch"} 1.0', "mqtt_bridge_ready 1.0"):
        assert line in text, line
    assert "mqtt_bridge_process_resident_memory_bytes" in text


def test_metrics_render_the_raw_log_depth_and_oldest_age() -> None:
    """/metrics has the raw log's depth and the age of its oldest unprocessed message (0 by default)."""
    body, _ = Metrics(Stats(), _state, lambda: BufferGauges(4096, 1.0, 17, 3.5)).render()
    text = body.decode()
    assert "mqtt_bridge_raw_log_depth 17.0" in text and "mqtt_bridge_raw_log_oldest_age_seconds 3.5" in text
    assert "mqtt_bridge_raw_log_depth 0.0" in _render(Stats())


def test_metrics_registries_of_two_bridges_do_not_clash() -> None:
    """Each bridge has its own registry: two in one process report their own numbers."""
    first, second = Stats(), Stats()
    first.add("events_delivered", 5)
    second.add("events_delivered", 9)
    assert "mqtt_bridge_events_delivered_total 5.0" in _render(first)
    assert "mqtt_bridge_events_delivered_total 9.0" in _render(second)


def test_metrics_unknown_counter_is_still_exported() -> None:
    """A counter added later by another module shows up without a table entry."""
    stats = Stats()
    stats.add("frames_debounced", 4, label="cam1")
    assert 'mqtt_bridge_frames_debounced_total{label="cam1"} 4.0' in _render(stats)


class _FailingApi:
    def create_batch(self, events: list[JsonDict]) -> BatchAnswer:
        raise RetryableApiError("POST /batch: timed out")

    def upload_image(self, data: bytes, file_name: str, *, name: str = "", metadata: JsonDict | None = None) -> str:
        return "src-1"


def test_timed_api_records_failures_and_successes() -> None:
    """Every request is timed, also those that fail, under its operation label."""
    stats = Stats()
    api = TimedEventsApi(_FailingApi(), stats)
    assert api.upload_image(b"x", "a.png") == "src-1"
    with pytest.raises(RetryableApiError):
        api.create_batch([])
    histograms = stats.histograms()
    assert histograms[("api_request_seconds", "upload")].count == 1
    assert histograms[("api_request_seconds", "batch")].count == 1


def test_metrics_export_cache_evictions_per_cache() -> None:
    from mqtt_bridge.model.bounded import CACHE_NAMES, count_evictions

    count_evictions("trace", 3)
    text = _render(Stats())
    for cache in CACHE_NAMES:
        assert f'mqtt_bridge_cache_evictions_total{{cache="{cache}"}}' in text
    assert 'mqtt_bridge_cache_evictions_total{cache="trace"} 0.0' not in text


def test_metrics_render_the_buffer_high_water_mark() -> None:
    """/metrics has the buffer's high-water mark (buffer.max_bytes), so an alert can compare each bridge to its own."""
    body, _ = Metrics(Stats(), _state, lambda: BufferGauges(4096, 1.0), high_water_bytes=160 * 2**20).render()
    assert "mqtt_bridge_buffer_max_bytes 1.6777216e+08" in body.decode()
