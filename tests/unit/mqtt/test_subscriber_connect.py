"""The subscriber's connect outcomes on a real (unconnected) paho client: one line per failed attempt, the
`mqtt.protocol: auto` fallback to 3.1.1 with the session kept, and the protocol fixed once accepted (issue 13)."""

from __future__ import annotations

import logging

import pytest
from paho.mqtt.client import ConnectFlags, DisconnectFlags
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.mqtt.subscriber import MqttSubscriber


def _subscriber(protocol: str = "auto", failures: list[str] | None = None) -> MqttSubscriber:
    config = MqttConfig.model_validate({"host": "127.0.0.1", "port": 1883, "client_id": "line-1",
                                        "protocol": protocol, "reconnect_min_s": 1, "reconnect_max_s": 30})
    return MqttSubscriber(config, ["f/#"], lambda message: None, lambda reason: None,
                          on_connect_failure=None if failures is None else failures.append)


def _attempt(subscriber: MqttSubscriber) -> None:
    subscriber._on_pre_connect(subscriber._client, None)
    subscriber._cancel_deadline()


def _connack(subscriber: MqttSubscriber, name: str) -> None:
    subscriber._on_connect(subscriber._client, None, ConnectFlags(session_present=False),
                           ReasonCode(PacketTypes.CONNACK, name), None)


def _closed(subscriber: MqttSubscriber, name: str = "Unspecified error") -> None:
    subscriber._on_disconnect(subscriber._client, None, DisconnectFlags(is_disconnect_packet_from_server=False),
                              ReasonCode(PacketTypes.DISCONNECT, name), None)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("mqtt_bridge")]


def test_subscriber_refused_connack_is_one_line_without_protocol_error(caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password gives one `not_authorized` line per attempt, not the misleading "Protocol error"."""
    failures: list[str] = []
    subscriber = _subscriber("5", failures)
    with caplog.at_level(logging.INFO, "mqtt_bridge"):
        _attempt(subscriber)
        _connack(subscriber, "Not authorized")
        _closed(subscriber, "Protocol error")
    [line] = _lines(caplog)
    assert "mqtt connect failed host=127.0.0.1 port=1883 protocol=5 cause=not_authorized retry_in_s=1" in line
    assert "mqtt.username and mqtt.password" in line and "Protocol error" not in line
    assert failures == ["not_authorized"]
    assert subscriber.problem.startswith("broker 127.0.0.1:1883 (MQTT 5): not authorized")


def test_subscriber_auto_falls_back_to_v311_keeping_the_session(caplog: pytest.LogCaptureFixture) -> None:
    """auto: CONNACK 0x84 switches the same client to 3.1.1 with clean_session=False and the same client id."""
    subscriber = _subscriber("auto")
    with caplog.at_level(logging.INFO, "mqtt_bridge"):
        _attempt(subscriber)
        _connack(subscriber, "Unsupported protocol version")
        _closed(subscriber, "Protocol error")
    client = subscriber._client
    assert client.protocol == MQTTProtocolVersion.MQTTv311
    assert client._clean_session is False and client._client_id == b"line-1"
    assert client._connect_properties is None
    assert _lines(caplog) == ["mqtt broker does not speak MQTT 5 (CONNACK 0x84 unsupported protocol version); "
                              "trying MQTT 3.1.1 host=127.0.0.1 port=1883 client_id=line-1"]
    assert subscriber.problem == ""


def test_subscriber_auto_falls_back_on_a_close_right_after_connect() -> None:
    """auto: a broker that closes the socket after an MQTT 5 CONNECT, without a CONNACK, gets 3.1.1 next."""
    subscriber = _subscriber("auto")
    _attempt(subscriber)
    _closed(subscriber)
    assert subscriber._client.protocol == MQTTProtocolVersion.MQTTv311


def test_subscriber_auto_keeps_the_protocol_once_accepted(caplog: pytest.LogCaptureFixture) -> None:
    """Once MQTT 5 was accepted, a later close before CONNACK is a failure, not a reason to fall back; the first
    accepted connection says which protocol is in use and what it means."""
    subscriber = _subscriber("auto")
    with caplog.at_level(logging.INFO, "mqtt_bridge"):
        _attempt(subscriber)
        _connack(subscriber, "Success")
        _closed(subscriber)
        _attempt(subscriber)
        _closed(subscriber)
    assert subscriber._client.protocol == MQTTProtocolVersion.MQTTv5
    assert subscriber.protocol_in_use == "5"
    lines = _lines(caplog)
    assert any(line.startswith("mqtt protocol in use protocol=5 (auto: the broker accepted MQTT 5)") for line in lines)
    assert any("cause=closed_by_broker" in line for line in lines)


def test_subscriber_pinned_v5_reports_the_unsupported_protocol(caplog: pytest.LogCaptureFixture) -> None:
    """protocol "5" pinned against a 3.1.1-only broker: no fallback, a `protocol_not_supported` line."""
    subscriber = _subscriber("5")
    with caplog.at_level(logging.INFO, "mqtt_bridge"):
        _attempt(subscriber)
        _connack(subscriber, "Unsupported protocol version")
    assert subscriber._client.protocol == MQTTProtocolVersion.MQTTv5
    [line] = _lines(caplog)
    assert "cause=protocol_not_supported" in line and 'set it to auto (or "3.1.1"' in line


def test_subscriber_on_connect_fail_reads_the_exception_paho_is_handling(caplog: pytest.LogCaptureFixture) -> None:
    """paho calls on_connect_fail inside its `except OSError:`; the subscriber classifies that exception, and the
    first retry delay is paho's two initial waits (1 + 2 s)."""
    subscriber = _subscriber("5")
    with caplog.at_level(logging.INFO, "mqtt_bridge"):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError:
            subscriber._on_connect_fail(subscriber._client, None)
    [line] = _lines(caplog)
    assert "cause=refused retry_in_s=3:" in line


def test_subscriber_two_silent_closes_right_after_accept_say_takeover(caplog: pytest.LogCaptureFixture) -> None:
    """The broker closing an accepted session twice in a row without a word is said as a takeover."""
    failures: list[str] = []
    subscriber = _subscriber("5", failures)
    with caplog.at_level(logging.INFO, "mqtt_bridge"):
        for _ in range(2):
            _attempt(subscriber)
            _connack(subscriber, "Success")
            _closed(subscriber)
    assert failures == ["session_taken_over"]
    assert any("cause=session_taken_over" in line and "same client id 'line-1'" in line for line in _lines(caplog))
