"""The publisher side of the fault harness: QoS 1 messages with unique ids, and a ledger of what the broker acked.

Owns: building the test stream (`valid_stream`), publishing it at a steady rate through a real paho client with a
persistent session (so that a broker restart resends what was in flight), and the `Ledger`: for every message,
whether the broker's PUBACK arrived. Only PUBACKed messages count as "must arrive"; the others are "unsure"
(reliability.md §5, Jepsen-style). Must not look at the bridge or the API.
"""

from __future__ import annotations

import io
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from PIL import Image

from mqtt_bridge.sdk.publisher import Detection, build_message
from tests.helpers import BrokerAddress, detection_message

__all__ = ["Ledger", "Outgoing", "Publisher", "bulky_stream", "stream_topic", "valid_stream"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message the harness publishes. `msg_id` is unique across the run (`<run>:<seq>`)."""

    msg_id: str
    topic: str
    payload: bytes


def stream_topic(seq: int) -> str:
    """The topic of valid message `seq`: spread over two lines and three cameras of the test route."""
    return f"t/factory/L{seq % 2}/cam{seq % 3}/detections"


def valid_stream(run: str, count: int, *, start: int = 0, image_every: int = 0) -> list[Outgoing]:
    """`count` canonical detection messages tagged with `run` and their seq; every n-th one carries an image."""
    return [Outgoing(f"{run}:{seq}", stream_topic(seq),
                     detection_message(seq, run=run, with_image=image_every > 0 and seq % image_every == 0))
            for seq in range(start, start + count)]


def bulky_stream(run: str, count: int, rng: random.Random, *, image_side: int = 48) -> list[Outgoing]:
    """Messages carrying an incompressible PNG each (about 3 x image_side² bytes), to fill a buffer quickly."""
    out = []
    for seq in range(count):
        image = Image.frombytes("RGB", (image_side, image_side), rng.randbytes(3 * image_side * image_side))
        png = io.BytesIO()
        image.save(png, format="PNG")
        payload = build_message(detections=[Detection("scratch", 0.9, x=10, y=10, width=6, height=4)],
                                image=png.getvalue(), image_size=(image_side, image_side),
                                metadata={"seq": seq, "run": run})
        out.append(Outgoing(f"{run}:{seq}", stream_topic(seq), payload))
    return out


@dataclass(frozen=True, slots=True)
class Ledger:
    """What was published and what the broker acknowledged, by msg_id."""

    messages: dict[str, Outgoing]
    acked: frozenset[str]

    @property
    def unsure(self) -> frozenset[str]:
        """Published (or attempted) but never acknowledged: may or may not have reached the broker."""
        return frozenset(self.messages) - self.acked

    def merged(self, other: Ledger) -> Ledger:
        """Both ledgers as one (for a test that uses several publishers)."""
        return Ledger({**self.messages, **other.messages}, self.acked | other.acked)


class Publisher:
    """A QoS 1 publisher with a persistent session that records every PUBACK.

    `publish_all` sends at `rate_per_s` (0: as fast as the window allows) and never has more than `window`
    messages un-acked; while the broker is away it waits, and paho resends what was in flight after reconnecting.
    Use it as a context manager, or call `close()`: paho's network thread must be stopped.
    """

    def __init__(self, broker: BrokerAddress, client_id: str, *, window: int = 100, rate_per_s: float = 0.0,
                 keepalive_s: int = 5) -> None:
        self.broker = broker
        self.window = window
        self.rate_per_s = rate_per_s
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                   protocol=mqtt.MQTTv311)
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._keepalive_s = keepalive_s
        self._condition = threading.Condition()
        self._connected = threading.Event()
        self._sent: list[Outgoing] = []
        self._acked_count = 0
        # paho's MQTTMessageInfo.is_published() raises for a message queued while disconnected (rc NO_CONN) even
        # after its PUBACK, so acks are tracked by packet id: at most `window` ids are outstanding at once.
        self._outstanding: dict[int, str] = {}
        self._early_acks: set[int] = set()
        self._acked: set[str] = set()
        self._in_flight = 0  # handed to paho (counted before the call, so that the window holds)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.stop = threading.Event()

    # --- lifecycle --------------------------------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> Publisher:
        """Connect and start paho's network thread (which reconnects by itself). Does nothing if connected."""
        if self._connected.is_set():
            return self
        self._client.connect(self.broker.host, self.broker.port, keepalive=self._keepalive_s)
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise AssertionError(f"publisher: no CONNACK from {self.broker.url} within {timeout_s}s")
        return self

    def close(self) -> None:
        """Disconnect and stop the network thread. Safe to call twice."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Publisher:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- publishing -------------------------------------------------------------------------------------------

    def publish_all(self, messages: Iterable[Outgoing], max_wait_s: float = 120.0) -> None:
        """Publish in this thread, paced by `rate_per_s` and the window; returns early when `stop` is set."""
        started = time.monotonic()
        for index, message in enumerate(messages):
            if self.rate_per_s > 0:
                due = started + index / self.rate_per_s
                if self.stop.wait(max(0.0, due - time.monotonic())):
                    return
            with self._condition:
                deadline = time.monotonic() + max_wait_s
                while self._in_flight - self._acked_count >= self.window and not self.stop.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise AssertionError(f"publisher: broker {self.broker.url} acked nothing for {max_wait_s}s")
                    self._condition.wait(min(remaining, 0.2))
                if self.stop.is_set():
                    return
                self._in_flight += 1
            # Outside our lock: paho calls on_publish holding its own locks, and on_publish takes ours.
            info = self._client.publish(message.topic, message.payload, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise AssertionError(f"publisher: publish failed rc={info.rc}")
            with self._condition:
                self._sent.append(message)
                if info.mid in self._early_acks:  # the PUBACK beat us here
                    self._early_acks.discard(info.mid)
                    self._acked.add(message.msg_id)
                else:
                    self._outstanding[info.mid] = message.msg_id

    def start(self, messages: Sequence[Outgoing], max_wait_s: float = 120.0) -> Publisher:
        """Publish in a background thread (`join()` waits for it and re-raises its error)."""
        def body() -> None:
            try:
                self.publish_all(messages, max_wait_s)
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=body, name="fault-publisher")
        self._thread.start()
        return self

    def join(self, timeout_s: float = 300.0) -> None:
        """Wait for the background publishing to finish; re-raise its error."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise AssertionError(f"publisher still running after {timeout_s}s")
            self._thread = None
        if self._error is not None:
            raise self._error

    def wait_acked(self, timeout_s: float = 60.0) -> bool:
        """Wait until every message sent so far is acknowledged; False when some are still un-acked."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._acked_count < len(self._sent):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(min(remaining, 0.2))
        return True

    @property
    def sent_count(self) -> int:
        """Messages handed to paho so far."""
        with self._condition:
            return len(self._sent)

    def ledger(self) -> Ledger:
        """The ledger now: every message handed to paho, and which of them the broker acknowledged."""
        with self._condition:
            sent = list(self._sent)
            acked = frozenset(self._acked)
        messages = {message.msg_id: message for message in sent}
        return Ledger(messages, acked)

    # --- paho callbacks ---------------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if not reason_code.is_failure:
            self._connected.set()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        with self._condition:
            self._acked_count += 1
            msg_id = self._outstanding.pop(mid, None)
            if msg_id is None:
                self._early_acks.add(mid)
            else:
                self._acked.add(msg_id)
            self._condition.notify_all()
