"""The benchmark's baselines, written the way a hand-made script is: paho straight into the handler.

- `receive-only`: a paho subscriber that only counts (auto-ack): the ceiling of what can come off the broker.
- `naive`: a paho subscriber that turns each message into an event in memory and POSTs 100 at a time from a
  sender thread (auto-ack before anything is stored: it loses data on any crash or API error).

Both speak MQTT 5 with the same Receive Maximum as the bridge, keep a persistent session (so the drain mode can
queue a backlog for them), print `ready` once subscribed and a JSON line with their own counts when they have seen
`--count` messages. Run as `python -m mqtt_bridge.devtools.bench.baselines receive-only|naive ...`.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid

import orjson
import paho.mqtt.client as paho
import requests
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["main"]


def _client(client_id: str, receive_maximum: int) -> tuple[paho.Client, Properties]:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = receive_maximum
    return client, properties


def main(argv: list[str] | None = None) -> None:
    """Run one baseline until `--count` messages were handled."""
    parser = argparse.ArgumentParser(description="benchmark baselines")
    parser.add_argument("kind", choices=["receive-only", "naive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sink", default="")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--receive-maximum", type=int, default=500)
    parser.add_argument("--topic", default="bench/+/+/detections")
    parser.add_argument("--setup-only", action="store_true", help="create the session, then exit")
    args = parser.parse_args(argv)

    done = threading.Event()
    seen = [0]
    first_last = [0.0, 0.0]
    batch: list[dict[str, object]] = []
    lock = threading.Lock()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        if not seen[0]:
            first_last[0] = now
        seen[0] += 1
        first_last[1] = now
        if args.kind == "naive":
            payload = orjson.loads(msg.payload)
            levels = msg.topic.split("/")
            event = {"eventId": str(uuid.uuid4()), "eventType": "quality_check", "useCaseId": "bench",
                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                     "deviceId": f"{levels[1]}-{levels[2]}", "eventData": {"result": "fail"},
                     "customMetadata": payload.get("metadata", {})}
            with lock:
                batch.append(event)
        if seen[0] >= args.count:
            done.set()

    def on_connect(client: paho.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        # "ready" before any message: with a resumed session the queued backlog follows the CONNACK at once
        if not args.setup_only:
            sys.stdout.write("ready\n")
            sys.stdout.flush()
        client.subscribe(args.topic, qos=1)

    def on_subscribe(client: paho.Client, *rest: object) -> None:
        if args.setup_only:  # the session now holds the subscription: the backlog can be queued for us
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            done.set()

    def sender() -> None:
        session = requests.Session()
        while True:
            with lock:
                chunk = batch[:100]
                del batch[:100]
            if chunk:
                session.post(f"{args.sink}/vision-events/batch", data=orjson.dumps({"events": chunk}),
                             headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
                             timeout=30)
            elif done.is_set():
                return
            else:
                time.sleep(0.01)

    client, properties = _client(args.client_id, args.receive_maximum)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect("127.0.0.1", args.port, keepalive=60, clean_start=False, properties=properties)
    sending = threading.Thread(target=sender, daemon=True) if args.kind == "naive" else None
    if sending is not None:
        sending.start()
    client.loop_start()
    done.wait()
    if sending is not None:
        sending.join()
    client.disconnect()
    client.loop_stop()
    sys.stdout.write(orjson.dumps({"received": seen[0], "first_s": first_last[0], "last_s": first_last[1]}).decode()
                     + "\n")
    sys.stdout.flush()
    if not args.setup_only:
        sys.stdin.read()  # stay alive (for the runner's /proc readings) until it closes our stdin


if __name__ == "__main__":
    main()
