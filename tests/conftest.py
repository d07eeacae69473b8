"""Shared fixtures: real brokers on free local ports, unique topics. Never mocks (style.md §3.5).

Reusable helpers (`wait_until`, `free_port`, `MosquittoBroker`, `PahoClient`) live in `tests/helpers.py`; the
ones tests use most are re-exported here for convenience, but import them from `tests.helpers`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mqtt_bridge.config.load import parse_config
from mqtt_bridge.devtools.broker import EmbeddedBroker
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.service import Service
from tests.helpers import (
    BridgeFactory,
    BrokerAddress,
    MosquittoBroker,
    MosquittoFactory,
    PahoClient,
    bridge_config,
    find_mosquitto,
    free_port,
    is_ci,
    wait_until,
)

__all__ = ["BrokerAddress", "MosquittoFactory", "PahoClient", "free_port", "wait_until"]


# --- topics -------------------------------------------------------------------------------------------------


@pytest.fixture
def unique_topic() -> str:
    """A topic prefix no other test uses, e.g. `test/3f2a9c1d7b4e` (append your own levels)."""
    return f"test/{uuid.uuid4().hex[:12]}"


# --- Mosquitto (real process) -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    """Path of the mosquitto executable: skips when it is missing, but fails in CI (`CI=true` or `CI=1`)."""
    binary = find_mosquitto()
    if binary is None:
        reason = "mosquitto is not installed (apt-get install mosquitto)"
        if is_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


@pytest.fixture
def mosquitto_factory(mosquitto_binary: str, tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Start Mosquitto brokers with options; every one still running is stopped (SIGTERM) after the test."""
    brokers: list[MosquittoBroker] = []

    def _factory(
        *,
        port: int | None = None,
        persistence: bool = True,
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 100,
        extra_conf: Sequence[str] = (),
        start: bool = True,
    ) -> MosquittoBroker:
        broker = MosquittoBroker(
            mosquitto_binary,
            tmp_path / f"mosquitto-{len(brokers)}",
            port=port,
            persistence=persistence,
            max_queued_messages=max_queued_messages,
            max_inflight_messages=max_inflight_messages,
            extra_conf=extra_conf,
        )
        brokers.append(broker)
        return broker.start() if start else broker

    yield _factory
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: MosquittoFactory) -> MosquittoBroker:
    """A running Mosquitto: persistence on, 100k offline queue, 100 in-flight messages per v3.1.1 client."""
    return mosquitto_factory()


# --- amqtt (embedded broker, in this process) ---------------------------------------------------------------


@pytest.fixture
def amqtt_broker() -> Iterator[EmbeddedBroker]:
    """A running embedded amqtt broker (MQTT 3.1.1 only) on a free local port."""
    broker = EmbeddedBroker("127.0.0.1", 0)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# --- either broker ------------------------------------------------------------------------------------------


@pytest.fixture(params=["mosquitto", "amqtt"])
def mqtt_broker(request: pytest.FixtureRequest) -> BrokerAddress:
    """Each test using this runs twice: against a real Mosquitto and against the embedded amqtt broker."""
    fixture_name = "mosquitto" if request.param == "mosquitto" else "amqtt_broker"
    broker: BrokerAddress = request.getfixturevalue(fixture_name)
    return broker


# --- emulator (Vision Events API) ---------------------------------------------------------------------------
# Reserved: the `emulator` fixture goes here.


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A started Vision Events emulator on a free port with the test use cases (`uc-a`, `uc-b`)."""
    instance = Emulator(use_cases=[{"name": "Line A", "id": "uc-a"}, {"name": "Line B", "id": "uc-b"}])
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


# --- the bridge -----------------------------------------------------------------------------------------------


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[BridgeFactory]:
    """Start in-process bridges (`Service`) from test configs; every one is shut down after the test."""
    services: list[Service] = []

    def _factory(broker: BrokerAddress, emulator: Emulator, protocol: str = "5",
                 **overrides: object) -> Service:
        raw = bridge_config(broker, emulator.url, tmp_path / f"buffer-{len(services)}", protocol)
        for section, values in overrides.items():
            current = raw.get(section)
            raw[section] = {**current, **values} if isinstance(current, dict) and isinstance(values, dict) else values
        service = Service(parse_config(raw, env={}))
        services.append(service)
        service.start()
        wait_until(lambda: service.state().mqtt_subscribed, timeout_s=15, message="bridge subscribed")
        return service

    yield _factory
    for service in services:
        service.shutdown()
