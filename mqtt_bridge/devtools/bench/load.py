"""The benchmark's publisher: QoS 1 detection messages of about 655 bytes, at full speed or at a fixed rate.

Owns: the load shape. Each message is a canonical detection message whose metadata carries `seq`, `run` and
`sent_ns` (wall-clock nanoseconds when it is encoded, just before it is written), so the sink can measure end-to-end
latency and spot losses and duplicates. `--first` offsets `seq`, so several publishers can share a run. Flow control
keeps at most `--window` messages un-acknowledged by the broker. Runs as its own process:
`python -m mqtt_bridge.devtools.bench.load --port P --count N [--rate R]`; prints one JSON line when done.

It speaks MQTT 3.1.1 over a plain socket instead of using paho: a load generator must be several times faster than
what it measures (the capacity rule in `devtools.bench.report`), and paho's publisher cannot be: every PUBACK
rescans all un-acknowledged messages (`Client._update_inflight`) and every publish wakes its network thread, which
held the old publisher to ~3k msg/s. Here packets are encoded in one go, written in large chunks, and PUBACKs are
counted by a reader thread. Only what a QoS 1 publisher needs: CONNECT/CONNACK, PUBLISH, PUBACK, DISCONNECT.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
import time

import orjson

__all__ = ["RawPublisher", "main", "message"]

_DETECTIONS = [
    {"class": label, "confidence": conf, "x": x, "y": 240.5, "width": 42.0, "height": 31.25}
    for label, conf, x in (("scratch", 0.912, 120.0), ("dent", 0.833, 310.5), ("missing_screw", 0.771, 502.0),
                           ("scratch", 0.655, 640.0), ("burr", 0.702, 1010.25))
]
_CHUNK_BYTES = 64 * 1024


def message(seq: int, run: str, topic_index: int) -> bytes:
    """One ~655-byte canonical message."""
    return orjson.dumps({
        "schema": "mqtt-vision-bridge/message/v1",
        "detections": _DETECTIONS,
        "metadata": {"seq": seq, "run": run, "sent_ns": time.time_ns(), "station": f"st-{topic_index}",
                     "serial": f"SN-{seq:010d}", "shift": "B"},
        "event_data": {"externalId": f"part-{seq:010d}"},
    })


def _length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class RawPublisher:
    """A QoS 1 MQTT 3.1.1 publisher on one socket; the broker's PUBACKs are counted by a reader thread."""

    def __init__(self, port: int, client_id: str, window: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _utf8(client_id)  # clean, no keepalive
        self._sock.sendall(b"\x10" + _length(len(body)) + body)
        connack = self._sock.recv(4)
        if len(connack) != 4 or connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the publisher: {connack!r}")
        self._sock.settimeout(None)
        self.window = min(window, 60_000)  # packet ids are 16 bits: never reuse one still in flight
        self.sent = 0
        self.acked = 0
        self._packet_id = 0
        self._acked_changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_acks, name="bench-load-acks", daemon=True)
        self._reader.start()

    def _read_acks(self) -> None:
        buffer = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._acked_changed:
                    self._acked_changed.notify_all()
                return
            buffer += data
            count, offset = 0, 0
            while offset + 2 <= len(buffer):  # the broker sends PUBACKs only: 0x40 0x02 id id
                size = buffer[offset + 1]
                if offset + 2 + size > len(buffer):
                    break
                count += buffer[offset] & 0xF0 == 0x40
                offset += 2 + size
            buffer = buffer[offset:]
            with self._acked_changed:
                self.acked += count
                self._acked_changed.notify_all()

    def _wait_window(self, free: int) -> None:
        with self._acked_changed:
            while self.sent - self.acked > self.window - free and self._reader.is_alive():
                self._acked_changed.wait(1.0)

    def publish(self, packets: list[bytes]) -> None:
        """Write ready-made PUBLISH packets, waiting while the window is full."""
        self._wait_window(len(packets))
        self._sock.sendall(b"".join(packets))
        self.sent += len(packets)

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        """A QoS 1 PUBLISH packet with the next packet id (`topic` is already length-prefixed)."""
        self._packet_id = self._packet_id % 65535 + 1
        body_length = len(topic) + 2 + len(payload)
        return b"\x32" + _length(body_length) + topic + struct.pack("!H", self._packet_id) + payload

    def finish(self, timeout_s: float) -> None:
        """Wait for every PUBACK (or `timeout_s`), then disconnect."""
        deadline = time.monotonic() + timeout_s
        with self._acked_changed:
            while self.acked < self.sent and time.monotonic() < deadline and self._reader.is_alive():
                self._acked_changed.wait(0.5)
        try:
            self._sock.sendall(b"\xe0\x00")
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the broker went first: the counts say what it confirmed
        self._sock.close()


def main(argv: list[str] | None = None) -> None:
    """Publish, then print `{"published", "acked", "seconds"}` as JSON on stdout."""
    parser = argparse.ArgumentParser(description="benchmark publisher")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="seq of the first message")
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 = as fast as possible")
    parser.add_argument("--run", default="bench")
    parser.add_argument("--topics", type=int, default=4)
    parser.add_argument("--window", type=int, default=5000)
    args = parser.parse_args(argv)

    publisher = RawPublisher(args.port, f"bench-load-{args.run}-{args.first}", args.window)
    topics = [_utf8(f"bench/line{i % 2}/cam{i}/detections") for i in range(args.topics)]
    started = time.monotonic()
    pending: list[bytes] = []
    pending_bytes = 0
    for seq in range(args.first, args.first + args.count):
        index = seq % len(topics)
        if args.rate > 0:  # one write per message, on time
            delay = started + (seq - args.first) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publisher.publish([publisher.packet(topics[index], message(seq, args.run, index))])
            continue
        packet = publisher.packet(topics[index], message(seq, args.run, index))
        pending.append(packet)
        pending_bytes += len(packet)
        if pending_bytes >= _CHUNK_BYTES or len(pending) >= publisher.window // 2:
            publisher.publish(pending)
            pending, pending_bytes = [], 0
    if pending:
        publisher.publish(pending)
    publisher.finish(120)
    elapsed = time.monotonic() - started
    sys.stdout.write(orjson.dumps({"published": args.count, "acked": publisher.acked, "seconds": elapsed}).decode()
                     + "\n")


if __name__ == "__main__":
    main()
