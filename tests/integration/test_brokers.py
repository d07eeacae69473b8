"""The brokers the bridge is tested against, real Mosquitto and the embedded amqtt, driven by real paho."""

from __future__ import annotations

import pytest

from mqtt_bridge.devtools.broker import EmbeddedBroker
from tests.helpers import BrokerAddress, MosquittoBroker, PahoClient, wait_until

pytestmark = pytest.mark.integration


def _persistent_subscriber(broker: BrokerAddress, client_id: str) -> PahoClient:
    return PahoClient(broker, client_id, clean_session=False, protocol="3.1.1")


def test_broker_qos1_round_trip_delivers_every_message(mqtt_broker: BrokerAddress, unique_topic: str) -> None:
    """Every one of 200 QoS 1 messages reaches a live QoS 1 subscriber, in order."""
    payloads = [f"msg-{i:03d}".encode() for i in range(200)]
    with PahoClient(mqtt_broker) as subscriber, PahoClient(mqtt_broker) as publisher:
        subscriber.connect()
        subscriber.subscribe(f"{unique_topic}/#", qos=1)
        publisher.connect()

        publisher.publish_many([(f"{unique_topic}/line1", payload) for payload in payloads], qos=1)

        wait_until(lambda: len(subscriber.messages) >= len(payloads), message="all 200 messages")
        received = subscriber.messages
    assert [message.payload for message in received] == payloads
    assert {message.qos for message in received} == {1}


def test_broker_persistent_session_receives_messages_published_while_away(
    mqtt_broker: BrokerAddress, unique_topic: str
) -> None:
    """A clean_session=False subscriber gets, on reconnect, the QoS 1 messages published while it was away."""
    client_id = f"sub-{unique_topic.rsplit('/', 1)[-1]}"
    first = _persistent_subscriber(mqtt_broker, client_id).connect()
    first.subscribe(f"{unique_topic}/#", qos=1)
    first.disconnect()

    payloads = [f"away-{i}".encode() for i in range(20)]
    with PahoClient(mqtt_broker) as publisher:
        publisher.connect()
        publisher.publish_many([(f"{unique_topic}/cam1", payload) for payload in payloads], qos=1)

    with _persistent_subscriber(mqtt_broker, client_id) as second:
        second.connect()
        wait_until(lambda: len(second.messages) >= len(payloads), message="queued messages after reconnect")
        assert second.session_present is True
        assert second.payloads() == payloads


def test_mosquitto_restart_after_sigterm_keeps_queued_messages(
    mosquitto: MosquittoBroker, unique_topic: str
) -> None:
    """Messages queued for an offline persistent session survive a SIGTERM restart of Mosquitto."""
    client_id = f"sub-{unique_topic.rsplit('/', 1)[-1]}"
    first = _persistent_subscriber(mosquitto, client_id).connect()
    first.subscribe(f"{unique_topic}/#", qos=1)
    first.disconnect()
    with PahoClient(mosquitto) as publisher:
        publisher.connect()
        publisher.publish(f"{unique_topic}/cam1", b"queued-before-restart", qos=1)

    mosquitto.restart()

    with _persistent_subscriber(mosquitto, client_id) as second:
        second.connect()
        wait_until(second.payloads, message="the persisted message after restart")
        assert second.session_present is True, mosquitto.log_text()
        assert second.payloads() == [b"queued-before-restart"]


def test_embedded_broker_stop_disconnects_clients_and_frees_the_port() -> None:
    """stop() drops connected clients, ends the broker thread and releases the port for a new broker."""
    broker = EmbeddedBroker()
    broker.start()
    port = broker.port
    assert broker.url == f"mqtt://127.0.0.1:{port}"
    with PahoClient(broker) as client:
        client.connect()
        broker.stop()
        assert not broker.is_running
        wait_until(lambda: not client.is_connected, message="the client to see the broker stop")

    restarted = EmbeddedBroker(port=port)
    with restarted:
        with PahoClient(restarted) as client:
            client.connect()
        assert restarted.port == port
