"""`mqtt-bridge publish --protocol`: auto (the default, as `mqtt.protocol`) reaches an MQTT 5 broker over 5 and a
3.1.1-only broker over 3.1.1, and says so. Real Mosquitto and the embedded amqtt broker, a real paho subscriber."""

from __future__ import annotations

import uuid

import orjson
import pytest

from mqtt_bridge.cli.main import EXIT_OK, main
from mqtt_bridge.devtools.broker import EmbeddedBroker
from tests.helpers import BrokerAddress, MosquittoBroker, PahoClient, wait_until

pytestmark = pytest.mark.integration

MESSAGE = orjson.dumps({"detections": [{"class": "scratch", "confidence": 0.9}]}).decode()


def _publish(broker: BrokerAddress, topic: str, *protocol: str, client_id: str = "cli-publish") -> int:
    return main(["publish", "--host", broker.host, "--port", str(broker.port), "-t", topic, "-m", MESSAGE,
                 "--count", "2", "--client-id", client_id, *protocol])


@pytest.mark.parametrize("protocol", [[], ["--protocol", "auto"]], ids=["default", "auto"])
def test_publish_command_auto_falls_back_to_311_on_a_broker_without_mqtt5(
        amqtt_broker: EmbeddedBroker, unique_topic: str, protocol: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Against amqtt (3.1.1 only) auto publishes both messages over 3.1.1 and logs why (on stderr)."""
    with PahoClient(amqtt_broker).connect() as subscriber:
        subscriber.subscribe(f"{unique_topic}/#", qos=1)
        assert _publish(amqtt_broker, f"{unique_topic}/cam1", *protocol) == EXIT_OK
        wait_until(lambda: len(subscriber.payloads()) >= 2, timeout_s=10, message="both messages")
    assert subscriber.payloads() == [MESSAGE.encode()] * 2
    out, err = capsys.readouterr()
    assert "the broker does not speak MQTT 5" in err and "using MQTT 3.1.1" in err
    assert "published 2 message(s)" in out


def test_publish_command_auto_uses_mqtt5_on_a_broker_that_speaks_it(
        mosquitto: MosquittoBroker, unique_topic: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Against Mosquitto auto stays on MQTT 5: no fallback, and the broker logs a v5 client."""
    with PahoClient(mosquitto).connect() as subscriber:
        subscriber.subscribe(f"{unique_topic}/#", qos=1)
        client_id = f"cli-{uuid.uuid4().hex[:8]}"
        assert _publish(mosquitto, f"{unique_topic}/cam1", "--protocol", "auto", client_id=client_id) == EXIT_OK
        wait_until(lambda: len(subscriber.payloads()) >= 2, timeout_s=10, message="both messages")
    assert "does not speak MQTT 5" not in capsys.readouterr().err
    assert subscriber.payloads() == [MESSAGE.encode()] * 2
    # Mosquitto logs each connect as "New client connected from ... as ID (p5, c1, k60)": p5 is MQTT 5
    wait_until(lambda: f"as {client_id} (p5," in mosquitto.log_text(), message="Mosquitto's log of an MQTT 5 client")
