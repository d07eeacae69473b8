"""MQTT on paho-mqtt: the only module that imports it.

Owns: the subscriber's connection lifecycle with the settings of spec/reliability.md §1.7 (VERSION2 callbacks,
fixed client id, persistent session: v5 `clean_start=False` + session expiry + Receive Maximum, v3.1.1
`clean_session=False`; QoS 1; `manual_ack=True`; reconnect with backoff; subscribe on every connect), acks tagged
with a connection generation so that an ack never lands on a newer session's packet id, a network thread we own
(so that a watchdog can see it die), and `MqttPublisher`, the small QoS 1 publisher used by the publish helper and
the demo line, and (in the background, bounded, never blocking) delivery receipts. Shared subscriptions
(`$share/<group>/<filter>`) when `mqtt.shared_group` is set. No exception escapes a paho callback.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_bridge.config import MqttConfig

__all__ = ["Inbound", "MqttPublisher", "MqttSubscriber", "PublishError"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message, as the ingest thread needs it. `topic` stays bytes: it may not be UTF-8."""

    topic: bytes
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at_s: float
    retain: bool = False  # a retained message the broker replays on (re)subscribe, not a fresh publish


class PublishError(Exception):
    """A publish was not acknowledged by the broker in time."""


def _tls_context(config: MqttConfig) -> ssl.SSLContext:
    """Verify the broker (CA + host name), TLS 1.2 or newer, client certificate for mutual TLS."""
    context = ssl.create_default_context(cafile=str(config.tls.ca_file) if config.tls.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.tls.cert_file and config.tls.key_file:
        context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
    return context


def _new_client(config: MqttConfig, client_id: str, *, manual_ack: bool) -> paho.Client:
    v5 = config.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else False, manual_ack=manual_ack,
    )
    if config.username is not None:
        client.username_pw_set(config.username, config.password_value())
    if config.tls.enabled:
        client.tls_set_context(_tls_context(config))
    client.reconnect_delay_set(max(1, int(config.reconnect_min_s)), max(1, int(config.reconnect_max_s)))
    return client


def _connect_properties(config: MqttConfig) -> Properties | None:
    if config.protocol != "5":
        return None
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = config.session_expiry_s
    properties.ReceiveMaximum = config.receive_maximum
    return properties


class MqttSubscriber:
    """Receives messages on the configured filters and acknowledges them only when told to."""

    def __init__(self, config: MqttConfig, subscriptions: list[str], on_message: Callable[[Inbound], None],
                 on_fatal: Callable[[str], None]) -> None:
        self._config = config
        # MQTT 5 shared subscriptions spread the load over replicas, each with its own session and buffer
        group = config.shared_group
        self._subscriptions = [f"$share/{group}/{f}" for f in subscriptions] if group else list(subscriptions)
        self._on_message_cb = on_message
        self._on_fatal = on_fatal
        self._client = _new_client(config, config.client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.is_connected = False
        self.is_subscribed = False
        self.session_present: bool | None = None
        self.connects = 0

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start the network thread."""
        self._client.connect_async(self._config.host, self._config.port, keepalive=self._config.keepalive_s,
                                   clean_start=False, properties=_connect_properties(self._config))
        # paho's own threaded mode: acks queued from the intake thread then wake the loop through its socketpair
        # instead of writing to the socket from a second thread (paho writes directly when it runs unthreaded)
        self._client.loop_start()
        self._thread = self._client._thread  # the watchdog must see the thread die (reliability.md §1.5)
        log.info("mqtt connecting host=%s port=%d client_id=%s protocol=%s", self._config.host,
                 self._config.port, self._config.client_id, self._config.protocol)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send pending acks, disconnect (the session stays on the broker) and join the network thread."""
        self._stopping = True
        self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout_s)  # the loop ends once DISCONNECT is written
            if self._thread.is_alive():
                log.warning("mqtt network thread did not stop within %.1fs", timeout_s)
            else:
                self._client.loop_stop()
        self.is_connected = False

    def is_alive(self) -> bool:
        """True while the network thread runs (the watchdog's question; `is_connected` can lie, §1.5)."""
        return self._thread is not None and self._thread.is_alive()

    # --- acks -------------------------------------------------------------------------------------------------

    def ack(self, message: Inbound) -> bool:
        """Acknowledge a message after its durable commit. Acks from an older connection are dropped."""
        if message.qos == 0:
            return True
        if message.generation != self._generation:
            # packet ids belong to a connection; the broker redelivers this one (reliability.md §1.3)
            return False
        result = self._client.ack(message.mid, message.qos)
        return result == MQTTErrorCode.MQTT_ERR_SUCCESS

    # --- paho callbacks: nothing may escape them --------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            if reason_code.is_failure:
                log.warning("mqtt connect refused reason=%s", reason_code)
                return
            self._generation += 1
            self.connects += 1
            self.is_connected = True
            self.session_present = bool(flags.session_present)
            if flags.session_present or self._generation == 1:
                log.info("mqtt connected session_present=%s generation=%d", flags.session_present,
                         self._generation)
            else:
                # we had a session a moment ago: the broker lost it (restarted without persistence, expired it, or
                # another client took our id); what was published meanwhile for us is gone at the broker
                log.warning("mqtt reconnected without a session generation=%d; messages queued for this bridge "
                            "at the broker may have been lost (broker restart without persistence, session expiry, "
                            "or a second client with client_id=%s)", self._generation, self._config.client_id)
            if self._config.protocol == "5":
                # retainHandling=1: retained messages only on a new subscription, not on every reconnect
                options = SubscribeOptions(qos=1, retainHandling=1)
                client.subscribe([(topic, options) for topic in self._subscriptions])
            else:
                client.subscribe([(topic, 1) for topic in self._subscriptions])
        except Exception as exc:
            log.exception("mqtt on_connect failed")
            self._on_fatal(f"on_connect failed: {exc!r}")

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        try:
            refused = [str(rc) for rc in reason_codes if rc.is_failure]
            if refused:
                log.error("mqtt subscription refused reasons=%s filters=%s", refused, self._subscriptions)
            else:
                self.is_subscribed = True
                log.info("mqtt subscribed filters=%s", ",".join(self._subscriptions))
        except Exception:
            log.exception("mqtt on_subscribe failed")

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: paho.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            # acks of messages from the lost connection must not go out on the next one (its packet ids differ)
            self._generation += 1
            self.is_connected = False
            self.is_subscribed = False
            if not self._stopping:
                log.warning("mqtt disconnected reason=%s; reconnecting", reason_code)
        except Exception:
            log.exception("mqtt on_disconnect failed")

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            # paho decodes the topic lazily and raises on invalid UTF-8; keep the raw bytes (reliability.md §4)
            raw_topic: bytes = message._topic
            self._on_message_cb(Inbound(topic=raw_topic, payload=bytes(message.payload), mid=message.mid,
                                        qos=message.qos, generation=self._generation, retain=bool(message.retain),
                                        received_at_s=time.time()))
        except Exception as exc:
            log.exception("mqtt on_message failed mid=%s", message.mid)
            self._on_fatal(f"on_message failed: {exc!r}")


class MqttPublisher:
    """A QoS 1 publisher that waits for the broker's PUBACK (publish helper, demo line, tests)."""

    def __init__(self, config: MqttConfig, client_id: str) -> None:
        self._client = _new_client(config, client_id, manual_ack=False)
        self._config = config
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.max_inflight_messages_set(100)
        self._last: paho.MQTTMessageInfo | None = None

    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if not reason_code.is_failure:
            self._connected.set()

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and start the network loop. Raises PublishError when the broker does not answer in time."""
        try:
            self._client.connect(self._config.host, self._config.port, keepalive=self._config.keepalive_s)
        except OSError as exc:
            raise PublishError(f"cannot connect to {self._config.host}:{self._config.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise PublishError(f"no CONNACK from {self._config.host}:{self._config.port} in {timeout_s}s")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, wait: bool = True,
                timeout_s: float = 10.0) -> None:
        """Publish; with `wait`, block until the broker acknowledged (QoS 1) or raise PublishError."""
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(f"publish failed rc={info.rc}")
        if wait:
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise PublishError(f"no PUBACK for {topic!r} within {timeout_s}s")

    def close(self) -> None:
        """Disconnect and stop the network loop."""
        self._client.disconnect()
        self._client.loop_stop()

    # --- background use (delivery receipts): never blocks, bounded memory ----------------------------------------

    def start_background(self, max_queued: int) -> None:
        """Connect in the background and keep reconnecting; at most `max_queued` messages wait in memory."""
        self._client.max_queued_messages_set(max_queued)
        self._client.connect_async(self._config.host, self._config.port, keepalive=self._config.keepalive_s)
        self._client.loop_start()

    @property
    def is_connected(self) -> bool:
        """Whether the broker accepted the connection and it is still up."""
        return bool(self._client.is_connected())

    def publish_nowait(self, topic: str, payload: bytes) -> str:
        """Queue a QoS 1 publish without waiting. Returns "" when accepted, else why not (`queue_full`, ...).

        Accepted while disconnected: paho sends it after the reconnect (until its queue is full).
        """
        try:
            info = self._client.publish(topic, payload, qos=1)
        except (ValueError, OSError) as exc:  # paho raises ValueError on an invalid topic
            return f"error: {exc}"[:120]
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return "queue_full"
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return f"rc_{int(info.rc)}"
        self._last = info
        return ""

    def flush(self, timeout_s: float) -> bool:
        """Wait until the last accepted publish was acknowledged (when connected); True when it was."""
        last = self._last
        if last is None or not self.is_connected:
            return last is None
        try:
            last.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return bool(last.is_published())

    def subscribe(self, topic_filter: str, on_message: Callable[[str, bytes], None], timeout_s: float = 10.0) -> None:
        """Subscribe (QoS 1) and call `on_message(topic, payload)` for each message; waits for the SUBACK."""
        acked = threading.Event()

        def on_subscribe(client: paho.Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                         properties: Properties | None) -> None:
            acked.set()

        def deliver(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
            try:
                on_message(message.topic, bytes(message.payload))
            except Exception:  # nothing may escape a paho callback
                log.exception("subscriber callback failed topic=%s", message.topic[:200])

        self._client.on_subscribe = on_subscribe
        self._client.message_callback_add(topic_filter, deliver)
        result, _ = self._client.subscribe(topic_filter, qos=1)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or not acked.wait(timeout_s):
            raise PublishError(f"no SUBACK for {topic_filter!r} within {timeout_s}s")
