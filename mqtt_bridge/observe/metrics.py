"""Prometheus metrics on prometheus-client: the only module that imports it.

Owns: one `CollectorRegistry` per bridge (never the global default registry, so several bridges in one process,
as in the tests, do not clash), the names, help texts and labels of every metric, and the export of `Stats`
(counters, gauges, latency histograms) and of the live `ServiceState` through a custom collector that reads them at
scrape time. The hot path never touches prometheus-client: it updates `Stats`. Also `TimedEventsApi`, which times
every API request (success or failure) into the latency histogram without the flusher knowing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from mqtt_bridge import __version__
from mqtt_bridge.api.client import BatchAnswer, EventsApi
from mqtt_bridge.model.bounded import CACHE_NAMES, eviction_counts
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.observe.stats import LATENCY_BUCKETS_S, Stats

__all__ = ["COUNTERS", "GAUGES", "PREFIX", "BufferGauges", "Metrics", "StateGauges", "TimedEventsApi"]

PREFIX = "mqtt_bridge_"

# Stats counter name -> (label name or "", help). Exported as `mqtt_bridge_<name>_total`.
COUNTERS: dict[str, tuple[str, str]] = {
    "messages_received": ("route", "MQTT messages taken off the broker, by route ('(none)' when no route matched)."),
    "events_buffered": ("", "Events committed to the disk buffer."),
    "redeliveries_recognised": ("", "Events not committed again: identical to one this process committed before "
                                    "(a message the broker resent after a reconnect)."),
    "events_delivered": ("", "Events the API confirmed (listed in the batch answer's eventIds)."),
    "events_unconfirmed": ("", "Times a batch answer (201) left a sent event out of its eventIds; the event is "
                               "re-sent, and dead-lettered as not_confirmed after flush.unconfirmed_attempts."),
    "dead_letters": ("reason", "Messages or events moved to the dead letters, by reason."),
    "api_retries": ("status", "API failures that keep the data and retry (429/5xx, 401/403, 402/423), by HTTP "
                              "status ('network' for timeouts and resets)."),
    "api_batches": ("", "Batch requests the API accepted."),
    "images_uploaded": ("", "Images uploaded to the API."),
    "boxes_dropped": ("route", "Zero-area or inverted boxes dropped at ingest, by route."),
    "timestamps_replaced": ("route", "Payload timestamps outside the API's window (one year back to tomorrow) "
                                     "replaced by the receive time, by route (timestamp.out_of_window: receive)."),
    "metadata_keys_dropped": ("route", "Payload customMetadata keys dropped because they bear the name of one of the "
                                       "bridge's markers (imageMissing, detections, ...), by route."),
    "messages_without_event": ("route", "Messages for which a rule said 'no event' (e.g. a safety alert with no "
                                        "detection), by route."),
    "receipts_published": ("", "Delivery receipts handed to the MQTT client (QoS 1)."),
    "receipts_lost": ("reason", "Delivery receipts that were not published, by reason."),
    "flusher_errors": ("", "Unexpected errors in the flusher loop (it retried)."),
    "messages_logged": ("", "MQTT messages committed to the raw log and acked to the broker."),
    "intake_errors": ("", "Unexpected errors in the receiver, processor or image stage loops (they retried)."),
    "buffer_commit_errors": ("", "Failed buffer commits (retried; nothing was acked)."),
    "image_references_resolved": ("route", "Images fetched from a URL or read from a file before buffering, by "
                                           "route."),
    "image_fetches_backed_off": ("route", "URL/file image messages not fetched because their route already had "
                                          "its limit of fetches waiting (a slow image server): dead-lettered, by "
                                          "route."),
    "companion_images_paired": ("route", "Detections buffered with their companion-topic image, by route."),
    "companion_images_missing": ("route", "Detections buffered without their companion-topic image (none came "
                                          "within the window), by route."),
    "companion_images_dropped": ("route", "Companion-topic images no detection claimed within the window "
                                          "(dropped), by route."),
    "mqtt_connect_failures": ("cause", "Failed MQTT connect attempts (and sessions taken over by another client "
                                       "with the same client id), by cause: refused, timed_out, dns_not_found, "
                                       "tls_untrusted, tls_hostname_mismatch, not_authorized, ..."),
    "images_shed": ("route", "Images dropped (events kept) while the buffer was over its high-water mark."),
    "ledger_entries_dropped": ("", "Delivered events not written to the delivery ledger because its queue was full "
                                   "(verify will not check them; the events were delivered)."),
    "ledger_write_errors": ("", "Failed writes of the delivery ledger (their entries were given up)."),
    "history_sample_errors": ("", "Failed samples of the status page's last-hour history (the charts miss a point)."),
    "process_restarts": ("process", "Times the supervisor started a child process again after it ended (receiver, "
                                    "worker); 0 until one dies."),
}
# Stats gauge name -> (exported name, help).
GAUGES: dict[str, tuple[str, str]] = {
    "backpressure": ("backpressure", "1 while the buffer is over its high-water mark and acks are held back."),
    "images_parked": ("images_parked", "Messages waiting in the processor while their image is fetched or "
                                       "awaited on a companion topic (acked, kept in the raw log)."),
    "last_delivery_time_seconds": ("last_delivery_timestamp_seconds",
                                   "Unix time of the last successful delivery (0 before the first)."),
}
_HISTOGRAMS = {"api_request_seconds": ("operation", "Vision Events API request duration, by operation "
                                                    "(batch, upload), successful or not.")}


class StateGauges(Protocol):
    """The live state the collector reads (a `ServiceState`)."""

    @property
    def is_ready(self) -> bool: ...

    @property
    def mqtt_connected(self) -> bool: ...

    @property
    def api_ready(self) -> bool: ...

    @property
    def buffer_writable(self) -> bool: ...

    @property
    def buffer_depth(self) -> int: ...

    @property
    def dead_letters(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BufferGauges:
    """Buffer facts read at scrape time: bytes on disk, the age of the oldest undelivered event, and the raw log's
    depth and oldest unprocessed message (design §3: raw messages wait there between the ack and the processor)."""

    bytes: int
    oldest_age_s: float
    raw_depth: int = 0
    raw_oldest_age_s: float = 0.0


class _BridgeCollector(Collector):
    def __init__(self, stats: Stats, state: Callable[[], StateGauges], buffer: Callable[[], BufferGauges],
                 high_water_bytes: int) -> None:
        self._stats = stats
        self._state = state
        self._buffer = buffer
        self._high_water_bytes = high_water_bytes

    def collect(self) -> Iterator[Metric]:
        counters = self._stats.counters()
        by_name: dict[str, list[tuple[str, int]]] = {}
        for (name, label), value in counters.items():
            by_name.setdefault(name, []).append((label, value))
        for name in sorted(set(by_name) | set(COUNTERS)):
            label_name, help_text = COUNTERS.get(name, ("label", f"Bridge counter {name}."))
            family = CounterMetricFamily(PREFIX + name, help_text, labels=[label_name] if label_name else None)
            for label, value in sorted(by_name.get(name, [])):
                if label_name:
                    family.add_metric([label], value)
                else:
                    family.add_metric([], value)
            if not label_name and name not in by_name:
                family.add_metric([], 0)
            yield family
        gauges = self._stats.gauges()
        for name, gauge in sorted(gauges.items()):
            exported, help_text = GAUGES.get(name, (name, f"Bridge gauge {name}."))
            yield GaugeMetricFamily(PREFIX + exported, help_text, value=gauge)
        if "last_delivery_time_seconds" not in gauges:
            yield GaugeMetricFamily(PREFIX + "last_delivery_timestamp_seconds", GAUGES[
                "last_delivery_time_seconds"][1], value=0)
        yield from self._histograms()
        yield from self._live()

    def _histograms(self) -> Iterator[Metric]:
        grouped: dict[str, HistogramMetricFamily] = {}
        for (name, label), snap in sorted(self._stats.histograms().items()):
            label_name, help_text = _HISTOGRAMS.get(name, ("label", f"Bridge histogram {name}."))
            family = grouped.setdefault(name, HistogramMetricFamily(PREFIX + name, help_text, labels=[label_name]))
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), snap.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric([label], buckets, snap.sum)
        yield from grouped.values()

    def _live(self) -> Iterator[Metric]:
        state = self._state()
        buffer = self._buffer()
        for name, value, help_text in (
            ("buffer_depth", state.buffer_depth, "Events waiting in the disk buffer."),
            ("buffer_bytes", buffer.bytes, "Bytes the disk buffer uses."),
            ("buffer_max_bytes", self._high_water_bytes, "The buffer's high-water mark (buffer.max_bytes): above it "
             "the bridge stops acking the broker (or sheds images)."),
            ("oldest_undelivered_age_seconds", buffer.oldest_age_s,
             "Age of the oldest event waiting for delivery (0 when the buffer is empty)."),
            ("raw_log_depth", buffer.raw_depth, "Raw MQTT messages acked and logged but not yet processed into "
             "events (waiting for the processor, or for a companion image or fetch)."),
            ("raw_log_oldest_age_seconds", buffer.raw_oldest_age_s,
             "Age of the oldest raw message not yet processed (0 when the raw log is empty)."),
            ("dead_letters_stored", state.dead_letters, "Dead letters kept in the buffer."),
            ("mqtt_connected", int(state.mqtt_connected), "1 while connected to the MQTT broker."),
            ("api_ready", int(state.api_ready), "0 while the API refuses the key (401/403)."),
            ("buffer_writable", int(state.buffer_writable), "0 while buffer commits fail."),
            ("ready", int(state.is_ready), "1 when /readyz answers 200."),
        ):
            yield GaugeMetricFamily(PREFIX + name, help_text, value=value)
        evictions = CounterMetricFamily(PREFIX + "cache_evictions", "Entries dropped from an in-memory cache or table "
                                        "to keep it within its byte bound, by cache (per process).", labels=["cache"])
        counts = eviction_counts()
        for cache in sorted(set(CACHE_NAMES) | set(counts)):
            evictions.add_metric([cache], counts.get(cache, 0))
        yield evictions
        info = GaugeMetricFamily(PREFIX + "build_info", "Version of the bridge.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def _pid_text(pid: Callable[[], int | None]) -> Callable[[], str]:
    """A pid for `ProcessCollector`: one that names no /proc entry ("none") while the process is unknown."""
    return lambda: str(pid() or "none")


class Metrics:
    """The metrics of one bridge: a private registry with the bridge collector and the process collector."""

    def __init__(self, stats: Stats, state: Callable[[], StateGauges], buffer: Callable[[], BufferGauges], *,
                 high_water_bytes: int = 0, other_processes: dict[str, Callable[[], int | None]] | None = None) -> None:
        """`other_processes`: the bridge's other processes by name (`supervisor`, `receiver`) and how to find their
        pid now: their CPU, memory and file descriptors are exported as `mqtt_bridge_<name>_process_*`."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_BridgeCollector(stats, state, buffer, high_water_bytes))
        ProcessCollector(namespace="mqtt_bridge", registry=self.registry)
        for name, pid in (other_processes or {}).items():  # a pid of None names no /proc entry: nothing exported
            ProcessCollector(namespace=f"mqtt_bridge_{name}", pid=_pid_text(pid), registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TimedEventsApi:
    """Wraps an `EventsApi` and records each request's duration in `api_request_seconds{operation}`."""

    def __init__(self, api: EventsApi, stats: Stats) -> None:
        self._api = api
        self._stats = stats

    def create_batch(self, events: list[JsonDict]) -> BatchAnswer:
        """Create or overwrite up to 100 events (timed); the answer says which the API confirmed."""
        started = time.monotonic()
        try:
            return self._api.create_batch(events)
        finally:
            self._stats.observe("api_request_seconds", time.monotonic() - started, label="batch")

    def upload_image(self, data: bytes, file_name: str, *, name: str = "", metadata: JsonDict | None = None) -> str:
        """Upload one image and return its sourceId (timed)."""
        started = time.monotonic()
        try:
            return self._api.upload_image(data, file_name, name=name, metadata=metadata)
        finally:
            self._stats.observe("api_request_seconds", time.monotonic() - started, label="upload")
