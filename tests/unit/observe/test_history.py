"""The last-hour history behind the status page's charts: a ring bounded by construction, rates from counter deltas,
latency per interval, API errors folded into classes, and the sampling loop."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from dataclasses import dataclass

import pytest

from mqtt_bridge.observe.history import ERROR_CLASSES, History, error_class
from mqtt_bridge.observe.stats import Stats
from tests.helpers import wait_until


@dataclass
class _Gauges:
    buffer_depth: int = 0
    oldest_age_s: float = 0.0


def _history(stats: Stats, gauges: _Gauges | None = None, interval_s: float = 10.0) -> History:
    gauges = gauges or _Gauges()
    return History(stats, lambda: gauges, lambda: gauges, interval_s=interval_s)


def _errors(sample_errors: tuple[float, ...]) -> dict[str, float]:
    return {name: rate for name, rate in zip(ERROR_CLASSES, sample_errors, strict=True) if rate}


@pytest.mark.parametrize(("interval_s", "capacity"), [(10.0, 360), (1.0, 3600), (7.0, 515), (300.0, 12)])
def test_history_capacity_is_one_hour_of_samples(interval_s: float, capacity: int) -> None:
    """The ring holds ceil(3600 / interval_s) samples: the last hour at any interval."""
    assert _history(Stats(), interval_s=interval_s).capacity == capacity


def test_history_ring_never_holds_more_than_its_capacity() -> None:
    """Ten times more samples than the ring holds: it keeps the newest `capacity`, oldest first."""
    stats = Stats()
    history = _history(stats, interval_s=60.0)  # 60 samples
    start = stats.started_at_s
    for index in range(600):
        history.sample(start + 60.0 * (index + 1))
    samples = history.samples()
    assert len(history) == len(samples) == history.capacity == 60
    assert [s.at_s for s in samples] == [start + 60.0 * (index + 1) for index in range(540, 600)]
    assert len(history.to_json()["samples"]) == 60  # type: ignore[arg-type]


def test_history_memory_stays_flat_after_the_ring_is_full() -> None:
    """Past its capacity, sampling (with new route and status labels every time) allocates no more memory: the
    samples hold only a fixed set of keys, whatever the counters' labels."""
    stats = Stats()
    history = _history(stats, _Gauges(buffer_depth=3, oldest_age_s=1.5), interval_s=10.0)
    start = stats.started_at_s

    def fill(first: int, count: int) -> None:
        for index in range(first, first + count):
            stats.add("messages_received", 3, label=f"route-{index % 7}")
            stats.add("api_retries", label=str(500 + index % 4))
            stats.observe("api_request_seconds", 0.01 * (index % 9 + 1), label="batch")
            history.sample(start + 10.0 * (index + 1))

    tracemalloc.start()  # before the first sample: the frees of the samples that fall out are traced too
    try:
        fill(0, history.capacity)  # full
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        fill(history.capacity, 20 * history.capacity)  # 7200 more samples
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(history) == history.capacity
    assert after - before < 64 * 1024, f"grew by {after - before} bytes past a full ring"


def test_history_rates_are_counter_deltas_over_the_interval() -> None:
    """Received and delivered per second, dead letters per minute: what the counters gained since the last sample,
    divided by the time between the two (summed over every route label)."""
    stats = Stats()
    history = _history(stats)
    start = stats.started_at_s
    history.sample(start + 10.0)
    stats.add("messages_received", 30, label="line-a")
    stats.add("messages_received", 20, label="line-b")
    stats.add("events_delivered", 40)
    stats.add("dead_letters", 2, label="invalid_json")
    sample = history.sample(start + 30.0)  # 20 s later
    assert sample.interval_s == pytest.approx(20.0)
    assert sample.received_per_s == pytest.approx(2.5)
    assert sample.delivered_per_s == pytest.approx(2.0)
    assert sample.dead_letters_per_min == pytest.approx(6.0)
    quiet = history.sample(start + 40.0)
    assert (quiet.received_per_s, quiet.delivered_per_s, quiet.dead_letters_per_min) == (0.0, 0.0, 0.0)


def test_history_first_sample_measures_from_the_bridge_start() -> None:
    """The counters start at zero with the bridge: the first rate is over the time since `started_at_s`."""
    stats = Stats()
    history = _history(stats)
    stats.add("messages_received", 50, label="r")
    assert history.sample(stats.started_at_s + 5.0).received_per_s == pytest.approx(10.0)


def test_history_reads_backlog_depth_and_oldest_age_as_they_are() -> None:
    """Backlog depth and oldest waiting age are the live gauges at the time of the sample."""
    gauges = _Gauges(buffer_depth=120, oldest_age_s=42.5)
    history = _history(Stats(), gauges)
    first = history.sample()
    gauges.buffer_depth, gauges.oldest_age_s = 0, 0.0
    second = history.sample()
    assert (first.backlog_depth, first.oldest_age_s) == (120, 42.5)
    assert (second.backlog_depth, second.oldest_age_s) == (0, 0.0)


def test_history_latency_is_the_mean_per_interval_and_none_without_requests() -> None:
    """API latency is the mean of the requests made in the interval, per operation, in ms; None when none was."""
    stats = Stats()
    history = _history(stats)
    start = stats.started_at_s
    for seconds in (0.010, 0.030):
        stats.observe("api_request_seconds", seconds, label="batch")
    first = history.sample(start + 10.0)
    stats.observe("api_request_seconds", 0.200, label="upload")
    second = history.sample(start + 20.0)
    assert first.api_latency_ms[0] == pytest.approx(20.0)
    assert first.api_latency_ms[1] is None
    assert second.api_latency_ms[0] is None  # no batch in that interval: not a zero latency
    assert second.api_latency_ms[1] == pytest.approx(200.0)


@pytest.mark.parametrize(("status", "kind"), [("401", "auth"), ("403", "auth"), ("402", "billing"),
                                              ("423", "billing"), ("429", "rate_limited"), ("500", "server"),
                                              ("503", "server"), ("network", "network"), ("418", "other"),
                                              ("5xx", "other")])
def test_history_error_class_of_a_retry_status(status: str, kind: str) -> None:
    """`api_retries{status}` labels map to the class a plant engineer acts on."""
    assert error_class(status) == kind


def test_history_errors_are_counted_per_class_per_minute() -> None:
    """Retries by status and API rejections (dead letters api_rejected/upload_rejected) become errors per minute by
    class; other dead letters are not API errors."""
    stats = Stats()
    history = _history(stats)
    start = stats.started_at_s
    history.sample(start + 60.0)
    stats.add("api_retries", 3, label="503")
    stats.add("api_retries", 1, label="500")
    stats.add("api_retries", 2, label="network")
    stats.add("api_retries", 1, label="429")
    stats.add("dead_letters", 1, label="api_rejected")
    stats.add("dead_letters", 1, label="upload_rejected")
    stats.add("dead_letters", 5, label="invalid_json")
    sample = history.sample(start + 120.0)  # one minute
    assert _errors(sample.api_errors_per_min) == {"server": 4.0, "network": 2.0, "rate_limited": 1.0,
                                                  "rejected": 2.0}
    assert sample.dead_letters_per_min == pytest.approx(7.0)


def test_history_json_lists_samples_oldest_first_with_named_series() -> None:
    """`/status/history.json`: interval, capacity, and each sample with its series named."""
    stats = Stats()
    history = _history(stats, _Gauges(buffer_depth=4))
    start = stats.started_at_s
    stats.observe("api_request_seconds", 0.05, label="batch")
    history.sample(start + 10.0)
    history.sample(start + 20.0)
    document = history.to_json()
    assert (document["intervalS"], document["capacity"]) == (10.0, 360)
    samples = document["samples"]
    assert isinstance(samples, list) and len(samples) == 2
    first, second = samples
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["at"] < second["at"]  # type: ignore[operator]
    assert first["backlogDepth"] == 4
    assert first["apiLatencyMs"] == {"batch": 50.0, "upload": None}
    assert first["apiErrorsPerMin"] == dict.fromkeys(ERROR_CLASSES, 0.0)


def _run_until(history: History, samples: int) -> threading.Thread:
    """Run the sampling loop in a thread until the ring holds `samples`, then stop it; returns the joined thread."""
    stop = threading.Event()
    thread = threading.Thread(target=history.run, args=(stop,), name="history-test")
    thread.start()
    try:
        wait_until(lambda: len(history) >= samples, timeout_s=10, message=f"{samples} samples")
    finally:
        stop.set()
        thread.join(5)
    return thread


def test_history_run_samples_every_interval_until_stopped() -> None:
    """`run` takes a sample every interval and returns once the stop event is set."""
    stats = Stats()
    history = _history(stats, interval_s=0.05)
    thread = _run_until(history, samples=3)
    assert not thread.is_alive()


def test_history_run_survives_a_failing_sample() -> None:
    """A sample that raises is counted (`history_sample_errors`) and skipped; the loop goes on sampling."""
    stats = Stats()
    gauges = _Gauges()
    failures = [True, True]

    def state() -> _Gauges:
        if failures:
            failures.pop()
            raise RuntimeError("buffer closed")
        return gauges

    history = History(stats, state, lambda: gauges, interval_s=0.05)
    _run_until(history, samples=2)
    assert stats.count("history_sample_errors") == 2


def test_history_refuses_a_non_positive_interval() -> None:
    """An interval of zero would spin: it is refused."""
    with pytest.raises(ValueError, match="interval_s"):
        _history(Stats(), interval_s=0.0)
