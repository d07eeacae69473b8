"""The subscriber: the bridge's connection lifecycle on paho-mqtt, with manual acks.

Owns: QoS 1 subscriptions on every connect (shared subscriptions when `mqtt.shared_group` is set), reconnect with
backoff, building each `Inbound` with its ack bound here and tagged with the connection generation (so that an ack
never lands on a newer session's packet id), and a network thread we own (so that a watchdog can see it die).
Also what each connect attempt came to (issue 13): every failure classified (`diagnosis`) and said in one
rate-limited line (`connect_report`), `mqtt.protocol: auto` (MQTT 5 first, 3.1.1 for the rest of the process when
the broker refuses 5), and a session taken over by another client with our client id. No exception escapes a paho
callback.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.mqtt.client import (
    PROTOCOL_MEANING,
    V5,
    V311,
    _capture_socket_errors,
    _connect_properties,
    _end_connect_wait,
    _fall_back_to_v311,
    _new_client,
    _next_retry_s,
    _protocol_of,
)
from mqtt_bridge.mqtt.connect_report import ConnectReport
from mqtt_bridge.mqtt.diagnosis import (
    Endpoint,
    diagnose_close,
    diagnose_connack,
    diagnose_exception,
    diagnose_no_connack,
    diagnose_socket_error,
    diagnose_taken_over,
)

__all__ = ["MqttSubscriber"]

log = logging.getLogger(__name__)

_UNSUPPORTED_PROTOCOL = 0x84
_SESSION_TAKEN_OVER = 0x8E
_CONNECTION_LOST = 0x80  # paho's reason for a socket closed without DISCONNECT ("Unspecified error")
# two closes by the broker right after it accepted us, within this window and without a failed attempt between
# them, are the mark of another client with our client id (Mosquitto closes a 3.1.1 or 5 session silently)
_TAKEOVER_WINDOW_S = 60.0
# Until a broker has accepted the bridge once, a CONNECT it does not answer within this long counts as failed: a
# broker that speaks MQTT 3.1.1 only may stall on the MQTT 5 CONNECT's properties (amqtt does) instead of refusing.
_CONNACK_DEADLINE_S = 5.0


class MqttSubscriber:
    """Receives messages on the configured filters; each is acked only when its `Inbound.ack()` is called."""

    def __init__(self, config: MqttConfig, subscriptions: list[str], on_message: Callable[[Inbound], None],
                 on_fatal: Callable[[str], None], *, on_connect_failure: Callable[[str], None] | None = None) -> None:
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
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_pre_connect = self._on_pre_connect
        self._socket_errors = _capture_socket_errors(self._client)
        self.report = ConnectReport(Endpoint(config.host, config.port, config.client_id, config.tls.enabled),
                                    on_connect_failure)
        self.protocol_in_use: str | None = None  # fixed by the first accepted connection, for the process's life
        self._has_connack = False  # in the current attempt
        self._is_reported = False  # the current attempt's failure was said already (a refusing CONNACK)
        self._closes: deque[float] = deque()
        self._attempt = 0
        self._is_overdue = False  # the current attempt got no CONNACK within _CONNACK_DEADLINE_S
        self._deadline: threading.Timer | None = None
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
                 self._config.port, self._config.client_id,
                 "auto (trying 5)" if self._config.protocol == "auto" else self._config.protocol)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send pending acks, disconnect (the session stays on the broker) and join the network thread."""
        self._stopping = True
        self._cancel_deadline()
        self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout_s)  # the loop ends once DISCONNECT is written
            if self._thread.is_alive():
                log.warning("mqtt network thread did not stop within %.1fs", timeout_s)
            else:
                self._client.loop_stop()
        self.is_connected = False

    @property
    def problem(self) -> str:
        """Why the bridge is not connected, in words (what `/readyz` and the status page show); "" when fine."""
        return self.report.problem

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
            self._has_connack = True
            self._cancel_deadline()
            if reason_code.is_failure:
                self._on_refused(client, int(reason_code.value))
                return
            self._generation += 1
            self.is_connected = True
            self.session_present = bool(flags.session_present)
            self.report.connected()
            is_first = self.protocol_in_use is None
            if is_first:
                self._settle_protocol(client)
            if flags.session_present or is_first:
                log.info("mqtt connected session_present=%s generation=%d", flags.session_present,
                         self._generation)
            else:
                # we had a session a moment ago: the broker lost it (restarted without persistence, expired it, or
                # another client took our id); what was published meanwhile for us is gone at the broker
                log.warning("mqtt reconnected without a session generation=%d; messages queued for this bridge "
                            "at the broker may have been lost (broker restart without persistence, session expiry, "
                            "or a second client with client_id=%s)", self._generation, self._config.client_id)
            if _protocol_of(client) == V5:
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
            was_connected = self.is_connected
            self._cancel_deadline()
            self.is_connected = False
            self.is_subscribed = False
            self.report.disconnected()
            if self._stopping or self._is_reported:
                return  # a refusing CONNACK was said already: one line per attempt
            if not self._has_connack:
                self._on_closed_before_connack(client)
            elif was_connected:
                self._on_connection_ended(client, flags, reason_code)
        except Exception:
            log.exception("mqtt on_disconnect failed")

    def _on_pre_connect(self, client: paho.Client, userdata: object) -> None:
        try:
            self._has_connack = False
            self._is_reported = False
            self._is_overdue = False
            self._socket_errors.last = ""
            self._attempt += 1
            self._cancel_deadline()
            if self.protocol_in_use is None and not self._stopping:
                # a short-lived timer that holds nothing: it only asks paho to stop waiting for this CONNACK
                self._deadline = threading.Timer(_CONNACK_DEADLINE_S, self._connack_overdue, args=(self._attempt,))
                self._deadline.name = "mqtt-connack-deadline"
                self._deadline.daemon = True
                self._deadline.start()
        except Exception:
            log.exception("mqtt on_pre_connect failed")

    def _cancel_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()

    def _connack_overdue(self, attempt: int) -> None:
        """Timer thread: the attempt is still waiting for its CONNACK; let paho's network thread give it up."""
        try:
            if attempt == self._attempt and not self._has_connack and not self._stopping:
                self._is_overdue = True
                _end_connect_wait(self._client)
        except Exception:  # a timer thread must not die noisily
            log.exception("mqtt connack deadline failed")

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        """The TCP connect or TLS handshake raised; paho calls this inside its `except OSError:` block."""
        try:
            self._cancel_deadline()
            exc = sys.exc_info()[1]
            endpoint = self.report.endpoint
            diagnosis = (diagnose_exception(exc, endpoint) if exc is not None else
                         diagnose_socket_error(self._socket_errors.last, endpoint) or
                         diagnose_close(endpoint, before_connack=True, socket_error=self._socket_errors.last))
            self._closes.clear()
            self.report.failed(diagnosis, _protocol_of(client), _next_retry_s(client, after_connect_error=True))
        except Exception:
            log.exception("mqtt on_connect_fail failed")

    # --- what an attempt came to ------------------------------------------------------------------------------

    def _may_fall_back(self, client: paho.Client) -> bool:
        """auto, still on MQTT 5, and never accepted yet: a refusal of 5 means trying 3.1.1."""
        return self._config.protocol == "auto" and self.protocol_in_use is None and _protocol_of(client) == V5

    def _fall_back(self, client: paho.Client, why: str) -> None:
        _fall_back_to_v311(client)
        self._is_reported = True
        log.info("mqtt broker does not speak MQTT 5 (%s); trying MQTT 3.1.1 host=%s port=%d client_id=%s", why,
                 self._config.host, self._config.port, self._config.client_id)

    def _on_refused(self, client: paho.Client, reason: int) -> None:
        if reason == _UNSUPPORTED_PROTOCOL and self._may_fall_back(client):
            self._fall_back(client, "CONNACK 0x84 unsupported protocol version")
            return
        self._is_reported = True
        self._closes.clear()
        self.report.failed(diagnose_connack(reason, self.report.endpoint), _protocol_of(client),
                           _next_retry_s(client, after_connect_error=False))

    def _on_closed_before_connack(self, client: paho.Client) -> None:
        error = self._socket_errors.last
        endpoint = self.report.endpoint
        if self._may_fall_back(client) and diagnose_socket_error(error, endpoint) is None:
            self._fall_back(client, f"no CONNACK within {_CONNACK_DEADLINE_S:.0f} s to an MQTT 5 CONNECT"
                            if self._is_overdue else "it closed the connection right after an MQTT 5 CONNECT")
            return
        self._closes.clear()
        if self._is_overdue:
            diagnosis = diagnose_no_connack(endpoint, _CONNACK_DEADLINE_S,
                                            is_v5_unproven=_protocol_of(client) == V5 and self.protocol_in_use is None)
        else:
            diagnosis = diagnose_close(endpoint, before_connack=True, socket_error=error)
        self.report.failed(diagnosis, _protocol_of(client), _next_retry_s(client, after_connect_error=False))

    def _on_connection_ended(self, client: paho.Client, flags: paho.DisconnectFlags, reason_code: ReasonCode) -> None:
        reason = int(reason_code.value)
        retry_s = _next_retry_s(client, after_connect_error=False)
        protocol = _protocol_of(client)
        if flags.is_disconnect_packet_from_server and reason == _SESSION_TAKEN_OVER:
            self.report.failed(diagnose_taken_over(self.report.endpoint, is_certain=True), protocol, retry_s)
            return
        if not flags.is_disconnect_packet_from_server and reason == _CONNECTION_LOST and not self._socket_errors.last:
            # the broker closed the socket without a word; twice in a row right after accepting us: a takeover
            now = time.monotonic()
            self._closes.append(now)
            while self._closes and now - self._closes[0] > _TAKEOVER_WINDOW_S:
                self._closes.popleft()
            if len(self._closes) >= 2:
                self.report.failed(diagnose_taken_over(self.report.endpoint, is_certain=False), protocol, retry_s)
                return
            log.warning("mqtt connection closed by the broker host=%s port=%d; reconnecting retry_in_s=%d",
                        self._config.host, self._config.port, round(retry_s))
            return
        detail = f" error={self._socket_errors.last!r}" if self._socket_errors.last else ""
        log.warning("mqtt disconnected host=%s port=%d reason=%r%s; reconnecting retry_in_s=%d", self._config.host,
                    self._config.port, str(reason_code), detail, round(retry_s))

    def _settle_protocol(self, client: paho.Client) -> None:
        """The first accepted connection fixes the protocol for the process's life; say what it means."""
        self.protocol_in_use = protocol = _protocol_of(client)
        if self._config.protocol != "auto":
            why = "pinned by mqtt.protocol"
        elif protocol == V311:
            why = "auto: the broker does not speak MQTT 5"
        else:
            why = "auto: the broker accepted MQTT 5"
        log.info("mqtt protocol in use protocol=%s (%s): %s", protocol, why, PROTOCOL_MEANING[protocol])

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            # paho decodes the topic lazily and raises on invalid UTF-8; keep the raw bytes (reliability.md §4)
            raw_topic: bytes = message._topic
            generation = self._generation
            self._on_message_cb(Inbound(topic=raw_topic, payload=bytes(message.payload), mid=message.mid,
                                        qos=message.qos, generation=generation, retain=bool(message.retain),
                                        received_at_s=time.time(), properties=_kept_properties(message),
                                        acker=partial(self._ack_packet, message.mid, message.qos, generation)))
        except Exception as exc:
            log.exception("mqtt on_message failed mid=%s", message.mid)
            self._on_fatal(f"on_message failed: {exc!r}")


def _kept_properties(message: paho.MQTTMessage) -> bytes:
    """The MQTT 5 properties of a message that the raw log keeps (JSON), b"" when it has none of them."""
    props = message.properties
    if props is None:
        return b""
    kept: dict[str, object] = {}
    for name in ("ContentType", "PayloadFormatIndicator", "UserProperty"):
        value = getattr(props, name, None)
        if value is not None:
            kept[name] = value
    return orjson.dumps(kept) if kept else b""
