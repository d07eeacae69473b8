"""Operator tools on a stopped bridge's buffer: dlq list/show/replay/purge, export, status, time filters."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mqtt_bridge.cli.tools import (
    DeadLetterFilter,
    Progress,
    UsageError,
    dlq_list,
    dlq_purge,
    dlq_replay,
    dlq_show,
    export_bundles,
    parse_when,
    status,
)
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import parse_config
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.sdk.publisher import Detection, build_message
from mqtt_bridge.storage.buffer import DiskBuffer
from tests.helpers import tiny_png

TOPIC = "f/L1/cam1/detections"


def _config(tmp_path: Path, use_case: str = "uc-a") -> BridgeConfig:
    return parse_config({"api": {"api_key": "k", "base_url": "http://127.0.0.1:9"},
                         "buffer": {"path": str(tmp_path / "buffer"), "min_free_bytes": 1},
                         "health": {"enabled": False},
                         "routes": [{"name": "inspection", "topic": "f/{line}/{camera}/detections",
                                     "use_case": use_case}]}, env={})


def _letter(reason: str, payload: bytes, dead_at_s: float, route: str = "inspection") -> DeadLetter:
    return DeadLetter(reason=reason, detail=f"because {reason}", topic=TOPIC, route=route, payload=payload,
                      received_at_s=dead_at_s, dead_at_s=dead_at_s)


def _record(seq: int, image: bytes = b"") -> Record:
    event: JsonDict = {"eventId": f"e-{seq}", "eventType": "quality_check", "useCaseId": "uc-a",
             "timestamp": "2024-01-15T10:30:00.000Z", "eventData": {"result": "fail"}}
    if image:
        event["images"] = [{"label": "mqtt-vision-bridge", "objectDetections": []}]
    return Record(event=event, route="inspection", topic=TOPIC, received_at_s=1_700_000_000.0 + seq, image=image)


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[DiskBuffer]:
    """An open buffer in tmp_path (the bridge is "stopped")."""
    config = _config(tmp_path)
    instance = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    instance.open()
    yield instance
    instance.close()


def test_parse_when_reads_iso_unix_and_ages() -> None:
    """--since/--until take ISO 8601, a Unix time, or an age."""
    assert parse_when("2024-01-01T00:00:00Z") == 1_704_067_200.0
    assert parse_when("1704067200") == 1_704_067_200.0
    assert parse_when("2h", now_s=10_000.0) == 2_800.0
    with pytest.raises(UsageError):
        parse_when("yesterday")


def test_dlq_list_filters_by_reason_route_and_time(buffer: DiskBuffer) -> None:
    """Filters combine: reason, route, and a time window on when the letter was dead-lettered."""
    buffer.append([], [_letter("invalid_json", b"{", 100.0), _letter("no_route", b"{}", 200.0, route=""),
                       _letter("invalid_json", b"[", 300.0)])
    out = io.StringIO()
    assert dlq_list(buffer, DeadLetterFilter(reason="invalid_json"), out) == 2
    assert dlq_list(buffer, DeadLetterFilter(reason="invalid_json", since_s=250.0), io.StringIO()) == 1
    assert dlq_list(buffer, DeadLetterFilter(route="inspection", until_s=150.0), io.StringIO()) == 1
    lines = io.StringIO()
    dlq_list(buffer, DeadLetterFilter(), lines, as_json=True)
    assert [orjson.loads(line)["reason"] for line in lines.getvalue().splitlines()] == [
        "invalid_json", "no_route", "invalid_json"]


def test_dlq_show_prints_reason_and_writes_the_payload(buffer: DiskBuffer, tmp_path: Path) -> None:
    """show prints one letter with its reason and can write the raw payload to a file."""
    buffer.append([], [_letter("invalid_json", b"{not json", 100.0)])
    [(key, _)] = list(buffer.dead_letters())
    out = io.StringIO()
    dlq_show(buffer, key, out, payload_to=tmp_path / "payload.bin")
    assert "reason:      invalid_json" in out.getvalue()
    assert (tmp_path / "payload.bin").read_bytes() == b"{not json"
    with pytest.raises(UsageError):
        dlq_show(buffer, "dlq-999999", io.StringIO())


def test_dlq_replay_reingests_with_the_current_config(buffer: DiskBuffer, tmp_path: Path) -> None:
    """A message dead-lettered under an old config passes after the fix; one still bad stays, counted."""
    message = build_message(detections=[Detection("scratch", 0.9, 5, 5, 2, 2)])
    old_route = _letter("no_route", message, 100.0, route="")
    still_bad = _letter("invalid_json", b"{", 100.0)
    buffer.append([], [old_route, still_bad])
    result = dlq_replay(buffer, _config(tmp_path), DeadLetterFilter())
    assert result.requeued == 1 and result.events == 1
    assert dict(result.still_failing) == {"invalid_json": 1}
    assert buffer.depth == 1 and buffer.dead_letter_count == 1
    [record] = list(buffer.records())
    assert record.event["useCaseId"] == "uc-a" and record.topic == TOPIC


def test_dlq_replay_requeues_api_rejected_records_as_they_were(buffer: DiskBuffer, tmp_path: Path) -> None:
    """An event the API refused (e.g. its use case did not exist yet) goes back into the queue unchanged."""
    record = _record(1)
    letter = DeadLetter(reason="api_rejected", detail="HTTP 400", topic=TOPIC, route="inspection",
                        payload=record.to_bytes(), received_at_s=1.0, dead_at_s=1.0, event_id="e-1",
                        api_status=400, api_body='{"error": "unknown useCaseId"}')
    buffer.append([], [letter])
    result = dlq_replay(buffer, _config(tmp_path), DeadLetterFilter(reason="api_rejected"))
    assert result.requeued == 1
    assert [r.event for r in buffer.records()] == [record.event]
    assert buffer.dead_letter_count == 0


def test_dlq_replay_survives_reopening(buffer: DiskBuffer, tmp_path: Path) -> None:
    """What replay requeued is durable: a reopened buffer holds it and not the dead letter."""
    message = build_message(detections=[])
    buffer.append([], [_letter("no_route", message, 100.0, route="")])
    dlq_replay(buffer, _config(tmp_path), DeadLetterFilter())
    buffer.close()
    buffer.open()
    assert (buffer.depth, buffer.dead_letter_count) == (1, 0)


def test_dlq_purge_needs_a_filter_and_confirmation(buffer: DiskBuffer) -> None:
    """purge refuses without a filter or --all, and without --yes; then deletes only the selection."""
    buffer.append([], [_letter("invalid_json", b"{", 100.0), _letter("no_route", b"{}", 200.0, route="")])
    with pytest.raises(UsageError, match="filter"):
        dlq_purge(buffer, DeadLetterFilter(), purge_all=False, confirmed=True)
    with pytest.raises(UsageError, match="--yes"):
        dlq_purge(buffer, DeadLetterFilter(reason="no_route"), purge_all=False, confirmed=False)
    assert buffer.dead_letter_count == 2
    assert dlq_purge(buffer, DeadLetterFilter(reason="no_route"), purge_all=False, confirmed=True) == 1
    assert [letter.reason for _, letter in buffer.dead_letters()] == ["invalid_json"]


def test_export_writes_one_bundle_per_event_in_the_bundle_format(buffer: DiskBuffer, tmp_path: Path) -> None:
    """Each undelivered event becomes event_*.tar.gz with payload.json (bundleFormatVersion 1) and its image."""
    image = tiny_png(3)
    buffer.append([_record(1, image), _record(2)], [])
    result = export_bundles(buffer, tmp_path / "out")
    assert result.written == 2
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert all(name.startswith("event_") and name.endswith(".tar.gz") for name in names)
    with tarfile.open(result.paths[0]) as tar:
        payload = orjson.loads(tar.extractfile("payload.json").read())  # type: ignore[union-attr]
        member = payload["images"][0]["file"]
        assert member.startswith("images/") and member.endswith(".png")
        assert tar.extractfile(member).read() == image  # type: ignore[union-attr]
    assert payload["bundleFormatVersion"] == 1 and payload["eventId"] == "e-1"
    assert "sourceId" not in payload["images"][0]
    assert buffer.depth == 2  # kept unless --delete


def test_export_delete_removes_exactly_the_exported_head(buffer: DiskBuffer, tmp_path: Path) -> None:
    """--delete with --limit drops the exported oldest events and keeps the rest queued."""
    buffer.append([_record(i) for i in range(5)], [])
    export_bundles(buffer, tmp_path / "out", limit=3, delete=True)
    assert [r.event_id for r in buffer.records()] == ["e-3", "e-4"]
    with pytest.raises(UsageError):
        export_bundles(buffer, tmp_path / "out", route="inspection", delete=True)


def test_status_of_a_stopped_bridge_reads_the_buffer(tmp_path: Path) -> None:
    """With no bridge answering, status summarises the buffer on disk and exits 1 while events wait."""
    config = _config(tmp_path)
    with DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes) as buffer:
        buffer.append([_record(1)], [_letter("invalid_json", b"{", 1.0)])
    out = io.StringIO()
    assert status(config, out) == 1
    text = out.getvalue()
    assert "stopped" in text and "1 event(s)" in text and "invalid_json: 1" in text


def test_progress_bar_draws_only_on_a_terminal() -> None:
    """A pipe or a log file gets no progress bar."""
    stream = io.StringIO()
    progress = Progress(10, "replaying", stream)
    progress.advance(10)
    progress.close()
    assert stream.getvalue() == ""
