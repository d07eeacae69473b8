"""A small loopback TCP proxy that cuts the network between the bridge and the broker on command.

Owns: forwarding bytes between a local port and a target, and three network faults (reliability.md §5 T12):

- `blackhole()`: nothing flows in either direction, but every socket stays open, as behind a dead switch or a
  NAT that forgot the connection: a half-open TCP connection that only keepalives can detect. New connections
  are accepted and held.
- `reset()`: every current connection is closed with a TCP RST on both sides (SO_LINGER 0).
- `restore()`: bytes flow again; held connections are connected to the target.

Threads and blocking sockets only; every thread is named and joined by `stop()`. Listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Callable

from tests.helpers import LOCALHOST

__all__ = ["TcpProxy"]

_CHUNK = 65536
_POLL_S = 0.1


class _Link:
    """One proxied connection: the client's socket and, once flowing, the target's."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.is_closed = False
        self.lock = threading.Lock()

    def close(self, *, is_reset: bool) -> None:
        with self.lock:
            if self.is_closed:
                return
            self.is_closed = True
            for sock in (self.client, self.upstream):
                if sock is None:
                    continue
                with contextlib.suppress(OSError):
                    if is_reset:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    else:
                        sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


class TcpProxy:
    """Forwards `127.0.0.1:<port>` to `target_host:target_port` until told to cut. Has `host`, `port`, `url`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = LOCALHOST
        self._listener = socket.create_server((LOCALHOST, 0))
        self._listener.settimeout(_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept")
        self.accepted = 0
        self.resets = 0

    @property
    def url(self) -> str:
        """The proxy's address as `mqtt://host:port`."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> TcpProxy:
        """Start accepting connections."""
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Close every connection and the listener; join every thread."""
        self._stopping.set()
        self._flowing.set()
        self._acceptor.join(5)
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close(is_reset=False)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults -----------------------------------------------------------------------------------------------

    def blackhole(self) -> None:
        """Stop forwarding in both directions; keep every socket open (half-open connections)."""
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again."""
        self._flowing.set()

    def reset(self) -> int:
        """Send RST on every current connection (both sides); returns how many were reset."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close(is_reset=True)
        self.resets += len(links)
        return len(links)

    # --- threads ----------------------------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], link: _Link | None, name: str) -> None:
        thread = threading.Thread(target=target, args=() if link is None else (link,), name=name)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            link = _Link(client)
            with self._lock:
                self._links.append(link)
            self._spawn(self._connect_and_pump, link, "proxy-up")

    def _connect_and_pump(self, link: _Link) -> None:
        while not self._flowing.wait(_POLL_S):  # a connection made during a blackhole is held, not refused
            if link.is_closed or self._stopping.is_set():
                link.close(is_reset=False)
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            link.close(is_reset=True)
            return
        with link.lock:
            if link.is_closed:
                upstream.close()
                return
            link.upstream = upstream
        self._spawn(lambda: self._pump(link, upstream, link.client), None, "proxy-down")
        self._pump(link, link.client, upstream)

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        while not link.is_closed:
            if not self._flowing.wait(_POLL_S):
                continue
            try:
                readable, _, _ = select.select([source], [], [], _POLL_S)
                if not readable:
                    continue
                if not self._flowing.is_set():
                    continue  # cut while we waited: leave the bytes unread
                data = source.recv(_CHUNK)
                if not data:
                    break
                sink.sendall(data)
            except (OSError, ValueError):  # ValueError: the socket was closed under us (fileno -1)
                break
        link.close(is_reset=False)
