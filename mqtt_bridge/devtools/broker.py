"""The embedded MQTT broker: an amqtt `Broker` on its own event loop in a named thread.

Owns: the amqtt configuration (one TCP listener, every client accepted, persistent sessions honoured), the
thread and event loop the broker runs on, and the foreground loop of `mqtt-bridge broker` (`serve`). It is the
only module that imports amqtt; no amqtt type or exception leaves it.

Must not: read config files or the environment, or be used where durability across restarts matters. amqtt
keeps everything in memory and speaks MQTT 3.1.1 only (design.md §5): it serves the demo and the tests.

Sessions. amqtt's stock `AnonymousAuthPlugin` marks every client it lets in as anonymous, and amqtt then drops
an anonymous client's session as soon as it disconnects and queues nothing for it. `_OpenAuthPlugin` accepts
every client without that mark, so a client that connects with `clean_session=False` keeps its subscriptions
and, when it comes back, gets the QoS 1/2 messages published while it was away (until `session_expiry_s`, if
set, or until the broker stops).

Limits measured with amqtt 0.12.1 (beyond design.md §5): messages queued for an offline session are replayed
with the RETAIN flag set; a QoS 1 message delivered but not yet PUBACKed when the client disconnects is not
redelivered on reconnect (nor one left un-acked for 5 s), so ack-after-commit protects against loss across a
bridge crash only on a real broker such as Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from mqtt_bridge.errors import BridgeError

__all__ = ["EmbeddedBroker", "EmbeddedBrokerError", "serve"]

logger = logging.getLogger(__name__)

# amqtt logs every connection and plugin load at INFO, and `transitions` (its state machines) every state
# change; their loggers all sit below these two.
_CHATTY_LOGGERS = ("amqtt", "transitions")


class EmbeddedBrokerError(BridgeError):
    """The embedded broker could not start or stop in time."""


class _OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Accept every client, with or without a username, and keep its persistent session (module docstring)."""

    @dataclass
    class Config:
        """No options: every client is accepted."""

    async def authenticate(self, *, session: Session) -> bool:
        """Accept the client without marking it anonymous."""
        del session
        return True


def _quiet_amqtt_logs() -> None:
    """Set amqtt's loggers to WARNING, unless the caller already gave them a level."""
    for name in _CHATTY_LOGGERS:
        chatty = logging.getLogger(name)
        if chatty.level == logging.NOTSET:
            chatty.setLevel(logging.WARNING)


def _pick_free_port(host: str) -> int:
    """Ask the OS for a free TCP port on `host`. amqtt needs a concrete port to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """An in-memory MQTT 3.1.1 broker on `host:port`, running in a background thread.

    Use `start()`/`stop()` or a `with` block. Port 0 picks a free port at `start()`; read it from `port` or
    `url`.

    Args:
        host: address to listen on; the default keeps the broker local.
        port: TCP port, or 0 for a free one.
        session_expiry_s: drop a disconnected persistent session (and its queued messages) after this many
            seconds; None keeps it for the broker's lifetime.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, session_expiry_s: int | None = None
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port = port
        self._session_expiry_s = session_expiry_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def port(self) -> int:
        """The TCP port the broker listens on (known after `start()` when constructed with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """The broker address as `mqtt://host:port`."""
        return f"mqtt://{self.host}:{self._port}"

    @property
    def is_running(self) -> bool:
        """Whether the broker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and block until its listener accepts TCP connections.

        Raises:
            EmbeddedBrokerError: the broker is already running, failed to start, or did not listen within
                `timeout_s`.
        """
        if self.is_running:
            raise EmbeddedBrokerError(f"broker already running on {self.url}")
        _quiet_amqtt_logs()
        deadline = time.monotonic() + timeout_s
        self._port = self._requested_port or _pick_free_port(self.host)
        self._started.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name=f"amqtt-broker-{self._port}", daemon=True)
        # Daemon: the broker holds nothing durable (amqtt is in memory), and a forgotten stop() must not keep
        # the process alive after the main thread ends.
        self._thread.start()
        if not self._started.wait(max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(EmbeddedBrokerError):  # report the start failure, not the stop's
                self.stop(timeout_s=1.0)
            raise EmbeddedBrokerError(f"broker on {self.url} did not start within {timeout_s}s")
        if self._start_error is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            raise EmbeddedBrokerError(f"broker on {self.url} failed to start: {self._start_error}") from (
                self._start_error
            )
        logger.info("embedded broker started url=%s", self.url)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the broker down (disconnecting every client) and join its thread. Safe to call twice.

        Raises:
            EmbeddedBrokerError: the thread did not end within `timeout_s`.
        """
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: the thread is ending on its own
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(timeout_s)
        if thread.is_alive():
            raise EmbeddedBrokerError(f"broker on {self.url} did not stop within {timeout_s}s")
        self._thread = None
        logger.info("embedded broker stopped url=%s", self.url)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _config(self) -> BrokerConfig:
        # Only non-deprecated fields: listeners, and plugins by dotted path (no `auth`, `topic-check` or
        # `sys_interval`). Leaving out BrokerSysPlugin also avoids its psutil DeprecationWarning and $SYS
        # traffic; leaving out the logging plugins saves a call per packet.
        listener = ListenerConfig(type=ListenerType.TCP, bind=f"{self.host}:{self._port}")
        plugins: dict[str, Any] = {f"{__name__}.{_OpenAuthPlugin.__name__}": {}}
        return BrokerConfig(
            listeners={"default": listener},
            plugins=plugins,
            session_expiry_interval=self._session_expiry_s,
        )

    def _run(self) -> None:
        """Thread body: run the broker's event loop until `stop()`."""
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # edge of the thread: report to start(), never die silently
            if not self._started.is_set():
                self._start_error = exc
            else:
                logger.exception("embedded broker crashed url=%s", self.url)
        finally:
            self._started.set()
            self._loop = None
            self._stop_requested = None

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        broker = Broker(self._config(), loop=self._loop)
        await broker.start()
        # broker.start() awaited asyncio.start_server, which returns after listen(): from here on the kernel
        # accepts TCP connections on the port (a probe connection would only make amqtt log an error).
        self._started.set()
        try:
            await self._stop_requested.wait()
        finally:
            await broker.shutdown()


def serve(host: str, port: int) -> None:
    """Run the embedded broker in the foreground until SIGINT or SIGTERM (`mqtt-bridge broker`)."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        logger.info("embedded broker stopping signal=%s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EmbeddedBroker(host, port) as broker:
            logger.info("embedded broker listening url=%s (MQTT 3.1.1 only, in memory)", broker.url)
            while not stop.is_set():
                stop.wait(1.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
