"""The benchmark's publisher: QoS 1 detection messages of about 655 bytes, at full speed or at a fixed rate.

Owns: the load shape. Each message is a canonical detection message whose metadata carries `seq`, `run` and
`sent_ns` (wall-clock nanoseconds at publish), so the sink can measure end-to-end latency and spot losses and
duplicates. Flow control keeps at most `window` messages un-acknowledged. Runs as its own process:
`python -m mqtt_bridge.devtools.bench.load --port P --count N [--rate R]`; prints one JSON line when done.

Uses paho directly (not `mqtt_bridge.subscriber`): it is a load generator, not part of the product.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["main", "message"]

_DETECTIONS = [
    {"class": label, "confidence": conf, "x": x, "y": 240.5, "width": 42.0, "height": 31.25}
    for label, conf, x in (("scratch", 0.912, 120.0), ("dent", 0.833, 310.5), ("missing_screw", 0.771, 502.0),
                           ("scratch", 0.655, 640.0), ("burr", 0.702, 1010.25))
]


def message(seq: int, run: str, topic_index: int) -> bytes:
    """One ~655-byte canonical message."""
    return orjson.dumps({
        "schema": "mqtt-vision-bridge/message/v1",
        "detections": _DETECTIONS,
        "metadata": {"seq": seq, "run": run, "sent_ns": time.time_ns(), "station": f"st-{topic_index}",
                     "serial": f"SN-{seq:010d}", "shift": "B"},
        "event_data": {"externalId": f"part-{seq:010d}"},
    })


def main(argv: list[str] | None = None) -> None:
    """Publish, then print `{"published", "acked", "seconds"}` as JSON on stdout."""
    parser = argparse.ArgumentParser(description="benchmark publisher")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 = as fast as possible")
    parser.add_argument("--run", default="bench")
    parser.add_argument("--topics", type=int, default=4)
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args(argv)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-load-{args.run}")
    client.max_inflight_messages_set(args.window)
    client.connect("127.0.0.1", args.port, keepalive=60)
    client.loop_start()
    pending: collections.deque[paho.MQTTMessageInfo] = collections.deque()
    topics = [f"bench/line{i % 2}/cam{i}/detections" for i in range(args.topics)]
    started = time.monotonic()
    for seq in range(args.count):
        if args.rate > 0:
            delay = started + seq / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        while len(pending) >= args.window:
            pending.popleft().wait_for_publish(60)
        index = seq % len(topics)
        pending.append(client.publish(topics[index], message(seq, args.run, index), qos=1))
    for info in pending:
        info.wait_for_publish(120)
    elapsed = time.monotonic() - started
    acked = args.count - sum(not info.is_published() for info in pending)
    client.disconnect()
    client.loop_stop()
    sys.stdout.write(orjson.dumps({"published": args.count, "acked": acked, "seconds": elapsed}).decode() + "\n")


if __name__ == "__main__":
    main()
