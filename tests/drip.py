"""Slow-drip HTTP servers for the fetch-deadline tests (unit and fault suites share one).

Owns: the six ways a server can drip a response a byte at a time (`DRIPS`) and `DripServer`, a raw TCP server that
reads a request for `/<kind>/...`, sends that kind's head at once and then its drip one byte every `every_s` until the
client hangs up or `give_up_s` has passed (so a fetch without a deadline ends, and fails its test on its duration
rather than hanging it). It counts open connections and records how long each lasted.
"""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["DRIPS", "DripServer"]

# What each slow server sends: (at once, then one byte at a time, repeating).
DRIPS = {
    "status_line": (b"", b"HTTP/1.1 200 OK"),  # never finishes the status line
    "headers": (b"HTTP/1.1 200 OK\r\n", b"X-Slow: yes\r\n"),  # a header line at a time, never the blank line
    "continue": (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),  # endless 100 Continue
    "chunk_sizes": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n"),  # tiny chunks
    "chunk_size_line": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"0"),  # 000000... no end
    "body": (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n\xff\xd8\xff", b"x"),
}


class DripServer:
    """Serves `DRIPS[kind]` for a request path `/<kind>/...` (`body` for an unknown kind), or `DRIPS[only]` for
    every path when `only` is given."""

    def __init__(self, every_s: float = 0.05, give_up_s: float = 60.0, only: str | None = None) -> None:
        self.every_s, self.give_up_s, self.only = every_s, give_up_s, only
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self.open = 0
        self.durations_s: list[float] = []
        threading.Thread(target=self._accept, name="drip-accept", daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), name="drip-conn", daemon=True).start()

    def _kind(self, request: bytes) -> str:
        if self.only is not None:
            return self.only
        path = request.split(b" ", 2)[1].decode(errors="replace") if request.count(b" ") >= 2 else "/body/0.jpg"
        kind = path.split("/")[1] if path.count("/") >= 1 else "body"
        return kind if kind in DRIPS else "body"

    def _serve(self, conn: socket.socket) -> None:
        started = time.monotonic()
        with self._lock:
            self.open += 1
        try:
            with conn:
                conn.settimeout(5)
                head, drip = DRIPS[self._kind(conn.recv(65536))]
                conn.sendall(head)
                index = 0
                while time.monotonic() - started < self.give_up_s and not self.stopped.is_set():
                    conn.sendall(drip[index % len(drip):index % len(drip) + 1])
                    index += 1
                    time.sleep(self.every_s)
        except OSError:
            pass  # the client hung up: what a deadline does
        finally:
            with self._lock:
                self.open -= 1
                self.durations_s.append(time.monotonic() - started)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
