"""A fast local sink speaking the Vision Events batch and upload API, for benchmarks.

Owns: accepting `POST /vision-events/batch` and `/upload` as fast as the stdlib allows (HTTP/1.1 keep-alive), and
recording per event: its `eventId` and how often it was written, its `seq` (from `customMetadata`, or from
`metadata` when a script posts the message as is) and the end-to-end latency taken from the `sent_ns` metadata the
load generator puts into each message. `GET /_sink/stats` reports counts and latency percentiles; `GET /_sink/count`
is the cheap poll while a run is under way; `POST /_sink/reset` clears. Runs as its own process:
`python -m mqtt_bridge.devtools.bench.sink --port N`.
"""

from __future__ import annotations

import argparse
import threading
import time
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

__all__ = ["SinkState", "main"]


class SinkState:
    """What the sink has seen. One lock; the sink is not on the measured process's CPU."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writes: dict[str, int] = {}
        self.seqs: dict[int, int] = {}
        self.latencies_ms = array("d")
        self.requests = 0
        self.first_s = 0.0
        self.last_s = 0.0

    def record(self, events: list[dict[str, object]]) -> None:
        now_ns = time.time_ns()
        with self.lock:
            self.requests += 1
            if not self.first_s:
                self.first_s = now_ns / 1e9
            self.last_s = now_ns / 1e9
            for event in events:
                metadata = event.get("customMetadata", event.get("metadata"))
                if not isinstance(metadata, dict):
                    metadata = {}
                event_id = event.get("eventId")
                # the bridge sends Vision Events (a rewrite of an eventId is an upsert); the naive script posts the
                # message as is, without an id, so each write of it is one more event at the API
                is_new = True
                if event_id is not None:
                    seen = self.writes.get(str(event_id), 0)
                    self.writes[str(event_id)] = seen + 1
                    is_new = not seen
                if is_new:
                    seq = metadata.get("seq")
                    if isinstance(seq, int):
                        self.seqs[seq] = self.seqs.get(seq, 0) + 1
                    sent = metadata.get("sent_ns")
                    if isinstance(sent, int):
                        self.latencies_ms.append((now_ns - sent) / 1e6)

    def stats(self) -> dict[str, object]:
        with self.lock:
            ordered = sorted(self.latencies_ms)

            def pct(p: float) -> float | None:
                return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else None

            return {"unique": len(self.writes), "unique_seqs": len(self.seqs),
                    "duplicate_seqs": sum(n - 1 for n in self.seqs.values()), "writes": sum(self.writes.values()),
                    "rewrites": sum(n - 1 for n in self.writes.values()), "requests": self.requests,
                    "first_s": self.first_s, "last_s": self.last_s,
                    "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}

    def count(self) -> dict[str, object]:
        """The cheap poll: how many messages arrived (no percentiles, so polling it costs the sink nothing)."""
        with self.lock:
            return {"unique_seqs": len(self.seqs), "requests": self.requests}

    def reset(self) -> None:
        with self.lock:
            self.writes.clear()
            self.seqs.clear()
            self.latencies_ms = array("d")
            self.requests = 0
            self.first_s = self.last_s = 0.0


def _handler(state: SinkState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: without this, 40 ms per reply

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/vision-events/batch"):
                events = orjson.loads(body)["events"]
                state.record(events)
                self._reply(201, orjson.dumps({"created": len(events),
                                               "eventIds": [e.get("eventId") for e in events]}))
            elif self.path.startswith("/vision-events/upload"):
                self._reply(201, orjson.dumps({"success": True, "sourceId": f"ve-img-{time.time_ns():x}"}))
            elif self.path == "/_sink/reset":
                state.reset()
                self._reply(200, b"{}")
            else:
                self._reply(404, b'{"error": "not found"}')

        def do_GET(self) -> None:  # http.server's naming
            if self.path == "/_sink/stats":
                self._reply(200, orjson.dumps(state.stats()))
            elif self.path == "/_sink/count":
                self._reply(200, orjson.dumps(state.count()))
            else:
                self._reply(404, b'{"error": "not found"}')

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(SinkState()))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
