"""The benchmark's baselines and capacity clients, written the way a user writes a script: paho and requests as is.

- `naive`: what people write (issue 14 item 5): `paho.Client(CallbackAPIVersion.VERSION2)` with paho's defaults
  (MQTT 3.1.1, auto-ack), one `on_message` that appends `json.loads(payload)` to a list, and a sender thread that
  posts 100 at a time to the batch endpoint with a `requests.Session` (`json=`), a partial batch once its oldest
  message waited `--max-wait-s` (the bridge's `flush.max_wait_s` in the same run). Not durable: it acks before
  anything is stored and loses data on any crash or API error. The only non-default is `clean_session=False` with a
  fixed client id, without which no script can drain a backlog queued while it was away (the drain mode).
- `naive-mqtt5`: the same script on MQTT 5 (session expiry 1 h, paho's default Receive Maximum): the protocol's cost.
- `receive-only`, `receive-only-mqtt5`: a paho subscriber that only counts (auto-ack): the ceiling of what comes off
  the broker, with each protocol.
- `sink-load`: the sink's own capacity: posts ready-made batches of `--batch` events straight to the sink from
  `--clients` threads, each with its own keep-alive `http.client` connection (requests would measure itself).

Subscribers print `ready` once subscribed and a JSON line with their counts when they have seen `--count` messages,
then wait for stdin to close (so the runner can read `/proc` while they are alive). Run as
`python -m mqtt_bridge.devtools.bench.baselines KIND ...`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

import orjson
import paho.mqtt.client as paho
import requests
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["KINDS", "main"]

KINDS = ("naive", "naive-mqtt5", "receive-only", "receive-only-mqtt5")


def _client(kind: str, client_id: str) -> tuple[paho.Client, Properties | None]:
    """paho as a user makes it: defaults, except the persistent session a backlog needs."""
    if kind.endswith("-mqtt5"):
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        return client, properties
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False), None


def _subscriber(args: argparse.Namespace) -> None:
    done = threading.Event()
    seen = [0]
    first_last = [0.0, 0.0]
    batch: list[object] = []
    is_naive = args.kind.startswith("naive")

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        if not seen[0]:
            first_last[0] = now
        seen[0] += 1
        first_last[1] = now
        if is_naive:
            batch.append(json.loads(msg.payload))  # list.append is atomic under the GIL, as users rely on
        if seen[0] >= args.count:
            done.set()

    def on_connect(client: paho.Client, *rest: object) -> None:
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
        url = f"{args.sink}/vision-events/batch"
        oldest = 0.0
        while True:
            if batch and not oldest:
                oldest = time.monotonic()
            # 100 per POST; a partial batch once its oldest message waited max_wait_s (or at the end)
            if len(batch) >= 100 or (batch and (done.is_set() or time.monotonic() - oldest >= args.max_wait_s)):
                chunk = batch[:100]
                del batch[:len(chunk)]
                oldest = 0.0
                session.post(url, json={"events": chunk}, headers={"Authorization": "Bearer bench"}, timeout=30)
            elif done.is_set():
                return
            else:
                time.sleep(0.01)

    client, properties = _client(args.kind, args.client_id)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    if properties is not None:
        client.connect("127.0.0.1", args.port, keepalive=60, clean_start=False, properties=properties)
    else:
        client.connect("127.0.0.1", args.port, keepalive=60)
    sending = threading.Thread(target=sender, name="sender") if is_naive and not args.setup_only else None
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


def _sink_load(args: argparse.Namespace) -> None:
    """Post `--count` events in batches straight to the sink; print events/s."""
    from mqtt_bridge.devtools.bench.load import message  # noqa: PLC0415 - the same messages as the publisher

    batches = max(1, args.count // args.batch)
    bodies = [orjson.dumps({"events": [orjson.loads(message(b * args.batch + i, "sink-capacity", i % 4))
                                       for i in range(args.batch)]}) for b in range(batches)]
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}

    address = urllib.parse.urlsplit(args.sink)

    def post(share: list[bytes]) -> None:
        # http.client, not requests: this measures the sink, and requests' own cost per POST would be the limit
        connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
        for body in share:
            connection.request("POST", "/vision-events/batch", body=body, headers=headers)
            reply = connection.getresponse()
            reply.read()
            if reply.status != 201:
                raise RuntimeError(f"the sink answered {reply.status}")
        connection.close()

    threads = [threading.Thread(target=post, args=(bodies[n::args.clients],), name=f"sink-load-{n}")
               for n in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    sys.stdout.write(orjson.dumps({"events": batches * args.batch, "seconds": elapsed,
                                   "events_per_s": batches * args.batch / elapsed}).decode() + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run one baseline until `--count` messages were handled, or the sink's capacity client."""
    parser = argparse.ArgumentParser(description="benchmark baselines")
    parser.add_argument("kind", choices=[*KINDS, "sink-load"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sink", default="")
    parser.add_argument("--client-id", default="bench-baseline")
    parser.add_argument("--topic", default="bench/+/+/detections")
    parser.add_argument("--max-wait-s", type=float, default=0.5, help="naive: post a partial batch after this")
    parser.add_argument("--setup-only", action="store_true", help="create the session, then exit")
    parser.add_argument("--batch", type=int, default=100, help="sink-load: events per POST")
    parser.add_argument("--clients", type=int, default=2, help="sink-load: parallel connections")
    args = parser.parse_args(argv)
    if args.kind == "sink-load":
        _sink_load(args)
    else:
        _subscriber(args)


if __name__ == "__main__":
    main()
