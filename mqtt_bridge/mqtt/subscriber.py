"""The subscriber: the bridge's connection lifecycle on paho-mqtt, with manual acks.

Owns: QoS 1 subscriptions on every connect (shared subscriptions when `mqtt.shared_group` is set), reconnect with
backoff, building each `Inbound` with its ack bound here and tagged with the connection generation (so that an ack
never lands on a newer session's packet id), and a network thread we own (so that a watchdog can see it die).
No exception escapes a paho callback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.mqtt.client import _connect_properties, _new_client

__all__ = ["MqttSubscriber"]

log = logging.getLogger(__name__)


class MqttSubscriber:
    """Receives messages on the configured filters; each is acked only when its `Inbound.ack()` is called."""

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

    def _ack_packet(self, mid: int, qos: int, generation: int) -> bool:
        """Acknowledge one packet after its durable commit (bound into each `Inbound` as its `acker`). An ack
        from an older connection is dropped: packet ids belong to a connection, and the broker redelivers that
        message (reliability.md §1.3)."""
        if qos == 0:
            return True
        if generation != self._generation:
            return False
        result = self._client.ack(mid, qos)
        return result == MQTTErrorCode.MQTT_ERR_SUCCESS

    # --- paho callbacks: nothing may escape them --------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            if reason_code.is_failure:
                log.warning("mqtt connect refused reason=%s", reason_code)
                return
            self._generation += 1
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
            generation = self._generation
            self._on_message_cb(Inbound(topic=raw_topic, payload=bytes(message.payload), mid=message.mid,
                                        qos=message.qos, generation=generation, retain=bool(message.retain),
                                        received_at_s=time.time(),
                                        acker=partial(self._ack_packet, message.mid, message.qos, generation)))
        except Exception as exc:
            log.exception("mqtt on_message failed mid=%s", message.mid)
            self._on_fatal(f"on_message failed: {exc!r}")

