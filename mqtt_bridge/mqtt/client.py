"""The paho client factory: protocol version, persistent session, TLS context, credentials, reconnect delays.

Owns: the settings of spec/reliability.md §1.7 that every paho client of the bridge shares (VERSION2 callbacks,
fixed client id, v5 `clean_start=False` + session expiry + Receive Maximum, v3.1.1 `clean_session=False`), the
`mqtt.protocol: auto` fallback from 5 to 3.1.1 on the same client (same client id, still a persistent session),
the next retry delay paho will wait, and the capture of the socket errors paho only logs (a TLS alert read after
CONNECT), which the connect diagnosis needs. Everything here that touches paho's private state is in this module.
"""

from __future__ import annotations

import logging
import ssl

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_bridge.config.sections import MqttConfig

__all__ = ["PROTOCOL_MEANING", "PublishError", "apply_credentials"]

V5 = "5"
V311 = "3.1.1"
# what the protocol in use means for the bridge, said once when it is chosen (issue 13 item 2)
PROTOCOL_MEANING = {
    V5: "the bridge's Receive Maximum (mqtt.receive_maximum) bounds the messages the broker hands over un-acked",
    V311: "the broker's in-flight window decides how many messages arrive un-acked and so the width of a group "
          "commit (Mosquitto: max_inflight_messages, default 20; raise it in mosquitto.conf, e.g. "
          "max_inflight_messages 1000)",
}


class PublishError(Exception):
    """A publish was not acknowledged by the broker in time."""


def _tls_context(config: MqttConfig) -> ssl.SSLContext:
    """Verify the broker (CA + host name), TLS 1.2 or newer, client certificate for mutual TLS."""
    context = ssl.create_default_context(cafile=str(config.tls.ca_file) if config.tls.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.tls.cert_file and config.tls.key_file:
        context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
    return context


def _first_protocol(config: MqttConfig) -> str:
    """The protocol of the first attempt: auto starts with MQTT 5."""
    return V311 if config.protocol == V311 else V5


def apply_credentials(client: paho.Client, config: MqttConfig) -> None:
    """The user name, password and TLS context of `config` on a paho client (the bridge's, and discover's)."""
    if config.username is not None:
        client.username_pw_set(config.username, config.password_value())
    if config.tls.enabled:
        client.tls_set_context(_tls_context(config))


def _new_client(config: MqttConfig, client_id: str, *, manual_ack: bool) -> paho.Client:
    v5 = _first_protocol(config) == V5
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else False, manual_ack=manual_ack,
    )
    apply_credentials(client, config)
    client.reconnect_delay_set(max(1, int(config.reconnect_min_s)), max(1, int(config.reconnect_max_s)))
    return client


def _connect_properties(config: MqttConfig) -> Properties | None:
    if _first_protocol(config) != V5:
        return None
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = config.session_expiry_s
    properties.ReceiveMaximum = config.receive_maximum
    return properties



def _protocol_of(client: paho.Client) -> str:
    """The protocol the client's next (or current) connection uses."""
    return V5 if client.protocol == MQTTProtocolVersion.MQTTv5 else V311


def _fall_back_to_v311(client: paho.Client) -> None:
    """Make the next connect of this client speak MQTT 3.1.1, keeping its client id and a persistent session.

    paho fixes the protocol in its constructor; it downgrades 3.1.1 to 3.1 the same way (by these attributes).
    The network thread and the callbacks stay, so the watchdog keeps watching the same thread.
    """
    client._protocol = MQTTProtocolVersion.MQTTv311
    client._clean_session = False  # reliability.md §1.2: the broker keeps the session and queues for us
    client._connect_properties = None


def _next_retry_s(client: paho.Client, *, after_connect_error: bool) -> float:
    """How long paho waits before its next attempt, called from a failure callback (before it waits).

    paho doubles its delay from `reconnect_min` up to `reconnect_max` and resets it after a CONNACK that accepts;
    `after_connect_error` (from `on_connect_fail`): a failed first TCP connect is followed by two waits (paho's
    first-connect loop, then its main loop).
    """
    low, high = float(client._reconnect_min_delay), float(client._reconnect_max_delay)
    current = client._reconnect_delay
    if current is None:
        return low + min(2 * low, high) if after_connect_error else low
    return float(min(2 * current, high))


def _end_connect_wait(client: paho.Client) -> None:
    """Make paho give up waiting for a CONNACK at its next loop turn (within a second), from any thread.

    paho closes a connection that is not yet accepted once its keepalive has passed since the last packet out;
    backdating that time (under paho's own lock) lets its network thread close the socket and call
    `on_disconnect` as usual, instead of waiting a whole keepalive for a broker that will never answer.
    """
    with client._msgtime_mutex:
        client._last_msg_out = 0.0


class _SocketErrors(logging.Logger):
    """Keeps the last error paho logged ("failed to receive on socket: [SSL: ...]"); paho calls `log()` for every
    packet, so everything below ERROR returns at once."""

    def __init__(self) -> None:
        super().__init__("mqtt_bridge.mqtt.paho", logging.ERROR)
        self.last = ""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if level >= logging.ERROR:
            try:
                self.last = (str(msg) % args if args else str(msg))[:300]
            except (TypeError, ValueError):
                self.last = str(msg)[:300]


def _capture_socket_errors(client: paho.Client) -> _SocketErrors:
    """Route paho's own log to a `_SocketErrors` (only its last error is kept) and return it."""
    errors = _SocketErrors()
    client.enable_logger(errors)
    return errors
