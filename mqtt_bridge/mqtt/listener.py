"""The read-only listener of `mqtt-bridge discover` and `capture`: hear a broker's traffic without touching anyone's.

Owns: a paho client that can neither take nor leave state on the broker: a random client id (it never takes over
the bridge's session or anyone else's), a clean session (v3.1.1 `clean_session=True`; MQTT 5 `clean_start=True`
with no session expiry, so nothing is queued for it after it leaves), subscriptions with QoS 0 only (the broker
expects no acknowledgement and keeps no in-flight state for it), no publishing. Connect failures are said in the
words of `mqtt.diagnosis`. TLS and credentials come from the same `MqttConfig` (and `client` factory helpers) as
the bridge's, so what discover can reach, the bridge can too. No exception escapes a paho callback.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.model.capture import CapturedMessage
from mqtt_bridge.mqtt.client import V5, apply_credentials
from mqtt_bridge.mqtt.diagnosis import (
    Diagnosis,
    Endpoint,
    diagnose_close,
    diagnose_connack,
    diagnose_exception,
    diagnose_no_connack,
)

__all__ = ["ListenError", "ReadOnlyListener", "listener_client_id"]

log = logging.getLogger(__name__)

_CLIENT_ID_PREFIX = "mqtt-bridge-discover-"


class ListenError(Exception):
    """The listener could not connect or subscribe; the message says why and what to check."""


def listener_client_id() -> str:
    """A fresh random client id: never the bridge's, never the same twice (so no session is ever taken over)."""
    return _CLIENT_ID_PREFIX + secrets.token_hex(6)


class ReadOnlyListener:
    """Connects with a clean session, subscribes with QoS 0 and hands every message to `on_message`.

    `on_message` runs on paho's network thread: keep it short (queue the message). Use `start()`, then `stop()`.
    """

    def __init__(self, config: MqttConfig, topic_filters: list[str], on_message: Callable[[CapturedMessage], None],
                 *, connect_timeout_s: float = 10.0) -> None:
        self._config = config
        self._filters = topic_filters
        self._on_message_cb = on_message
        self._connect_timeout_s = connect_timeout_s
        self.client_id = listener_client_id()
        self._is_v5 = config.protocol == V5
        self._endpoint = Endpoint(config.host, config.port, self.client_id, config.tls.enabled)
        self._ready = threading.Event()
        self._failure: Diagnosis | None = None
        self._subscribe_problem = ""
        self.callback_errors = 0
        self.received = 0
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._is_v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._is_v5 else True)
        apply_credentials(self._client, config)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def protocol(self) -> str:
        """The MQTT version spoken, as the diagnosis words name it."""
        return "5" if self._is_v5 else "3.1.1"

    def start(self) -> None:
        """Connect and subscribe; returns once the broker granted the subscriptions. Raises ListenError."""
        try:
            self._client.connect(self._config.host, self._config.port, keepalive=self._config.keepalive_s,
                                 clean_start=True if self._is_v5 else paho.MQTT_CLEAN_START_FIRST_ONLY)
        except Exception as exc:  # DNS, refused, TLS: said in the diagnosis' words
            raise ListenError(diagnose_exception(exc, self._endpoint).describe(self._endpoint, self.protocol)) from exc
        self._client.loop_start()
        if not self._ready.wait(self._connect_timeout_s):
            self.stop()
            failure = self._failure or diagnose_no_connack(self._endpoint, self._connect_timeout_s,
                                                           is_v5_unproven=self._is_v5)
            raise ListenError(failure.describe(self._endpoint, self.protocol))
        if self._failure is not None or self._subscribe_problem:
            self.stop()
            if self._failure is not None:
                raise ListenError(self._failure.describe(self._endpoint, self.protocol))
            raise ListenError(f"broker {self._config.host}:{self._config.port} refused the subscription "
                              f"{', '.join(self._filters)}: {self._subscribe_problem}; check the broker's ACL for "
                              f"this user")
        log.info("listening read-only host=%s port=%d client_id=%s filters=%s qos=0 clean_session=true",
                 self._config.host, self._config.port, self.client_id, ",".join(self._filters))

    def stop(self) -> None:
        """Disconnect (the broker forgets the clean session) and stop the network thread."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    # --- paho callbacks (network thread): nothing escapes ----------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            if reason_code.is_failure:
                self._failure = diagnose_connack(int(reason_code.value), self._endpoint)
                self._ready.set()
                return
            client.subscribe([(topic_filter, 0) for topic_filter in self._filters])
        except Exception:  # a paho callback: fail the start instead of hanging it
            log.exception("listener connect callback failed")
            self._failure = self._failure or diagnose_close(self._endpoint, before_connack=True, socket_error="")
            self._ready.set()

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        try:
            refused = [str(code) for code in reason_codes if code.is_failure]
            if refused:
                self._subscribe_problem = ", ".join(refused)
        finally:
            self._ready.set()

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: paho.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            if not self._ready.is_set():
                self._failure = diagnose_close(self._endpoint, before_connack=True, socket_error="")
                self._ready.set()
            elif int(reason_code.value) != 0 and self._failure is None:
                log.warning("listener disconnected host=%s port=%d reason=%s (paho reconnects)", self._config.host,
                            self._config.port, reason_code)
        except Exception:  # a paho callback
            log.exception("listener disconnect callback failed")

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            raw_topic: bytes = message._topic  # bytes: a topic may not be UTF-8
            self.received += 1
            self._on_message_cb(CapturedMessage(raw_topic, bytes(message.payload), message.qos,
                                                bool(message.retain), time.time()))
        except Exception:  # a paho callback: count it, keep listening
            self.callback_errors += 1
            log.exception("listener message callback failed")
