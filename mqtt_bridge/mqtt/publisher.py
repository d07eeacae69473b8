"""`MqttPublisher`: the small QoS 1 publisher used by the publisher SDK, the demo line and delivery receipts.

Owns: its own connection and a bounded, never-blocking background queue, and with `mqtt.protocol: auto` the same
fallback to MQTT 3.1.1 as the subscriber. No exception escapes a paho callback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.mqtt.client import V5, PublishError, _fall_back_to_v311, _new_client, _protocol_of

__all__ = ["MqttPublisher"]

log = logging.getLogger(__name__)


class MqttPublisher:
    """A QoS 1 publisher that waits for the broker's PUBACK (publish helper, demo line, tests)."""

    def __init__(self, config: MqttConfig, client_id: str) -> None:
        self._client = _new_client(config, client_id, manual_ack=False)
        self._config = config
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._has_connack = False
        self._is_settled = config.protocol != "auto"
        self._client.max_inflight_messages_set(100)
        self._last: paho.MQTTMessageInfo | None = None

    @classmethod
    def to_broker(cls, client_id: str, *, host: str, port: int, username: str | None, password: str | None,
                  protocol: str) -> MqttPublisher:
        """A publisher for a broker given by its settings (validated as the `mqtt` section is; the SDK's way in)."""
        config = MqttConfig.model_validate({"host": host, "port": port, "username": username,
                                            "password": password, "protocol": protocol})
        return cls(config, client_id)

    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            self._has_connack = True
            if not reason_code.is_failure:
                self._is_settled = True  # the protocol that worked stays for this client's life
                self._connected.set()
            elif int(reason_code.value) == 0x84:
                self._fall_back(client, "CONNACK 0x84")
            else:
                log.warning("mqtt publisher connect refused host=%s port=%d reason=%r", self._config.host,
                            self._config.port, str(reason_code))
        except Exception:  # nothing may escape a paho callback
            log.exception("mqtt publisher on_connect failed")

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: paho.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            if not self._has_connack:
                self._fall_back(client, "closed right after CONNECT")
            self._has_connack = False
        except Exception:  # nothing may escape a paho callback
            log.exception("mqtt publisher on_disconnect failed")

    def _fall_back(self, client: paho.Client, why: str) -> None:
        """auto: a broker that refuses MQTT 5 before ever accepting this client gets 3.1.1 from now on."""
        if not self._is_settled and _protocol_of(client) == V5:
            _fall_back_to_v311(client)
            self._is_settled = True
            log.info("mqtt publisher: the broker does not speak MQTT 5 (%s); using MQTT 3.1.1 host=%s port=%d", why,
                     self._config.host, self._config.port)

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

