"""The subscriber's paho callbacks: each message becomes an `Inbound` whose ack is bound to the connection it came
on (fenced by generation), no exception ever escapes a callback, and acks go out only when the message is acked.

The callback tests drive a real (unconnected) paho client with real paho objects; the last tests use a real
Mosquitto."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.mqtt.subscriber import MqttSubscriber
from tests.helpers import MosquittoBroker, PahoClient, wait_until


class _Sink:
    """What the subscriber hands on: messages, and fatal reasons."""

    def __init__(self, *, raise_on_message: bool = False) -> None:
        self.messages: list[Inbound] = []
        self.fatal: list[str] = []
        self._raise = raise_on_message

    def on_message(self, message: Inbound) -> None:
        if self._raise:
            raise RuntimeError("downstream bug")
        self.messages.append(message)

    def on_fatal(self, reason: str) -> None:
        self.fatal.append(reason)


def _subscriber(sink: _Sink, *, protocol: str = "5", port: int = 1883, client_id: str = "t-sub",
                filters: tuple[str, ...] = ("f/+/detections",), group: str | None = None) -> MqttSubscriber:
    config = MqttConfig.model_validate({"host": "127.0.0.1", "port": port, "client_id": client_id,
                                        "protocol": protocol, "shared_group": group,
                                        "reconnect_min_s": 1, "reconnect_max_s": 1})
    return MqttSubscriber(config, list(filters), sink.on_message, sink.on_fatal)


def _connack(name: str = "Success") -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, name)


def _connect(subscriber: MqttSubscriber, *, session_present: bool = False) -> None:
    subscriber._on_connect(subscriber._client, None, ConnectFlags(session_present=session_present), _connack(), None)


def _disconnect(subscriber: MqttSubscriber) -> None:
    subscriber._on_disconnect(subscriber._client, None, DisconnectFlags(is_disconnect_packet_from_server=False),
                              ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"), None)


def _deliver(subscriber: MqttSubscriber, topic: bytes, payload: bytes, *, mid: int = 7, qos: int = 1,
             retain: bool = False) -> None:
    message = MQTTMessage(mid=mid, topic=topic)
    message.payload = payload
    message.qos = qos
    message.retain = retain
    subscriber._on_message(subscriber._client, None, message)


def test_subscriber_on_message_builds_an_inbound_with_raw_topic_bytes() -> None:
    """A message becomes an Inbound: topic kept as bytes (even when not UTF-8), payload, mid, qos, retain, and the
    generation of the connection it came on."""
    sink = _Sink()
    subscriber = _subscriber(sink)
    _connect(subscriber)
    before = time.time()
    _deliver(subscriber, b"f/\xff/detections", b"{}", mid=42, retain=True)
    [message] = sink.messages
    assert (message.topic, message.payload, message.mid, message.qos, message.retain) == \
        (b"f/\xff/detections", b"{}", 42, 1, True)
    assert message.generation == 1 and message.received_at_s >= before
    assert message.attachment is None and message.companions == ()
    assert sink.fatal == []


def test_subscriber_ack_of_an_older_connection_is_dropped() -> None:
    """After a disconnect (and a reconnect) a message from the old connection cannot be acked: its packet id
    belongs to the old session, and the broker redelivers it."""
    sink = _Sink()
    subscriber = _subscriber(sink)
    _connect(subscriber)
    _deliver(subscriber, b"f/a/detections", b"{}")
    _disconnect(subscriber)
    _connect(subscriber, session_present=True)
    [old] = sink.messages
    assert old.generation == 1 and subscriber._generation == 3
    assert old.ack() is False


def test_subscriber_qos0_message_needs_no_ack() -> None:
    """A QoS 0 message has nothing to acknowledge: its ack succeeds whatever the connection."""
    sink = _Sink()
    subscriber = _subscriber(sink)
    _connect(subscriber)
    _deliver(subscriber, b"f/a/detections", b"{}", qos=0)
    _disconnect(subscriber)
    assert sink.messages[0].ack() is True


def test_subscriber_on_message_never_lets_a_downstream_error_escape() -> None:
    """A stage that raises inside on_message is logged and stops the bridge (fatal), never raises into paho."""
    sink = _Sink(raise_on_message=True)
    subscriber = _subscriber(sink)
    _connect(subscriber)
    _deliver(subscriber, b"f/a/detections", b"{}")  # must not raise
    assert len(sink.fatal) == 1 and "on_message failed" in sink.fatal[0]


def test_subscriber_on_connect_error_is_caught_and_fatal() -> None:
    """A failure inside on_connect (here: flags paho did not give) is caught and reported as fatal."""
    sink = _Sink()
    subscriber = _subscriber(sink)
    subscriber._on_connect(subscriber._client, None, None, _connack(), None)  # type: ignore[arg-type]
    assert len(sink.fatal) == 1 and "on_connect failed" in sink.fatal[0]


def test_subscriber_refused_connect_changes_nothing() -> None:
    """A CONNACK with a failure code neither counts as connected nor starts a new generation."""
    sink = _Sink()
    subscriber = _subscriber(sink)
    subscriber._on_connect(subscriber._client, None, ConnectFlags(session_present=False),
                           _connack("Not authorized"), None)
    assert not subscriber.is_connected and subscriber._generation == 0 and sink.fatal == []


def test_subscriber_connect_disconnect_track_state() -> None:
    """on_connect marks the link up and notes the session; on_disconnect marks it down and not subscribed."""
    sink = _Sink()
    subscriber = _subscriber(sink, protocol="3.1.1")
    _connect(subscriber, session_present=True)
    assert subscriber.is_connected and subscriber.session_present is True
    subscriber._on_subscribe(subscriber._client, None, 1, [ReasonCode(PacketTypes.SUBACK, "Granted QoS 1")], None)
    assert subscriber.is_subscribed
    _disconnect(subscriber)
    assert not subscriber.is_connected and not subscriber.is_subscribed and sink.fatal == []


def test_subscriber_refused_subscription_is_not_subscribed() -> None:
    """A SUBACK that refuses a filter leaves the subscriber not subscribed (so not ready)."""
    sink = _Sink()
    subscriber = _subscriber(sink)
    _connect(subscriber)
    subscriber._on_subscribe(subscriber._client, None, 1, [ReasonCode(PacketTypes.SUBACK, "Not authorized")],
                             None)
    assert not subscriber.is_subscribed


def test_subscriber_shared_group_prefixes_every_filter() -> None:
    """With `shared_group`, each filter is subscribed as `$share/<group>/<filter>`."""
    subscriber = _subscriber(_Sink(), filters=("a/+", "b/#"), group="g1")
    assert subscriber._subscriptions == ["$share/g1/a/+", "$share/g1/b/#"]


# --- with a real broker ---------------------------------------------------------------------------------------


@pytest.fixture
def running(mosquitto: MosquittoBroker) -> Iterator[tuple[MqttSubscriber, _Sink, MosquittoBroker]]:
    sink = _Sink()
    subscriber = _subscriber(sink, port=mosquitto.port, client_id="t-sub-real")
    subscriber.start()
    try:
        wait_until(lambda: subscriber.is_subscribed, timeout_s=10, message="subscribed on connect")
        yield subscriber, sink, mosquitto
    finally:
        subscriber.stop()


def test_subscriber_on_connect_subscribes_and_only_acked_messages_are_done(
        running: tuple[MqttSubscriber, _Sink, MosquittoBroker]) -> None:
    """The subscriber subscribes on connect; a message acked through its Inbound is done at the broker, one that
    is not acked comes back after a reconnect with the same session."""
    subscriber, sink, broker = running
    with PahoClient(broker, protocol="5") as publisher:
        publisher.connect()
        publisher.publish("f/a/detections", b"acked")
        publisher.publish("f/b/detections", b"not acked")
    wait_until(lambda: len(sink.messages) == 2, timeout_s=10, message="two messages")
    acked = next(m for m in sink.messages if m.payload == b"acked")
    assert acked.ack() is True
    subscriber.stop()
    again = _Sink()
    second = _subscriber(again, port=broker.port, client_id="t-sub-real")
    second.start()
    try:
        wait_until(lambda: second.is_subscribed, timeout_s=10, message="reconnected")
        with PahoClient(broker, protocol="5") as publisher:
            publisher.connect()
            publisher.publish("f/c/detections", b"marker")  # redeliveries come before anything newer
        wait_until(lambda: any(m.payload == b"marker" for m in again.messages), timeout_s=10, message="marker")
        assert [m.payload for m in again.messages] == [b"not acked", b"marker"]
        assert all(m.ack() for m in again.messages)
    finally:
        second.stop()
