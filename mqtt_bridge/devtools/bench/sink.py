"""A fast local sink speaking the Vision Events batch and upload API, for benchmarks.

Owns: accepting `POST /vision-events/batch` and `/upload` fast (asyncio, HTTP/1.1 keep-alive), and
recording per event: its `eventId` and how often it was written, its `seq` (from `customMetadata`, or from
`metadata` when a script posts the message as is) and the end-to-end latency taken from the `sent_ns` metadata the
load generator puts into each message. `GET /_sink/stats` reports counts and latency percentiles; `GET /_sink/count`
is the cheap poll while a run is under way; `POST /_sink/reset` clears. Runs as its own process:
`python -m mqtt_bridge.devtools.bench.sink --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from array import array

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


def _route(state: SinkState, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """The reply (status, JSON body) to one request."""
    if method == "POST" and path.startswith("/vision-events/batch"):
        events = orjson.loads(body)["events"]
        state.record(events)
        return 201, orjson.dumps({"created": len(events), "eventIds": [e.get("eventId") for e in events]})
    if method == "POST" and path.startswith("/vision-events/upload"):
        return 201, orjson.dumps({"success": True, "sourceId": f"ve-img-{time.time_ns():x}"})
    if method == "POST" and path == "/_sink/reset":
        state.reset()
        return 200, b"{}"
    if method == "GET" and path == "/_sink/stats":
        return 200, orjson.dumps(state.stats())
    if method == "GET" and path == "/_sink/count":
        return 200, orjson.dumps(state.count())
    return 404, b'{"error": "not found"}'


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: requests with a Content-Length body (what requests and urllib3 send).

    A hand-made parser on purpose: the stdlib's `http.server` (one thread per connection, email-style header
    parsing) held the sink to ~45k events/s on a quiet machine, less than 3x what the systems post (issue 14).
    """

    def __init__(self, state: SinkState) -> None:
        self._state = state
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            method, path = [*lines[0].split(" "), "", ""][:2]
            length = next((int(line.partition(":")[2]) for line in lines[1:]
                           if line.partition(":")[0].strip().lower() == "content-length"), 0)
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4:end + 4 + length])
            del self._buffer[:end + 4 + length]
            try:
                status, reply = _route(self._state, method, path, body)
            except (ValueError, KeyError, TypeError, AttributeError):  # not a batch body: the client's mistake
                status, reply = 400, b'{"error": "bad request"}'
            self._transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                                  % (status, _REASONS.get(status, b"OK"), len(reply)) + reply)


_REASONS = {200: b"OK", 201: b"Created", 400: b"Bad Request", 404: b"Not Found"}


async def _serve(port: int) -> None:
    state = SinkState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
