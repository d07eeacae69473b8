"""The read-only listener of discover/capture against a real Mosquitto: clean session, QoS 0, random client id."""

from __future__ import annotations

import re
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.model.capture import CapturedMessage
from mqtt_bridge.mqtt.listener import ListenError, ReadOnlyListener
from tests.helpers import MosquittoBroker, PahoClient, free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_listener_hears_with_qos0_a_clean_session_and_leaves_no_session(mosquitto: MosquittoBroker,
                                                                         unique_topic: str, protocol: str) -> None:
    """QoS 1 publishes arrive as QoS 0; the broker logs a clean session; after it leaves, no session remains."""
    heard: list[CapturedMessage] = []
    listener = ReadOnlyListener(MqttConfig(host=mosquitto.host, port=mosquitto.port, protocol=protocol),
                                [f"{unique_topic}/#"], heard.append)
    listener.start()
    assert listener.client_id.startswith("mqtt-bridge-discover-")
    with PahoClient(mosquitto, protocol="5").connect() as publisher:
        publisher.publish(f"{unique_topic}/a/b", b'{"n": 1}', qos=1)
        publisher.publish(f"{unique_topic}/retained", b"kept", qos=1, retain=True)
        wait_until(lambda: len(heard) == 2, timeout_s=10, message="both messages heard")
    listener.stop()
    assert {(m.topic_text.removeprefix(unique_topic), m.qos) for m in heard} == {("/a/b", 0), ("/retained", 0)}
    line = wait_until(lambda: re.search(rf"as {listener.client_id} \(p(\d), c(\d)", mosquitto.log_text()),
                      timeout_s=5, message="the broker logged the connection")
    assert line is not None and line.group(2) == "1", "a clean session"
    # the same client id with a persistent session: the broker has nothing kept for it
    present = threading.Event()
    answered = threading.Event()
    probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=listener.client_id,
                        protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)

    def on_connect(client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: object,
                   properties: object) -> None:
        if flags.session_present:
            present.set()
        answered.set()

    probe.on_connect = on_connect
    probe.connect(mosquitto.host, mosquitto.port)
    probe.loop_start()
    try:
        assert answered.wait(10)
        assert not present.is_set(), "the listener left a session on the broker"
    finally:
        probe.disconnect()
        probe.loop_stop()


def test_listener_says_why_it_cannot_connect() -> None:
    """Nothing listening: a ListenError in the diagnosis' words, with host:port."""
    port = free_port()
    listener = ReadOnlyListener(MqttConfig(host="127.0.0.1", port=port, protocol="3.1.1"), ["#"], lambda m: None)
    with pytest.raises(ListenError, match=rf"127\.0\.0\.1:{port}.*refused"):
        listener.start()
