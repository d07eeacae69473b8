"""The paho client factory: protocol version, persistent session, TLS context, credentials, reconnect delays.

Owns: the settings of spec/reliability.md §1.7 that every paho client of the bridge shares (VERSION2 callbacks,
fixed client id, v5 `clean_start=False` + session expiry + Receive Maximum, v3.1.1 `clean_session=False`).
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_bridge.config.sections import MqttConfig

__all__ = ["PublishError"]


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

