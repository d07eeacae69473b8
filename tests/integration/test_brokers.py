"""Broker interoperability (issue 13 item 3): the same bridge checks against every broker and protocol of the matrix
(tests/interop/matrix.py), and each broker's limits probed with a real paho client.

Brokers: real Mosquitto (Debian package), the embedded amqtt broker, and Aedes (npm), each started on a free port.
The results feed the table in deploy/brokers.md (`make interop-table`; see tests/interop/table.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_bridge.decode.sparkplug_schema import encode_payload
from mqtt_bridge.devtools.broker import EmbeddedBroker
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.service import Service
from tests.helpers import (
    BridgeFactory,
    BrokerAddress,
    PahoClient,
    detection_message,
    events_by_seq,
    wait_until,
)
from tests.integration.conftest import BrokerStarter, RestartableBroker
from tests.interop.matrix import BROKERS, LIMITS, TARGETS, BrokerKind, Target, limit_of

pytestmark = pytest.mark.integration

CAMERAS = (("L1", "cam1"), ("L1", "cam2"), ("L2", "cam1"))
SPARKPLUG_ROUTE: dict[str, object] = {
    "name": "sparkplug", "topic": "spBv1.0/{rest*}", "format": "sparkplug", "use_case": "uc-a",
    "sparkplug": {"metrics": [{"name": "Inspection/Boxes", "generic": {
        "detections_path": "", "class_path": "class", "confidence_path": "confidence",
        "box": {"convention": "center_xywh", "fields": ["x", "y", "width", "height"]}}}]}}
_COLUMNS = {"numOfColumns": 6, "columns": ["class", "x", "y", "width", "height", "confidence"],
            "types": [12, 10, 10, 10, 10, 10]}


def _by_target(target: Target) -> str:
    return target.id


@pytest.fixture(params=TARGETS, ids=_by_target)
def target(request: pytest.FixtureRequest) -> Target:
    """One broker with one `mqtt.protocol` setting of the bridge."""
    chosen: Target = request.param
    return chosen


def _start_bridge(bridge_factory: BridgeFactory, broker: BrokerAddress, emulator: Emulator, target: Target,
                  **overrides: object) -> Service:
    """A bridge on `target`'s protocol setting that must settle on the protocol the matrix says."""
    service = bridge_factory(broker, emulator, protocol=target.protocol_setting, **overrides)
    assert service.state().mqtt_protocol == target.protocol_in_use
    return service


def _exactly_once(emulator: Emulator, seqs: range, run: str) -> None:
    """Each seq of `run` became exactly one event (after a moment for a straggling duplicate to show up)."""
    wait_until(lambda: len(events_by_seq(emulator.events(), run)) >= len(seqs), timeout_s=60,
               message=f"{len(seqs)} events of run {run}")
    time.sleep(0.3)
    grouped = events_by_seq(emulator.events(), run)
    assert sorted(grouped) == list(seqs), "some messages are missing"
    assert [seq for seq, events in grouped.items() if len(events) != 1] == [], "some messages became two events"


def _dicts(value: object) -> list[dict[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _publish_detections(broker: BrokerAddress, seqs: range, run: str, *, images_every: int = 0) -> None:
    with PahoClient(broker, client_id=f"pub-{uuid.uuid4().hex[:8]}").connect() as publisher:
        publisher.publish_many([
            (f"t/factory/{CAMERAS[seq % 3][0]}/{CAMERAS[seq % 3][1]}/detections",
             detection_message(seq, run=run, with_image=bool(images_every) and seq % images_every == 0))
            for seq in seqs])


# --- the checks every target runs -----------------------------------------------------------------------------------


@pytest.mark.interop("delivery")
def test_brokers_delivery_every_message_becomes_exactly_one_event(
        target: Target, start_broker: BrokerStarter, emulator: Emulator, bridge_factory: BridgeFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    """QoS 1 detections (every 10th with an image) on three routed topics each become exactly one event."""
    caplog.set_level(logging.INFO, logger="mqtt_bridge")
    broker = start_broker(target.broker)
    _start_bridge(bridge_factory, broker, emulator, target)
    if target.protocol_setting == "auto":  # the log says which protocol auto chose, and why
        why = "the broker accepted MQTT 5" if target.protocol_in_use == "5" else "the broker does not speak MQTT 5"
        assert f"protocol={target.protocol_in_use} (auto: {why})" in caplog.text
    _publish_detections(broker, range(150), "delivery", images_every=10)
    _exactly_once(emulator, range(150), "delivery")
    source_ids = [str(image["sourceId"]) for event in emulator.events() for image in _dicts(event.get("images"))]
    assert len(source_ids) == 15
    assert set(source_ids) <= set(emulator.uploads())


@pytest.mark.interop("restart_session")
def test_brokers_restart_with_session_delivers_what_was_published_while_down_once(
        target: Target, start_broker: BrokerStarter, emulator: Emulator, bridge_factory: BridgeFactory,
        tmp_path: Path) -> None:
    """Stopped bridge, 60 messages published, restarted with the same client id and buffer: each arrives once."""
    broker = start_broker(target.broker)
    same = {"mqtt": {"client_id": f"bridge-{uuid.uuid4().hex[:8]}"}, "buffer": {"path": str(tmp_path / "buffer")}}
    first = _start_bridge(bridge_factory, broker, emulator, target, **same)
    _publish_detections(broker, range(20), "restart")
    _exactly_once(emulator, range(20), "restart")
    first.shutdown()

    _publish_detections(broker, range(20, 80), "restart")
    second = _start_bridge(bridge_factory, broker, emulator, target, **same)
    _exactly_once(emulator, range(80), "restart")
    assert second.buffer.dead_letter_count == 0


@pytest.mark.interop("qos0_sparkplug")
def test_brokers_qos0_sparkplug_publisher_every_ddata_becomes_an_event(
        target: Target, start_broker: BrokerStarter, emulator: Emulator, bridge_factory: BridgeFactory) -> None:
    """A Sparkplug B edge node's NBIRTH, DBIRTH and 60 DDATA, all at QoS 0: 60 events, each once."""
    broker = start_broker(target.broker)
    service = _start_bridge(bridge_factory, broker, emulator, target, routes=[SPARKPLUG_ROUTE])
    now_ms = int(time.time() * 1000) - 60_000
    births = [
        ("spBv1.0/PlantA/NBIRTH/Edge1", encode_payload({"timestamp": now_ms, "seq": 0, "metrics": [
            {"name": "bdSeq", "alias": 1, "datatype": 8, "longValue": "0"}]})),
        ("spBv1.0/PlantA/DBIRTH/Edge1/Cam1", encode_payload({"timestamp": now_ms, "seq": 1, "metrics": [
            {"name": "Inspection/Boxes", "alias": 6, "datatype": 16, "datasetValue": _COLUMNS}]})),
    ]
    ddata = [("spBv1.0/PlantA/DDATA/Edge1/Cam1", encode_payload({"timestamp": now_ms + i, "seq": (2 + i) % 256,
              "metrics": [{"alias": 6, "datasetValue": {**_COLUMNS, "rows": [{"elements": [
                  {"stringValue": "scratch"}, {"doubleValue": 100.0 + i}, {"doubleValue": 50.0},
                  {"doubleValue": 8.0}, {"doubleValue": 6.0}, {"doubleValue": 0.9}]}]}}]})) for i in range(60)]
    with PahoClient(broker, client_id=f"edge-{uuid.uuid4().hex[:8]}").connect() as edge:
        edge.publish_many(births + ddata, qos=0)
    wait_until(lambda: len(emulator.events()) >= 60, timeout_s=30, message="60 events from QoS 0 DDATA")
    time.sleep(0.3)
    events = emulator.events()
    assert len(events) == 60
    assert len({event["eventId"] for event in events}) == 60
    assert {event["useCaseId"] for event in events} == {"uc-a"}
    assert service.buffer.dead_letter_count == 0


# --- the limits, probed once per broker -----------------------------------------------------------------------------


def _settles(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Whether `predicate` holds within `timeout_s` (for probes whose answer may be no)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _speaks_v5(broker: BrokerAddress) -> bool:
    try:
        PahoClient(broker, protocol="5").connect(timeout_s=3).disconnect()
    except AssertionError:  # refused (0x84) or never answered: the two ways a 3.1.1-only broker says no
        return False
    return True


def _probe_mqtt5(broker: BrokerAddress) -> bool | None:
    return _speaks_v5(broker)


def _probe_shared_subscriptions(broker: BrokerAddress) -> bool | None:
    """Two members of a `$share` group together get each message exactly once, and both get some."""
    topic = f"test/{uuid.uuid4().hex[:12]}"
    protocol: Literal["3.1.1", "5"] = "5" if _speaks_v5(broker) else "3.1.1"
    members = [PahoClient(broker, protocol=protocol).connect() for _ in range(2)]
    try:
        try:
            for member in members:
                member.subscribe(f"$share/g/{topic}/#", qos=1)
        except AssertionError:  # the broker refused the subscription
            return False
        payloads = [f"m{i}".encode() for i in range(20)]
        with PahoClient(broker).connect() as publisher:
            publisher.publish_many([(f"{topic}/a", payload) for payload in payloads], qos=1)

        def received() -> list[bytes]:
            return sorted(payload for member in members for payload in member.payloads())

        _settles(lambda: len(received()) >= len(payloads), timeout_s=3)
        return received() == sorted(payloads) and all(member.payloads() for member in members)
    finally:
        for member in members:
            member.close()


def _away_and_back(broker: BrokerAddress, *, protocol: Literal["3.1.1", "5"] = "3.1.1", session_expiry_s: int = 3600,
                   between: Callable[[], object] = lambda: None) -> PahoClient:
    """A persistent subscriber leaves, 5 QoS 1 messages are published, `between` runs, and it comes back."""
    topic, client_id = f"test/{uuid.uuid4().hex[:12]}", f"probe-{uuid.uuid4().hex[:8]}"
    first = PahoClient(broker, client_id, clean_session=False, protocol=protocol, session_expiry_s=session_expiry_s)
    first.connect().subscribe(f"{topic}/#", qos=1)
    first.disconnect()
    with PahoClient(broker).connect() as publisher:
        publisher.publish_many([(f"{topic}/a", f"away-{i}".encode()) for i in range(5)], qos=1)
    between()
    back = PahoClient(broker, client_id, clean_session=False, protocol=protocol, session_expiry_s=session_expiry_s)
    back.connect()
    _settles(lambda: len(back.payloads()) >= 5, timeout_s=2)
    return back


def _probe_session_expiry(broker: BrokerAddress) -> bool | None:
    """A v5 session with a 1 s expiry is gone (with its queue) 3 s after the client left."""
    if not _speaks_v5(broker):
        return None
    with _away_and_back(broker, protocol="5", session_expiry_s=1, between=lambda: time.sleep(3)) as back:
        return back.session_present is False and back.payloads() == []


def _probe_queue_survives_broker_restart(broker: RestartableBroker) -> bool | None:
    with _away_and_back(broker, between=broker.restart) as back:
        return back.session_present is True and len(back.payloads()) == 5


def _probe_replay_without_retain(broker: BrokerAddress) -> bool | None:
    with _away_and_back(broker) as back:
        assert back.session_present is True, "every broker here keeps a clean_session=False session"
        assert back.payloads() == [f"away-{i}".encode() for i in range(5)], "queued messages come back in order"
        return not any(message.retain for message in back.messages)


def _probe_redelivers_unacked(broker: BrokerAddress) -> bool | None:
    """A QoS 1 message received but never acked by a crashed persistent client is sent again when it returns."""
    topic, client_id = f"test/{uuid.uuid4().hex[:12]}", f"probe-{uuid.uuid4().hex[:8]}"
    received, subscribed = threading.Event(), threading.Event()
    crashing = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                           protocol=paho.MQTTv311, manual_ack=True)  # receives, never acks: a bridge before commit
    crashing.on_subscribe = lambda *_: subscribed.set()
    crashing.on_message = lambda *_: received.set()
    crashing.connect(broker.host, broker.port)
    crashing.loop_start()
    try:
        crashing.subscribe(f"{topic}/#", qos=1)
        assert subscribed.wait(5), "no SUBACK"
        with PahoClient(broker).connect() as publisher:
            publisher.publish(f"{topic}/a", b"in-flight", qos=1)
        assert received.wait(5), "the message never arrived"
    finally:
        crashing.loop_stop()
        sock = crashing.socket()
        if sock is not None:
            sock.close()  # the connection ends without a PUBACK or a DISCONNECT, as when the process dies
    with PahoClient(broker, client_id, clean_session=False) as back:
        back.connect()
        return _settles(lambda: back.payloads() == [b"in-flight"], timeout_s=3)


_PROBES: dict[str, Callable[[RestartableBroker], bool | None]] = {
    "redelivers_unacked": _probe_redelivers_unacked,
    "mqtt5": _probe_mqtt5, "shared_subscriptions": _probe_shared_subscriptions,
    "session_expiry": _probe_session_expiry, "queue_survives_broker_restart": _probe_queue_survives_broker_restart,
    "replay_without_retain": _probe_replay_without_retain,
}


def _limit_cases() -> list[object]:
    return [pytest.param(limit.id, info.kind, id=f"{limit.id}-{info.kind}",
                         marks=pytest.mark.interop(limit.id, row=info.kind.value))
            for limit in LIMITS for info in BROKERS]


@pytest.mark.parametrize(("limit_id", "kind"), _limit_cases())
def test_brokers_limit_probe_finds_what_the_matrix_says(limit_id: str, kind: BrokerKind,
                                                        start_broker: BrokerStarter) -> None:
    """The broker does (or does not) do what the matrix's limit says; the table in deploy/brokers.md relies on it."""
    expected = limit_of(limit_id).expected[kind]
    assert _PROBES[limit_id](start_broker(kind)) is expected


# --- the embedded broker's own lifecycle ------------------------------------------------------------------------


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
