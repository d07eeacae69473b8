"""Per-message ingest cost: `Ingestor.process` on the benchmark's canonical message and on a Roboflow one, in µs.

Owns: the micro-benchmark of the hot path alone (route match, decode, templates, identity, event rules), without
MQTT, disk or HTTP. Prints, per format, the minimum and the median of `--runs` runs of `--messages` messages (the
minimum is the figure to compare on a shared machine: the others are the neighbours' noise). To compare two
versions, run it from both checkouts in turn. Run as `python -m mqtt_bridge.devtools.bench.ingest_cost`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.devtools.bench.load import message
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.ingest import Ingestor

__all__ = ["main", "measure"]

_ROUTES = [
    {"topic": "bench/{line}/{camera}/detections", "use_case": "bench", "device_id": "{line}-{camera}",
     "stream_id": "{camera}"},
    {"topic": "rf/{line}/{camera}", "use_case": "bench", "format": "roboflow", "device_id": "{line}-{camera}",
     "stream_id": "{camera}", "metadata": {"line": "{line}"}},
]
_ROBOFLOW = orjson.dumps({
    "predictions": [{"class": label, "confidence": 0.9, "x": 100.0 + i, "y": 50.0, "width": 20.0, "height": 10.0,
                     "class_id": i} for i, label in enumerate(("scratch", "dent", "burr", "chip", "stain"))],
    "image": {"width": 640, "height": 480}, "inference_id": "bench"})


def measure(runs: int, messages: int) -> dict[str, tuple[float, float]]:
    """{format: (min, median) µs per message} over `runs` runs of `messages` distinct messages each."""
    ingestor = Ingestor(Router([RouteConfig.model_validate(r) for r in _ROUTES]), 1 << 20)
    canonical = [(f"bench/line{i % 2}/cam{i % 4}/detections".encode(), message(i, "cost", i % 4))
                 for i in range(messages)]
    roboflow = [(b"rf/line1/cam2", _ROBOFLOW)] * messages
    for topic, payload in (canonical[0], roboflow[0]):
        result = ingestor.process(topic, payload, time.time())
        if result.dead_letter is not None or not result.records:
            raise RuntimeError(f"the sample message did not become an event: {result.dead_letter}")
    out: dict[str, tuple[float, float]] = {}
    for name, batch in (("canonical", canonical), ("roboflow", roboflow)):
        costs = []
        for _ in range(runs):
            now = time.time()
            started = time.perf_counter()
            for topic, payload in batch:
                ingestor.process(topic, payload, now)
            costs.append((time.perf_counter() - started) / messages * 1e6)
        out[name] = (min(costs), statistics.median(costs))
    return out


def main(argv: list[str] | None = None) -> None:
    """Print one line per format."""
    parser = argparse.ArgumentParser(description="per-message ingest cost")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args(argv)
    for name, (fastest, median) in measure(args.runs, args.messages).items():
        print(f"{name:<9} min {fastest:6.1f} us/message  median {median:6.1f}  ({args.runs} runs x {args.messages})")


if __name__ == "__main__":
    main()
