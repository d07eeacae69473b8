"""Drain cost of the processor and the flusher alone: a raw log of queued canonical messages → buffer → the sink.

Owns: the repeatable measurement of the second process of the bridge (issue 14: the receiver moves to its own
process; raw log → route, decode, rules, validation → buffer → `POST /vision-events/batch`), without MQTT. A child
process fills a fresh buffer's raw log with `--count` benchmark messages (`devtools.bench.load.message`, 200 per
commit as the receiver writes them); this process then opens that buffer and runs the real `Processor` and `Flusher`
(with the trace hook and the timed API client, wired as `service.py` wires them) against the benchmark sink
(`devtools.bench.sink`, its own process) until every event is confirmed. It prints, per run, events/s and the CPU
seconds this process spent per 10k events (from starting the two threads to the last delivery; the fill, the sink
and the start-up are not counted), then the minimum and the median (the minimum is the figure to compare on a
shared machine). Under a profiler (`py-spy record -- python -m mqtt_bridge.devtools.bench.drain_cost`) only the
drain is in this process. Run as `python -m mqtt_bridge.devtools.bench.drain_cost [--count 20000 --runs 3]`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.devtools.bench.load import message
from mqtt_bridge.devtools.bench.measure import free_port, wait_for
from mqtt_bridge.observe.hooks import OutcomeHooks
from mqtt_bridge.observe.metrics import TimedEventsApi
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.observe.trace import MessageTrace
from mqtt_bridge.pipeline.flusher import Flusher, FlushSettings
from mqtt_bridge.pipeline.processor import Processor, in_flight_limits
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.raw_log import RawMessage
from mqtt_bridge.transform.ingest import Ingestor

__all__ = ["DrainResult", "drain", "fill", "main"]

# the route of the benchmark's bridge (`devtools.bench.runner`)
_ROUTE = {"topic": "bench/{line}/{camera}/detections", "use_case": "bench", "device_id": "{line}-{camera}",
          "stream_id": "{camera}"}
_PER_COMMIT = 200
_MAX_BYTES = 4 * 2**30
_MIN_FREE_BYTES = 16 * 2**20
_RECEIVE_MAXIMUM = 500  # the benchmark's bridge config
_MODULE = "mqtt_bridge.devtools.bench.drain_cost"  # the fill runs as a child process of this module


@dataclass(frozen=True, slots=True)
class DrainResult:
    """One drain: events delivered, wall seconds and this process's CPU seconds from start to the last delivery
    (and the processor's and the flusher's threads' own)."""

    events: int
    wall_s: float
    cpu_s: float
    processor_cpu_s: float = 0.0
    flusher_cpu_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Delivery rate over the drain."""
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_s_per_10k(self) -> float:
        """CPU seconds per 10,000 events."""
        return self.cpu_s * 10_000 / self.events if self.events else 0.0


def fill(path: Path, count: int) -> None:
    """Write `count` benchmark messages into the raw log of a new buffer at `path`, `_PER_COMMIT` per commit."""
    with DiskBuffer(path, _MAX_BYTES, _MIN_FREE_BYTES) as buffer:
        now = time.time()
        for first in range(0, count, _PER_COMMIT):
            buffer.raw.append([
                RawMessage(f"bench/line{seq % 2}/cam{seq % 4}/detections".encode(), message(seq, "drain", seq % 4),
                           1, False, now)
                for seq in range(first, min(first + _PER_COMMIT, count))])


def _sink(url: str, method: str = "GET") -> object:
    """One request to the sink's own endpoints (the stdlib: `api` is the product's only `requests` user)."""
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as answer:  # noqa: S310
        return orjson.loads(answer.read())


def _sink_count(sink_url: str) -> int:
    stats = _sink(f"{sink_url}/_sink/stats")
    assert isinstance(stats, dict)
    return int(stats["unique"]) if int(stats["rewrites"]) == 0 else -1


def drain(path: Path, sink_url: str, count: int, timeout_s: float = 600.0) -> DrainResult:
    """Open the filled buffer at `path`, run processor + flusher until `count` events are delivered; measure."""
    router = Router([RouteConfig.model_validate(_ROUTE)])
    stats = Stats()
    stop_processor, stop_flusher, wake = threading.Event(), threading.Event(), threading.Event()
    hooks = OutcomeHooks([MessageTrace()])
    api = VisionEventsClient(sink_url, lambda: "bench", 3.0, 30.0)
    with DiskBuffer(path, _MAX_BYTES, _MIN_FREE_BYTES) as buffer:
        flusher = Flusher(buffer, TimedEventsApi(api, stats), FlushSettings(retry_min_s=0.2, retry_max_s=2.0),
                          stats, stop_flusher, wake, hooks=hooks)
        entries, size = in_flight_limits(_RECEIVE_MAXIMUM, [])
        processor = Processor(Ingestor(router, 256 * 1024), buffer, stats, stop_processor, wake,
                              max_in_flight=entries, max_in_flight_bytes=size, hooks=hooks)
        threads = [threading.Thread(target=processor.run, name="processor"),
                   threading.Thread(target=flusher.run, name="flusher")]
        started_cpu_s, started_s = time.process_time(), time.monotonic()
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: stats.count("events_delivered") >= count, timeout_s, "every event delivered", 0.01)
            wall_s, cpu_s = time.monotonic() - started_s, time.process_time() - started_cpu_s
            processor_cpu_s, flusher_cpu_s = (_thread_cpu_s(thread) for thread in threads)
        finally:
            stop_processor.set()
            stop_flusher.set()
            for thread in threads:
                thread.join()
            api.close()
        if stats.count("dead_letters") or buffer.depth or buffer.raw.depth:
            raise RuntimeError(f"the drain left dead_letters={stats.count('dead_letters')} depth={buffer.depth} "
                               f"raw_depth={buffer.raw.depth}")
    return DrainResult(stats.count("events_delivered"), wall_s, cpu_s, processor_cpu_s, flusher_cpu_s)


def _thread_cpu_s(thread: threading.Thread) -> float:
    """CPU seconds a running thread has used (its POSIX thread CPU clock)."""
    if thread.ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def measure(count: int, runs: int) -> list[DrainResult]:
    """`runs` drains of `count` messages each, each from a freshly filled raw log, against one sink process."""
    port = free_port()
    sink_url = f"http://127.0.0.1:{port}"
    sink = subprocess.Popen([sys.executable, "-m", "mqtt_bridge.devtools.bench.sink", "--port", str(port)])
    results: list[DrainResult] = []
    try:
        wait_for(lambda: _is_up(sink_url), 30, "the sink")
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="mqtt-bridge-drain-") as tmp:
                path = Path(tmp) / "buffer"
                # in a child process, so that a profiler of this one sees the drain only
                subprocess.run([sys.executable, "-m", _MODULE, "--fill", str(path), "--count", str(count)],
                               check=True)
                _sink(f"{sink_url}/_sink/reset", "POST")
                results.append(drain(path, sink_url, count))
                delivered = _sink_count(sink_url)
                if delivered != count:
                    raise RuntimeError(f"the sink holds {delivered} distinct events (-1: some twice), not {count}")
    finally:
        sink.terminate()
        sink.wait(10)
    return results


def _is_up(sink_url: str) -> bool:
    try:
        _sink(f"{sink_url}/_sink/count")
    except (OSError, urllib.error.URLError):
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Print one line per run, then the minimum and the median."""
    parser = argparse.ArgumentParser(description="CPU cost of a drain in the processor and the flusher alone")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fill", type=Path, help=argparse.SUPPRESS)  # the child process that writes the raw log
    args = parser.parse_args(argv)
    if args.fill is not None:
        fill(args.fill, args.count)
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    results = measure(args.count, args.runs)
    for index, result in enumerate(results, 1):
        print(f"run {index}: {result.events} events  {result.events_per_s:8.0f} events/s  "
              f"{result.cpu_s_per_10k:5.3f} CPU s per 10k events  (processor {result.processor_cpu_s:.2f} s, "
              f"flusher {result.flusher_cpu_s:.2f} s of CPU {result.cpu_s:.2f} s; wall {result.wall_s:.2f} s)")
    cpu = [r.cpu_s_per_10k for r in results]
    rate = [r.events_per_s for r in results]
    print(f"CPU s per 10k events: min {min(cpu):.3f} median {statistics.median(cpu):.3f}   "
          f"events/s: max {max(rate):.0f} median {statistics.median(rate):.0f}")


if __name__ == "__main__":
    main()
