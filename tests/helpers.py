"""Test helpers: waiting without sleeps, free ports, a real Mosquitto process, a paho test client.

Fixtures live in `conftest.py` and are built from these; tests import the helpers directly
(`from tests.helpers import wait_until`). Everything here drives real parts: no mocks.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from PIL import Image

from mqtt_bridge.devtools.bench.tree import tree_pids
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.sdk.publisher import Detection, build_message
from mqtt_bridge.service import Service

__all__ = [
    "LOCALHOST",
    "TEST_ROUTES",
    "BridgeFactory",
    "BridgeProcess",
    "BrokerAddress",
    "MosquittoBroker",
    "MosquittoFactory",
    "PahoClient",
    "ReceivedMessage",
    "bridge_config",
    "detection_message",
    "events_by_seq",
    "find_mosquitto",
    "free_port",
    "is_ci",
    "port_accepts_connections",
    "tiny_png",
    "wait_until",
]

LOCALHOST = "127.0.0.1"

_T = TypeVar("_T")


def is_ci() -> bool:
    """Return whether the tests run in CI, where a missing real service is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true"}


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on `host` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts_connections(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Return whether a TCP connection to `host:port` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], _T],
    timeout_s: float = 5.0,
    interval_s: float = 0.05,
    message: str = "condition",
) -> _T:
    """Poll `predicate` until it returns something truthy, and return that value.

    Raises:
        AssertionError: `predicate` stayed falsy for `timeout_s`; names `message` and the last value.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message} (last: {value!r})")
        time.sleep(interval_s)


class BrokerAddress(Protocol):
    """What a test needs to reach an MQTT broker; `EmbeddedBroker` and `MosquittoBroker` both provide it."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...


# --- Mosquitto ----------------------------------------------------------------------------------------------

_MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Return the path of the mosquitto binary, or None if it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in _MOSQUITTO_PATHS if os.access(path, os.X_OK)), None)


class MosquittoBroker:
    """One real Mosquitto process on 127.0.0.1, configured from a file in `workdir`.

    The conf, the persistence directory (`workdir/data/`), the broker log (`mosquitto.log`) and its stderr
    (`mosquitto.stderr`) all live in `workdir`, so `restart()` comes back on the same port with the same
    persisted sessions. Every process is stopped through its `Popen` handle.

    Args:
        binary: path of the mosquitto executable.
        workdir: private directory for this broker's files.
        port: TCP port; None picks a free one.
        persistence: write sessions and queued messages to disk (saved on SIGTERM and every autosave).
        max_queued_messages: per-client queue while offline (Mosquitto's default of 1000 drops the rest).
        max_inflight_messages: un-acked messages a v3.1.1 client may hold (Mosquitto's default is 20).
        extra_conf: more `mosquitto.conf` lines, appended verbatim.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = True,
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 100,
        extra_conf: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.host = LOCALHOST
        self.port = port or free_port(LOCALHOST)
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.stderr_path = workdir / "mosquitto.stderr"
        self.persistence_dir = workdir / "data"
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir.mkdir(mode=0o700, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.persistence_dir}/",
            f"max_queued_messages {max_queued_messages}",
            f"max_inflight_messages {max_inflight_messages}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # Started as root, Mosquitto drops to user `mosquitto`, which cannot write here, and persistence
            # then silently does nothing (reliability.md §5 "Setup notes").
            lines.append("user root")
        lines.extend(extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def url(self) -> str:
        """The broker address as `mqtt://host:port`."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while running, else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        """Whether the mosquitto process is alive."""
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Return the broker log and stderr so far (for assertion messages and debugging)."""
        paths = (self.log_path, self.stderr_path)
        parts = [path.read_text(errors="replace") for path in paths if path.exists()]
        return "\n".join(parts)

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        """Start the process and wait until the listener accepts TCP connections."""
        if self.is_running:
            raise RuntimeError(f"mosquitto already running on {self.url}")
        self._stderr = self.stderr_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
        )
        process = self._process

        def _ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {process.returncode} on start ({self.url}):\n{self.log_text()}"
                )
            return port_accepts_connections(self.host, self.port)

        try:
            wait_until(_ready, timeout_s=timeout_s, interval_s=0.02, message=f"mosquitto on {self.url}")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        """Send `sig` and wait for the process to end (SIGKILL after `timeout_s`). Return its exit code."""
        process, self._process = self._process, None
        returncode = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(sig)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout_s)
            returncode = process.returncode
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return returncode

    def kill(self) -> int | None:
        """Stop the process with SIGKILL: nothing is saved since the last autosave."""
        return self.stop(signal.SIGKILL)

    def restart(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> MosquittoBroker:
        """Stop with `sig`, then start again on the same port, conf and persistence directory."""
        self.stop(sig, timeout_s)
        return self.start(timeout_s)

    def __enter__(self) -> MosquittoBroker:
        return self.start() if not self.is_running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MosquittoFactory(Protocol):
    """The `mosquitto_factory` fixture: builds a `MosquittoBroker` in tmp_path (started by default)."""

    def __call__(
        self,
        *,
        port: int | None = None,
        persistence: bool = True,
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 100,
        extra_conf: Sequence[str] = (),
        start: bool = True,
    ) -> MosquittoBroker: ...


# --- paho test client ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as a test client received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int


class PahoClient:
    """A real paho client for tests: connect, subscribe and publish block until the broker answered.

    Received messages collect in `messages` (thread-safe). Always `close()` it (or use `with`): paho's network
    thread must be stopped, or the test leaks a thread and sockets.

    Args:
        broker: where to connect.
        client_id: "" lets the broker pick one (only with a clean session).
        clean_session: False keeps the session on the broker (v3.1.1 clean_session=False; v5 clean_start=False
            with `session_expiry_s`).
        protocol: "3.1.1" or "5".
        session_expiry_s: v5 only: how long the broker keeps the session after a disconnect.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        client_id: str = "",
        *,
        clean_session: bool = True,
        protocol: Literal["3.1.1", "5"] = "3.1.1",
        session_expiry_s: int = 3600,
        keepalive_s: int = 30,
    ) -> None:
        self.broker = broker
        self.protocol = protocol
        self._clean_session = clean_session
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self.connect_reason: ReasonCode | None = None
        self.session_present: bool | None = None
        if protocol == "5":
            self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                clean_session=clean_session,
                protocol=mqtt.MQTTv311,
            )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._loop_started = False

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the messages received so far, in arrival order."""
        with self._lock:
            return list(self._messages)

    @property
    def is_connected(self) -> bool:
        """Whether paho currently holds a connection to the broker."""
        return self._client.is_connected()

    def payloads(self) -> list[bytes]:
        """The payloads received so far, in arrival order."""
        return [message.payload for message in self.messages]

    def connect(self, timeout_s: float = 5.0) -> PahoClient:
        """Connect, start the network thread and wait for a successful CONNACK."""
        self._connected.clear()
        self._disconnected.clear()
        if self.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if not self._clean_session:
                properties.SessionExpiryInterval = self._session_expiry_s
            self._client.connect(
                self.broker.host,
                self.broker.port,
                keepalive=self._keepalive_s,
                clean_start=self._clean_session,
                properties=properties,
            )
        else:
            self._client.connect(self.broker.host, self.broker.port, keepalive=self._keepalive_s)
        self._client.loop_start()
        self._loop_started = True
        if not self._connected.wait(timeout_s):
            raise AssertionError(f"no CONNACK from {self.broker.url} within {timeout_s}s")
        if self.connect_reason is not None and self.connect_reason.is_failure:
            raise AssertionError(f"{self.broker.url} refused the connection: {self.connect_reason}")
        return self

    def subscribe(self, topic_filter: str, qos: int = 1, timeout_s: float = 5.0) -> list[ReasonCode]:
        """Subscribe and wait for the SUBACK; return its reason codes."""
        result, mid = self._client.subscribe(topic_filter, qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise AssertionError(f"subscribe {topic_filter!r} failed: {mqtt.error_string(result)}")
        codes = wait_until(
            lambda: self._pop_suback(mid), timeout_s=timeout_s, message=f"SUBACK for {topic_filter!r}"
        )
        assert codes is not None  # wait_until returns only a truthy value
        if any(code.is_failure for code in codes):
            raise AssertionError(f"{self.broker.url} refused the subscription to {topic_filter!r}: {codes}")
        return codes

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, *, retain: bool = False, timeout_s: float = 5.0
    ) -> None:
        """Publish one message and wait until the broker acknowledged it (PUBACK for QoS 1)."""
        self.publish_many([(topic, payload)], qos=qos, retain=retain, timeout_s=timeout_s)

    def publish_many(
        self,
        messages: Sequence[tuple[str, bytes | str]],
        qos: int = 1,
        *,
        retain: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        """Publish `(topic, payload)` pairs back to back, then wait until the broker acknowledged them all."""
        infos = [self._client.publish(topic, payload, qos=qos, retain=retain) for topic, payload in messages]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise AssertionError(f"broker {self.broker.url} did not acknowledge mid {info.mid} in time")

    def disconnect(self, timeout_s: float = 5.0) -> None:
        """Send DISCONNECT, wait until the connection is closed and stop the network thread."""
        if self._connected.is_set():
            self._client.disconnect()
            self._disconnected.wait(timeout_s)
        self.close()

    def close(self) -> None:
        """Stop the network thread and close the socket, connected or not. Safe to call twice.

        After the broker went away this takes up to 1 s: paho's network thread finishes its reconnect wait.
        """
        if self._connected.is_set() and not self._disconnected.is_set():
            self._client.disconnect()
        if self._loop_started:
            self._client.loop_stop()
            self._loop_started = False
        self._connected.clear()

    def __enter__(self) -> PahoClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _pop_suback(self, mid: int) -> list[ReasonCode] | None:
        with self._lock:
            return self._subacks.pop(mid, None)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connect_reason = reason_code
        self.session_present = flags.session_present
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._disconnected.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._subacks[mid] = reason_codes

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received = ReceivedMessage(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            mid=message.mid,
        )
        with self._lock:
            self._messages.append(received)


# --- the bridge under test ------------------------------------------------------------------------------------

TEST_ROUTES: list[dict[str, object]] = [
    {"name": "inspection", "topic": "{prefix}/factory/{line}/{camera}/detections", "format": "canonical",
     "use_case": "uc-a", "device_id": "{line}-{camera}", "stream_id": "{camera}", "event_type": "quality_check",
     "metadata": {"line": "{line}"}},
    {"name": "inference", "topic": "{prefix}/inference/{camera}", "format": "roboflow", "use_case": "uc-b",
     "device_id": "rf-{camera}", "event_type": "inventory_count"},
]


def bridge_config(broker: BrokerAddress, api_url: str, buffer_dir: Path, protocol: str = "5",
                  prefix: str = "t") -> dict[str, object]:
    """A raw bridge config for tests: fast retries and short batch waits, routes under `prefix/`."""
    routes = []
    for route in TEST_ROUTES:
        topic = str(route["topic"]).replace("{prefix}", prefix)
        routes.append({**route, "topic": topic})
    raw: dict[str, object] = {
        "mqtt": {"host": broker.host, "port": broker.port, "protocol": protocol,
                 "client_id": f"bridge-{uuid.uuid4().hex[:8]}", "reconnect_min_s": 1, "reconnect_max_s": 2},
        "api": {"base_url": api_url, "api_key": "demo-key", "retry_min_s": 0.05, "retry_max_s": 0.5,
                "read_timeout_s": 5},
        "buffer": {"path": str(buffer_dir), "min_free_bytes": 1},
        "flush": {"max_wait_s": 0.1, "shutdown_grace_s": 5},
        "health": {"enabled": False},
        "routes": routes,
    }
    return raw


class BridgeFactory(Protocol):
    """The `bridge_factory` fixture: start an in-process bridge against a broker and the emulator."""

    def __call__(self, broker: BrokerAddress, emulator: Emulator, protocol: str = "5",
                 **overrides: object) -> Service: ...


def tiny_png(seed: int) -> bytes:
    """A small valid PNG whose bytes differ per seed."""
    image = Image.new("RGB", (32, 24), (seed % 256, (seed * 7) % 256, (seed * 13) % 256))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def detection_message(seq: int, *, with_image: bool = False, run: str = "r") -> bytes:
    """A canonical message carrying `seq` and `run` in its metadata, one box, optionally an image."""
    return build_message(
        detections=[Detection("scratch" if seq % 2 else "Dent", 0.5 + (seq % 50) / 100, x=10 + seq % 7, y=12,
                              width=6, height=4)],
        image=tiny_png(seq) if with_image else None, image_size=(32, 24) if with_image else None,
        metadata={"seq": seq, "run": run})


def events_by_seq(events: list[dict[str, Any]], run: str = "r") -> dict[int, list[dict[str, Any]]]:
    """Group emulator events by the `seq` metadata of the message they came from."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        metadata = event.get("customMetadata") or {}
        if metadata.get("run") == run and isinstance(metadata.get("seq"), int):
            grouped.setdefault(metadata["seq"], []).append(event)
    return grouped


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, parents first ([] once `pid` is gone): the benchmark's reading of /proc."""
    return tree_pids(pid)


def tree_memory_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure summed over `pid` and its descendants (/proc/<pid>/status: VmRSS now, VmHWM peak), KiB."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def is_running(pid: int) -> bool:
    """The process exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def child_named(pid: int, name: str, not_in: Collection[int] = ()) -> int | None:
    """A running descendant of `pid` whose /proc/<pid>/comm is `name` (the bridge's children: bridge-receiver,
    bridge-worker) and that is not one of `not_in`, or None."""
    for member in process_tree(pid)[1:]:
        with contextlib.suppress(OSError):
            if (member not in not_in and is_running(member)
                    and Path(f"/proc/{member}/comm").read_text().strip() == name):
                return member
    return None


class BridgeProcess:
    """The bridge as a real subprocess (`python -m mqtt_bridge run`), for kill -9 and SIGTERM tests."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BridgeProcess:
        """Start the process; its output goes to `log_path` (appended)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mqtt_bridge", "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[1]))
        return self

    def wait_subscribed(self, timeout_s: float = 20.0) -> None:
        """Wait until this run of the process has subscribed (its session exists on the broker)."""
        runs = self.log_text().count("bridge started")
        wait_until(lambda: self.log_text().count("mqtt subscribed") >= runs, timeout_s=timeout_s,
                   message=f"bridge subscribed (log: {self.log_path})")

    def signal(self, sig: signal.Signals, timeout_s: float = 20.0) -> int:
        """Send `sig` and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        """Make sure the process is gone (SIGKILL after a grace period)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_text(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def demo_events(log_path: Path, minimum: int, *, url_timeout_s: float,
                events_timeout_s: float) -> tuple[str, list[dict[str, Any]]]:
    """A running `mqtt-bridge demo`'s emulator URL (read from its log) and, once it holds `minimum` events, those."""
    import requests

    match = wait_until(lambda: re.search(r"emulator: (http://127\.0\.0\.1:\d+)/", log_path.read_text()),
                       timeout_s=url_timeout_s, message="the demo prints its page URL")
    assert match is not None
    url = match.group(1)
    with requests.Session() as http:

        def stored_events() -> list[dict[str, Any]]:
            events: list[dict[str, Any]] = http.get(f"{url}/_emulator/events", timeout=5).json()["events"]
            return events if len(events) >= minimum else []

        return url, wait_until(stored_events, timeout_s=events_timeout_s, message="events in the emulator")
