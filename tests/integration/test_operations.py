"""Operations against real parts: health token, use-case start-up check, delivery receipts, the DLQ workflow, the
CLI tools, and secrets in DEBUG logs (Mosquitto, the emulator over HTTP, the bridge in-process or as a process)."""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from mqtt_bridge.cli.main import EXIT_CONFIG, EXIT_OK, main
from mqtt_bridge.cli.use_cases import use_cases_check
from mqtt_bridge.config.load import load_config, parse_config
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.observe.health import COOKIE
from mqtt_bridge.sdk.publisher import Detection, Publisher
from mqtt_bridge.service import Service
from mqtt_bridge.transform.identity import namespaced_event_id
from tests.helpers import (
    TEST_ROUTES,
    BridgeFactory,
    MosquittoBroker,
    PahoClient,
    bridge_config,
    detection_message,
    events_by_seq,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration

TOPIC = "t/factory/L1/cam1/detections"


def _routes(**extra: object) -> list[dict[str, object]]:
    return [{**route, "topic": str(route["topic"]).replace("{prefix}", "t"), **extra} for route in TEST_ROUTES]


def _write(path: Path, raw: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


# --- health token -------------------------------------------------------------------------------------------------

def test_health_token_guards_metrics_and_status_but_not_probes(mosquitto: MosquittoBroker, emulator: Emulator,
                                                               bridge_factory: BridgeFactory) -> None:
    """With health.token: /metrics and the page need it (Bearer or login cookie); probes answer status only."""
    service = bridge_factory(mosquitto, emulator, health={"enabled": True, "port": 0, "token": "tok-3f9a"})
    base = f"http://127.0.0.1:{service.health_port}"
    bearer = {"Authorization": "Bearer tok-3f9a"}
    with requests.Session() as http:
        assert http.get(f"{base}/metrics", timeout=5).status_code == 401
        assert http.get(f"{base}/status.json", timeout=5).status_code == 401
        assert http.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        assert http.get(f"{base}/metrics", headers=bearer, timeout=5).status_code == 200
        assert http.get(f"{base}/healthz", timeout=5).json() == {"alive": True}
        assert "error" in http.get(f"{base}/healthz", headers=bearer, timeout=5).json()
        first = http.get(f"{base}/status", timeout=5)
        assert first.status_code == 401 and 'name="token"' in first.text
        assert 'method="post"' in first.text  # the token goes in the form body, never in a URL
        assert http.get(f"{base}/status?token=tok-3f9a", timeout=5).status_code == 401  # a URL token: no login
        login = http.post(f"{base}/status", data={"token": "tok-3f9a"}, allow_redirects=False, timeout=5)
        assert login.status_code == 303 and login.headers["Location"] == "/status"
        assert f"{COOKIE}=" in login.headers["Set-Cookie"] and "HttpOnly" in login.headers["Set-Cookie"]
        assert "tok-3f9a" not in login.headers["Set-Cookie"]  # a signed session value, not the token
        page = http.get(f"{base}/status", timeout=5)  # the session now carries the cookie
        assert page.status_code == 200 and "mqtt-vision-bridge" in page.text
        assert http.get(f"{base}/status.json", timeout=5).json()["state"]["alive"] is True


# --- use cases ----------------------------------------------------------------------------------------------------

def test_startup_with_a_use_case_not_listed_yet_warns_starts_and_delivers(
        mosquitto: MosquittoBroker, emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A new use case is listed only after its first event: the bridge warns (route and id), starts and delivers,
    and from then on `use-cases check` shows it listed."""
    raw = bridge_config(mosquitto, emulator.url, tmp_path / "buffer")
    raw["routes"] = _routes()
    config_path = _write(tmp_path / "c.yaml", raw)
    assert emulator.use_cases() and emulator.lists_unused_use_cases is False  # uc-a exists, has no event yet
    out = io.StringIO()  # the command's function (main would set up logging, hiding the warnings from caplog)
    use_cases_check(load_config(config_path), out)
    table = out.getvalue()
    assert "inspection" in table and "uc-a" in table and "not listed yet" in table and "after its first event" in table
    caplog.set_level(logging.WARNING, logger="mqtt_bridge.api.usecases")
    service = Service(parse_config(raw, env={}))
    service.start()
    try:
        wait_until(lambda: service.state().mqtt_subscribed, timeout_s=15, message="subscribed")
        with PahoClient(mosquitto, client_id="new-use-case-publisher").connect() as publisher:
            publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(3)])
        wait_until(lambda: len(events_by_seq(emulator.events())) == 3, timeout_s=15, message="delivered")
    finally:
        service.shutdown()
    assert "route=inspection use_case=uc-a status='not listed yet'" in caplog.text
    assert "after its first event" in caplog.text
    assert service.buffer.dead_letter_count == 0
    assert main(["use-cases", "check", "--config", str(config_path)]) == EXIT_OK
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["inspection", "uc-a", "listed"] in lines


def test_startup_with_an_unknown_use_case_starts_and_dead_letters_with_the_api_answer(
        mosquitto: MosquittoBroker, emulator: Emulator, tmp_path: Path) -> None:
    """A use case the API does not know never stops start-up (the list cannot prove it missing); the API refuses
    its events, which are dead-lettered with the API's answer; a real config error still exits 2."""
    raw = bridge_config(mosquitto, emulator.url, tmp_path / "buffer")
    raw["routes"] = _routes(use_case="uc-nope")
    service = Service(parse_config(raw, env={}))
    service.start()
    try:
        wait_until(lambda: service.state().mqtt_subscribed, timeout_s=15, message="subscribed")
        with PahoClient(mosquitto, client_id="unknown-use-case-publisher").connect() as publisher:
            publisher.publish_many([(TOPIC, detection_message(0))])
        wait_until(lambda: service.buffer.dead_letter_count == 1, timeout_s=15, message="api rejection")
        _, letter = next(iter(service.buffer.dead_letters()))
    finally:
        service.shutdown()
    assert letter.reason == "api_rejected" and letter.api_status == 400 and "uc-nope" in letter.api_body
    raw["routes"] = _routes(use_case="{nope}")
    assert main(["run", "--config", str(_write(tmp_path / "c.yaml", raw))]) == EXIT_CONFIG


def test_startup_with_the_api_down_warns_and_starts(mosquitto: MosquittoBroker, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable API never blocks start-up: the check is skipped with a warning."""
    raw = bridge_config(mosquitto, f"http://127.0.0.1:{free_port()}", tmp_path / "buffer")
    service = Service(parse_config(raw, env={}))
    caplog.set_level(logging.WARNING, logger="mqtt_bridge.service")
    try:
        service.start()
        wait_until(lambda: service.state().mqtt_subscribed, timeout_s=15, message="subscribed")
    finally:
        service.shutdown()
    assert "use-case check skipped" in caplog.text


def test_dlq_workflow_replays_events_once_the_use_case_exists(mosquitto: MosquittoBroker, emulator: Emulator,
                                                              tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Missing use case allowed → events dead-lettered by the API → create it → dlq replay → delivered once."""
    raw = bridge_config(mosquitto, emulator.url, tmp_path / "buffer")
    raw["routes"] = _routes(use_case="uc-later")
    config_path = _write(tmp_path / "bridge.yaml", raw)
    service = Service(parse_config(raw, env={}))  # an unknown use case only warns
    service.start()
    try:
        wait_until(lambda: service.state().mqtt_subscribed, timeout_s=15, message="subscribed")
        with PahoClient(mosquitto, client_id="dlq-publisher").connect() as publisher:
            publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(5)])
        wait_until(lambda: service.buffer.dead_letter_count == 5, timeout_s=15, message="api rejections")
    finally:
        service.shutdown()
    assert main(["dlq", "list", "--config", str(config_path), "--reason", "api_rejected"]) == EXIT_OK
    assert "5 dead letter(s)" in capsys.readouterr().out
    assert main(["use-cases", "create", "Line later", "--config", str(config_path)]) == EXIT_OK
    created_id = capsys.readouterr().out.split()[3]
    emulator.add_use_case("Later", "uc-later")  # the id the config names (the API picks ids; the emulator can too)
    emulator.lists_unused_use_cases = True  # neither has recorded an event yet, so the documented list omits them
    assert main(["use-cases", "list", "--config", str(config_path)]) == EXIT_OK
    listed = capsys.readouterr().out
    assert created_id in listed and "uc-later  Later  active  (route inspection, inference)" in listed
    assert main(["dlq", "replay", "--config", str(config_path), "--reason", "api_rejected"]) == EXIT_OK
    assert "replayed 5 dead letter(s) as 5 event(s)" in capsys.readouterr().out
    restarted = Service(parse_config(raw, env={}))
    restarted.start()
    try:
        wait_until(lambda: len(events_by_seq(emulator.events())) == 5, timeout_s=20, message="replayed delivered")
    finally:
        restarted.shutdown()
    assert all(len(events) == 1 for events in events_by_seq(emulator.events()).values())


# --- receipts -----------------------------------------------------------------------------------------------------

def test_receipts_confirm_delivery_and_dead_letters_to_the_publisher(mosquitto: MosquittoBroker,
                                                                    emulator: Emulator,
                                                                    bridge_factory: BridgeFactory) -> None:
    """The publisher helper waits for the receipt: delivered, rejected by the API, or dead-lettered at ingest."""
    service = bridge_factory(mosquitto, emulator, routes=_routes(receipt_topic="{topic}/receipt"))
    with Publisher(mosquitto.host, mosquitto.port, client_id="receipt-waiter") as publisher:
        delivered = publisher.publish(TOPIC, detections=[Detection("scratch", 0.9, 10, 10, 4, 4)],
                                      wait_receipt_s=15)
        assert delivered is not None and delivered.status == "delivered" and delivered.source_topic == TOPIC
        assert any(event["eventId"] == delivered.event_id for event in emulator.events())
        # an id from the message is namespaced by the route (UUIDv5 of route name and id): the API sees that one
        emulator.set_faults(fail_event_ids=[namespaced_event_id("inspection", "rejected-1")])
        rejected = publisher.publish(TOPIC, detections=[], event_id="rejected-1", wait_receipt_s=15)
        assert rejected is not None and rejected.status == "dead_lettered"
        assert rejected.event_id == namespaced_event_id("inspection", "rejected-1")
        assert rejected.reason.startswith("api_rejected")
        bad = publisher.publish_raw(TOPIC, b"{not json", route="inspection", wait_receipt_s=15)
        assert bad is not None and bad.status == "dead_lettered" and bad.reason.startswith("invalid_json")
    assert service.stats.count("receipts_published") == 3


def test_receipts_never_hold_up_delivery_while_the_broker_is_down(mosquitto: MosquittoBroker,
                                                                 emulator: Emulator,
                                                                 bridge_factory: BridgeFactory) -> None:
    """Buffered events are delivered with the broker gone: their receipts wait in a bounded queue or are counted."""
    emulator.set_faults(status_always=503)
    service = bridge_factory(mosquitto, emulator, routes=_routes(receipt_topic="{topic}/receipt"))
    with PahoClient(mosquitto, client_id="outage-publisher").connect() as publisher:
        publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(50)])
    wait_until(lambda: service.buffer.depth == 50, timeout_s=15, message="all buffered")
    mosquitto.stop()
    emulator.clear_faults()
    wait_until(lambda: len(events_by_seq(emulator.events())) == 50, timeout_s=30, message="delivered, broker down")
    wait_until(lambda: service.stats.count("receipts_published") + service.stats.count("receipts_lost") == 50,
               timeout_s=10, message="every receipt accounted for")
    assert service.state().is_alive


# --- CLI status -----------------------------------------------------------------------------------------------------

def test_status_command_reads_the_running_bridge(mosquitto: MosquittoBroker, emulator: Emulator, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`mqtt-bridge status` shows the live numbers of the bridge named by the config (through its health server)."""
    raw = bridge_config(mosquitto, emulator.url, tmp_path / "buffer")
    raw["health"] = {"enabled": True, "port": free_port(), "token": "status-tok"}
    config_path = _write(tmp_path / "bridge.yaml", raw)
    service = Service(parse_config(raw, env={}))
    service.start()
    try:
        wait_until(lambda: service.state().is_ready, timeout_s=15, message="ready")
        with PahoClient(mosquitto, client_id="status-publisher").connect() as publisher:
            publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(3)])
        wait_until(lambda: len(emulator.events()) == 3, timeout_s=15, message="delivered")
        # the API stores a batch before its answer reaches the bridge, which counts the events on that answer
        wait_until(lambda: service.stats.count("events_delivered") == 3, timeout_s=15, message="counted")
        capsys.readouterr()
        assert main(["status", "--config", str(config_path)]) == EXIT_OK
        out = capsys.readouterr().out
    finally:
        service.shutdown()
    assert "running" in out and "READY" in out and "delivered=3" in out and "inspection: 3 received" in out


# --- secrets in logs ------------------------------------------------------------------------------------------------

def test_logs_at_debug_never_contain_the_api_key_or_mqtt_password(mosquitto: MosquittoBroker, emulator: Emulator,
                                                                  tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A run refused with 401 logs a WARNING per retry, and neither secret, raw or formatted, in-process or not."""
    api_key, password = "sekret-api-key-7d1c", "mqtt-pass-93bf"
    raw = bridge_config(mosquitto, emulator.url, tmp_path / "buffer")
    raw["api"] = {**raw["api"], "api_key": api_key}  # type: ignore[dict-item]
    raw["mqtt"] = {**raw["mqtt"], "username": "bridge", "password": password}  # type: ignore[dict-item]
    raw["logging"] = {"level": "DEBUG", "format": "json"}
    config_path = _write(tmp_path / "bridge.yaml", raw)
    # in-process, no redaction filter: no code path may log the secrets at all
    caplog.set_level(logging.DEBUG)
    service = Service(parse_config(raw, env={}))
    service.start()
    try:
        # publish only once subscribed: before that the broker has no session to keep the message for us
        wait_until(lambda: service.state().mqtt_subscribed, timeout_s=15, message="bridge subscribed")
        with PahoClient(mosquitto, client_id="secret-publisher").connect() as publisher:
            publisher.publish(TOPIC, detection_message(1))
        wait_until(lambda: service.stats.count("api_retries", "401") >= 2, timeout_s=15, message="401 retries")
    finally:
        service.shutdown()
    raw_messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "api refused the key status=401" in raw_messages
    assert api_key not in raw_messages and password not in raw_messages
    assert api_key not in caplog.text and password not in caplog.text
    # the real process, through the CLI's logging set-up
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "mqtt_bridge", "run", "--config", str(config_path),
                                    "--log-level", "DEBUG"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: log_path.read_text().count("status=401") >= 2, timeout_s=20, message="401 logged twice")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    text = log_path.read_text()
    assert '"level": "WARNING"' in text and '"fields": {"status": "401"' in text
    assert api_key not in text and password not in text


def test_receipts_publisher_times_out_without_a_receipt(mosquitto: MosquittoBroker) -> None:
    """With no bridge sending receipts the helper returns None after its wait, without hanging."""
    with Publisher(mosquitto.host, mosquitto.port, client_id="lonely-waiter") as publisher:
        assert publisher.publish(TOPIC, detections=[], wait_receipt_s=0.5) is None
