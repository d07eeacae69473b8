"""Proof of delivery and findable images, against real parts: Mosquitto, the emulator over HTTP, the bridge
in-process, and `mqtt-bridge verify` reading the delivery ledger while the bridge runs (issue 12 items 7, 8)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqtt_bridge.cli.main import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, main
from mqtt_bridge.config.load import parse_config
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.service import Service
from mqtt_bridge.storage.ledger import DeliveryLedger, ledger_path
from tests.helpers import MosquittoBroker, PahoClient, bridge_config, detection_message, wait_until

pytestmark = pytest.mark.integration

TOPIC = "t/factory/L1/cam1/detections"
OTHER = "t/factory/L2/cam7/detections"
INFERENCE = "t/inference/cam3"


def _inference_message(seq: int) -> bytes:
    return (b'{"predictions": [{"x": 5, "y": 5, "width": 4, "height": 4, "confidence": 0.9, "class": "bolt"}], '
            b'"image": {"width": 32, "height": 24}, "seq": %d}' % seq)


def _ledger_count(buffer: Path) -> int:
    with DeliveryLedger(ledger_path(buffer), 1000).open(create=False) as ledger:
        return ledger.count


def _start(mosquitto: MosquittoBroker, emulator: Emulator, tmp_path: Path) -> tuple[Service, Path]:
    raw = bridge_config(mosquitto, emulator.url, tmp_path / "buffer")
    config_path = tmp_path / "bridge.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    service = Service(parse_config(raw, env={}))
    service.start()
    wait_until(lambda: service.state().is_ready, timeout_s=15, message="ready")
    return service, config_path


def test_verify_finds_every_event_of_a_run_and_reports_the_ones_the_api_dropped(
        mosquitto: MosquittoBroker, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A demo-like run (two routes, two use cases, images on some messages, several query pages per use case):
    verify, run while the bridge runs, finds every delivered event (exit 0). Then the emulator confirms three
    events but does not keep them: verify lists exactly those three as missing (exit 1)."""
    service, config_path = _start(mosquitto, emulator, tmp_path)
    try:
        with PahoClient(mosquitto, client_id="verify-publisher").connect() as publisher:
            publisher.publish_many([(TOPIC if seq % 3 else OTHER, detection_message(seq, with_image=seq % 10 == 0))
                                    for seq in range(240)] + [(INFERENCE, _inference_message(s)) for s in range(30)])
        wait_until(lambda: service.stats.count("events_delivered") == 270, timeout_s=60, message="delivered")
        wait_until(lambda: _ledger_count(tmp_path / "buffer") == 270, timeout_s=10, message="ledger written")
        capsys.readouterr()
        assert main(["verify", "--config", str(config_path)]) == EXIT_OK
        out = capsys.readouterr().out
        assert "270 delivered event(s) in the ledger: 270 found, 0 missing" in out
        pages = re.search(r"\((\d+) query page", out)
        # 240 events of uc-a need 3 pages of 100 and uc-b one more: the cursor was followed
        assert pages is not None and int(pages.group(1)) >= 4

        emulator.set_faults(forget_events=3)
        with PahoClient(mosquitto, client_id="verify-publisher-2").connect() as publisher:
            publisher.publish_many([(TOPIC, detection_message(seq, run="second")) for seq in range(20)])
        wait_until(lambda: service.stats.count("events_delivered") == 290, timeout_s=30, message="delivered again")
        wait_until(lambda: _ledger_count(tmp_path / "buffer") == 290, timeout_s=10, message="ledger written")
        capsys.readouterr()
        assert main(["verify", "--config", str(config_path), "--since", "1h"]) == EXIT_FAILURE
        out = capsys.readouterr().out
    finally:
        service.shutdown()
    stored = {event["eventId"] for event in emulator.events()}
    with DeliveryLedger(ledger_path(tmp_path / "buffer"), 1000).open(create=False) as ledger:
        delivered = {entry.event_id for entry in ledger.entries()}
    lost = delivered - stored
    assert len(delivered) == 290 and len(lost) == 3
    reported = {line.split()[1] for line in out.splitlines() if line.startswith("missing ")}
    assert reported == lost
    assert "290 delivered event(s) since " in out and "287 found, 3 missing" in out


def test_verify_with_the_bridge_stopped_and_its_config_errors(mosquitto: MosquittoBroker, emulator: Emulator,
                                                              tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """verify reads the ledger of a stopped bridge too; a fresh buffer has nothing to verify (exit 0); the ledger
    turned off is a usage error (exit 2), like a broken config."""
    raw = bridge_config(mosquitto, emulator.url, tmp_path / "fresh")
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(yaml.safe_dump(raw))
    assert main(["verify", "--config", str(fresh)]) == EXIT_OK
    assert "no deliveries recorded yet" in capsys.readouterr().out
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({**raw, "buffer": {**raw["buffer"], "ledger_entries": 0}}))  # type: ignore[dict-item]
    assert main(["verify", "--config", str(off)]) == EXIT_CONFIG
    assert "ledger_entries is 0" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**raw, "buffer": {"ledger_entries": -1}}))
    assert main(["verify", "--config", str(broken)]) == EXIT_CONFIG

    service, config_path = _start(mosquitto, emulator, tmp_path)
    with PahoClient(mosquitto, client_id="verify-stopped").connect() as publisher:
        publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(5)])
    wait_until(lambda: service.stats.count("events_delivered") == 5, timeout_s=30, message="delivered")
    service.shutdown()  # the last batch's entries are written on the way out
    capsys.readouterr()
    assert main(["verify", "--config", str(config_path), "--since", "10m"]) == EXIT_OK
    assert "5 found, 0 missing" in capsys.readouterr().out


def test_uploaded_images_carry_a_topic_derived_name_and_their_event_metadata(
        mosquitto: MosquittoBroker, emulator: Emulator, tmp_path: Path) -> None:
    """Every image reaches the workspace with `name` from its topic (safe characters, the extension of its bytes)
    and `metadata` holding the event's deviceId, streamId and route, which the emulator checked against the
    customMetadata rules and kept."""
    service, _ = _start(mosquitto, emulator, tmp_path)
    try:
        with PahoClient(mosquitto, client_id="upload-publisher").connect() as publisher:
            publisher.publish_many([(TOPIC, detection_message(seq, with_image=True)) for seq in range(3)])
        wait_until(lambda: len(emulator.events()) == 3, timeout_s=30, message="delivered")
    finally:
        service.shutdown()
    uploads: list[dict[str, Any]] = list(emulator.upload_details())
    stored: list[dict[str, Any]] = list(emulator.events())
    events = {event["images"][0]["sourceId"]: event for event in stored}
    assert len(uploads) == 3 and set(events) == {u["sourceId"] for u in uploads}
    for upload in uploads:
        event = events[upload["sourceId"]]
        assert upload["name"] == f"t_factory_L1_cam1_detections_{event['eventId']}.png"
        assert upload["metadata"] == {"deviceId": "L1-cam1", "streamId": "cam1", "route": "inspection"}


@pytest.mark.parametrize("write_scope", ["visionEvents.write", "device.update"])
def test_bridge_delivers_with_the_send_events_scope_spelling_and_verify_needs_a_read_scope(
        write_scope: str, mosquitto: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key holding only the dotted write scope of the send-events page delivers (the emulator accepts both
    spellings, spec §6); verify with a write-only key is refused (exit 3, a read scope is needed), with a key that
    also reads it passes."""
    keys = {"writer": frozenset({write_scope}), "reader": frozenset({write_scope, "device:read"})}
    with Emulator(api_keys=keys, use_cases=[{"name": "Line A", "id": "uc-a"}, {"name": "Line B", "id": "uc-b"}]) \
            as emulator:
        raw = bridge_config(mosquitto, emulator.url, tmp_path / "buffer")
        raw["api"] = {**raw["api"], "api_key": "writer"}  # type: ignore[dict-item]
        service = Service(parse_config(raw, env={}))
        service.start()
        try:
            wait_until(lambda: service.state().is_ready, timeout_s=15, message="ready")
            with PahoClient(mosquitto, client_id="scope-publisher").connect() as publisher:
                publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(4)])
            wait_until(lambda: len(emulator.events()) == 4, timeout_s=30, message="delivered")
        finally:
            service.shutdown()
        writer = tmp_path / "writer.yaml"
        writer.write_text(yaml.safe_dump(raw))
        assert main(["verify", "--config", str(writer)]) == EXIT_UNAVAILABLE
        assert "refused the key" in capsys.readouterr().err
        reader = tmp_path / "reader.yaml"
        reader.write_text(yaml.safe_dump({**raw, "api": {**raw["api"], "api_key": "reader"}}))  # type: ignore[dict-item]
        assert main(["verify", "--config", str(reader)]) == EXIT_OK
        assert "4 found, 0 missing" in capsys.readouterr().out
