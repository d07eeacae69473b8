"""Delivery receipts: templates, the message, never blocking, and never feeding the bridge its own receipts."""

from __future__ import annotations

import threading

import orjson
import pytest

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import ConfigError
from mqtt_bridge.model.receipt import parse_receipt
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.observe.receipts import Receipts, compile_receipt_topics
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.transform.identity import derive_event_id, namespaced_event_id


class _RecordingClient:
    """Collects what would be published (the MQTT side is tested against Mosquitto in integration)."""

    def __init__(self, refuse: str = "") -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.refuse = refuse

    def publish_nowait(self, topic: str, payload: bytes) -> str:
        if self.refuse:
            return self.refuse
        self.sent.append((topic, payload))
        return ""

    def flush(self, timeout_s: float) -> bool:
        return True


def _route(**extra: object) -> RouteConfig:
    return RouteConfig.model_validate({"name": "inspection", "topic": "f/{line}/{camera}/detections",
                                       "use_case": "uc", **extra})


def _run(receipts: Receipts) -> None:
    stop = threading.Event()
    stop.set()
    receipts.run(stop, drain_s=2.0)


def _record(event_id: str = "e-1") -> Record:
    return Record(event={"eventId": event_id}, route="inspection", topic="f/L1/cam2/detections", received_at_s=1.0)


def test_receipts_publish_delivered_and_dead_lettered_outcomes() -> None:
    """Each final outcome becomes one receipt on the rendered topic; other stages make none."""
    client = _RecordingClient()
    stats = Stats()
    receipts = Receipts([_route(receipt_topic="{topic}/receipt/{line}")], client, stats)
    receipts.on_image_uploaded(_record("e-1"))
    receipts.on_delivered(_record("e-1"))
    receipts.on_dead_lettered(_record("e-2"), "api_rejected: unknown useCaseId")
    _run(receipts)
    assert [topic for topic, _ in client.sent] == ["f/L1/cam2/detections/receipt/L1"] * 2
    first, second = (parse_receipt(payload) for _, payload in client.sent)
    assert first is not None and second is not None
    assert (first.event_id, first.status, first.reason, first.source_topic) == (
        "e-1", "delivered", "", "f/L1/cam2/detections")
    assert (second.status, second.reason) == ("dead_lettered", "api_rejected: unknown useCaseId")
    assert stats.count("receipts_published") == 2


def test_receipts_for_ingest_dead_letters_carry_the_derived_event_id() -> None:
    """A message dead-lettered at ingest gets a receipt with the eventId ingest would have given it."""
    client = _RecordingClient()
    receipts = Receipts([_route(receipt_topic="{topic}/receipt")], client, Stats())
    payload = b'{"detections": [{"class": 5}]}'
    letter = DeadLetter(reason="invalid_message", detail="detections[0].class", topic="f/L1/cam2/detections",
                        route="inspection", payload=payload, received_at_s=1.0, dead_at_s=1.0)
    with_id = DeadLetter(reason="bad_box", detail="NaN", topic="f/L1/cam2/detections", route="inspection",
                         payload=b'{"event_id": "mine-7"}', received_at_s=1.0, dead_at_s=1.0)
    unrouted = DeadLetter(reason="no_route", detail="", topic="x", route="", payload=b"", received_at_s=1.0,
                          dead_at_s=1.0)
    receipts.on_committed([], [letter, with_id, unrouted])
    _run(receipts)
    ids = [orjson.loads(payload)["eventId"] for _, payload in client.sent]
    assert ids == [derive_event_id("inspection", "f/L1/cam2/detections", payload),
                   namespaced_event_id("inspection", "mine-7")]


def test_receipts_for_ingest_dead_letters_follow_the_ingest_precedence() -> None:
    """The message's own event_id beats the route's event_id_field (as at ingest), and only formats whose decoder
    reads an own id take it (a roboflow payload's event_id is not its eventId)."""
    client = _RecordingClient()
    routes = [_route(receipt_topic="{topic}/receipt", event_id_field="meta.serial"),
              RouteConfig.model_validate({"name": "rf", "topic": "rf/{camera}", "use_case": "uc",
                                          "format": "roboflow", "receipt_topic": "{topic}/receipt"})]
    receipts = Receipts(routes, client, Stats())
    both = b'{"event_id": "mine-8", "meta": {"serial": "s-1"}, "detections": [{"class": 5}]}'
    roboflow = b'{"event_id": "not-this", "predictions": 5}'
    receipts.on_committed([], [
        DeadLetter(reason="invalid_message", detail="", topic="f/L1/cam2/detections", route="inspection",
                   payload=both, received_at_s=1.0, dead_at_s=1.0),
        DeadLetter(reason="invalid_message", detail="", topic="rf/c1", route="rf", payload=roboflow,
                   received_at_s=1.0, dead_at_s=1.0)])
    _run(receipts)
    ids = [orjson.loads(payload)["eventId"] for _, payload in client.sent]
    assert ids == [namespaced_event_id("inspection", "mine-8"), derive_event_id("rf", "rf/c1", roboflow)]


def test_receipts_refuse_a_topic_the_bridge_subscribes_to() -> None:
    """A receipt topic matched by a route would loop back as a message: it is not sent, and counted."""
    client = _RecordingClient()
    stats = Stats()
    receipts = Receipts([_route(topic="f/#", receipt_topic="{topic}/receipt")], client, stats)
    receipts.on_delivered(Record(event={"eventId": "e"}, route="inspection", topic="f/a", received_at_s=1.0))
    _run(receipts)
    assert client.sent == []
    assert stats.count("receipts_lost", "loop") == 1


def test_receipts_never_block_when_the_queue_is_full() -> None:
    """With nobody publishing, offers beyond the bound are dropped at once and counted."""
    stats = Stats()
    receipts = Receipts([_route(receipt_topic="{topic}/receipt")], _RecordingClient(), stats, max_pending=2)
    for index in range(5):
        receipts.on_delivered(_record(f"e-{index}"))
    assert stats.count("receipts_lost", "queue_full") == 3


def test_receipts_count_what_the_mqtt_client_refuses() -> None:
    """A receipt the MQTT client cannot queue (broker away too long) is lost and counted by reason."""
    stats = Stats()
    receipts = Receipts([_route(receipt_topic="{topic}/receipt")], _RecordingClient(refuse="queue_full"), stats)
    receipts.on_delivered(_record())
    _run(receipts)
    assert stats.count("receipts_lost", "queue_full") == 1
    assert stats.count("receipts_published") == 0


def test_receipts_templates_reject_payload_fields_and_unknown_levels() -> None:
    """receipt_topic may use topic levels and {topic} only."""
    with pytest.raises(ConfigError) as info:
        compile_receipt_topics([_route(receipt_topic="r/{payload.id}"), _route(receipt_topic="r/{nope}")])
    paths = [path for path, _ in info.value.problems]
    assert paths == ["routes[0].receipt_topic", "routes[1].receipt_topic"]


def test_receipts_config_rejects_wildcards_in_the_topic() -> None:
    """A receipt topic with + or # or a leading $ is a config error."""
    for bad in ("r/+/x", "r/#", "$SYS/x"):
        with pytest.raises(ValueError, match="receipt_topic"):
            _route(receipt_topic=bad)
