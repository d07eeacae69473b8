"""`mqtt-bridge dlq`: list, show, replay and purge dead letters on a stopped bridge's buffer."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from mqtt_bridge.cli.common import EXIT_FAILURE, EXIT_OK, UsageError
from mqtt_bridge.cli.dlq import DeadLetterFilter, dlq_list, dlq_purge, dlq_replay, dlq_show
from mqtt_bridge.cli.main import main
from mqtt_bridge.config.load import parse_config
from mqtt_bridge.model.record import DeadLetter
from mqtt_bridge.routing.router import Router
from mqtt_bridge.sdk.publisher import Detection, build_message
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.transform.ingest import Ingestor
from tests.unit.cli.tool_data import TOPIC, buffered_record, dead_letter, tool_config


def test_dlq_list_filters_by_reason_route_and_time(buffer: DiskBuffer) -> None:
    """Filters combine: reason, route, and a time window on when the letter was dead-lettered."""
    buffer.append([], [dead_letter("invalid_json", b"{", 100.0), dead_letter("no_route", b"{}", 200.0, route=""),
                       dead_letter("invalid_json", b"[", 300.0)])
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
    buffer.append([], [dead_letter("invalid_json", b"{not json", 100.0)])
    [(key, _)] = list(buffer.dead_letters())
    out = io.StringIO()
    dlq_show(buffer, key, out, payload_to=tmp_path / "payload.bin")
    assert "reason:      invalid_json" in out.getvalue()
    assert (tmp_path / "payload.bin").read_bytes() == b"{not json"
    with pytest.raises(UsageError):
        dlq_show(buffer, "dlq-999999", io.StringIO())


def test_dlq_replay_reingests_with_the_currenttool_config(buffer: DiskBuffer, tmp_path: Path) -> None:
    """A message dead-lettered under an old config passes after the fix; one still bad stays, counted."""
    message = build_message(detections=[Detection("scratch", 0.9, 5, 5, 2, 2)])
    old_route = dead_letter("no_route", message, 100.0, route="")
    still_bad = dead_letter("invalid_json", b"{", 100.0)
    buffer.append([], [old_route, still_bad])
    result = dlq_replay(buffer, tool_config(tmp_path), DeadLetterFilter())
    assert result.requeued == 1 and result.events == 1
    assert dict(result.still_failing) == {"invalid_json": 1}
    assert buffer.depth == 1 and buffer.dead_letter_count == 1
    [record] = list(buffer.records())
    assert record.event["useCaseId"] == "uc-a" and record.topic == TOPIC


def test_dlq_replay_requeues_api_rejected_records_as_they_were(buffer: DiskBuffer, tmp_path: Path) -> None:
    """An event the API refused (e.g. its use case did not exist yet) goes back into the queue unchanged."""
    record = buffered_record(1)
    letter = DeadLetter(reason="api_rejected", detail="HTTP 400", topic=TOPIC, route="inspection",
                        payload=record.to_bytes(), received_at_s=1.0, dead_at_s=1.0, event_id="e-1",
                        api_status=400, api_body='{"error": "unknown useCaseId"}')
    buffer.append([], [letter])
    result = dlq_replay(buffer, tool_config(tmp_path), DeadLetterFilter(reason="api_rejected"))
    assert result.requeued == 1
    assert [r.event for r in buffer.records()] == [record.event]
    assert buffer.dead_letter_count == 0


def test_dlq_replay_survives_reopening(buffer: DiskBuffer, tmp_path: Path) -> None:
    """What replay requeued is durable: a reopened buffer holds it and not the dead letter."""
    message = build_message(detections=[])
    buffer.append([], [dead_letter("no_route", message, 100.0, route="")])
    dlq_replay(buffer, tool_config(tmp_path), DeadLetterFilter())
    buffer.close()
    buffer.open()
    assert (buffer.depth, buffer.dead_letter_count) == (1, 0)


def test_dlq_purge_needs_a_filter_and_confirmation(buffer: DiskBuffer) -> None:
    """purge refuses without a filter or --all, and without --yes; then deletes only the selection."""
    buffer.append([], [dead_letter("invalid_json", b"{", 100.0), dead_letter("no_route", b"{}", 200.0, route="")])
    with pytest.raises(UsageError, match="filter"):
        dlq_purge(buffer, DeadLetterFilter(), purge_all=False, confirmed=True)
    with pytest.raises(UsageError, match="--yes"):
        dlq_purge(buffer, DeadLetterFilter(reason="no_route"), purge_all=False, confirmed=False)
    assert buffer.dead_letter_count == 2
    assert dlq_purge(buffer, DeadLetterFilter(reason="no_route"), purge_all=False, confirmed=True) == 1
    assert [letter.reason for _, letter in buffer.dead_letters()] == ["invalid_json"]


def _write_config(tmp_path: Path, topic: str) -> Path:
    """The tool config as a YAML file, its one route on `topic`."""
    path = tmp_path / "bridge.yaml"
    path.write_text(orjson.dumps({
        "api": {"api_key": "k", "base_url": "http://127.0.0.1:9"},
        "buffer": {"path": str(tmp_path / "buffer"), "min_free_bytes": 1}, "health": {"enabled": False},
        "routes": [{"name": "inspection", "topic": topic, "use_case": "uc-a"}]}).decode())
    return path


def _dead_letters_from_a_bad_route(tmp_path: Path) -> None:
    """Ingest under a config whose route misses TOPIC: a good message and a bad one are dead-lettered."""
    config = parse_config({"api": {"api_key": "k", "base_url": "http://127.0.0.1:9"},
                           "buffer": {"path": str(tmp_path / "buffer"), "min_free_bytes": 1},
                           "health": {"enabled": False},
                           "routes": [{"name": "inspection", "topic": "g/{line}/{camera}/detections",
                                       "use_case": "uc-a"}]}, env={})
    ingestor = Ingestor(Router(list(config.routes)), config.mqtt.max_payload_bytes)
    good = build_message(detections=[Detection("scratch", 0.9, 5, 5, 2, 2)])
    letters = [ingestor.process(TOPIC.encode(), payload, 100.0).dead_letter for payload in (good, b"{not json")]
    buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    buffer.open()
    buffer.append([], [letter for letter in letters if letter is not None])
    assert buffer.dead_letter_count == 2 and {letter.reason for _, letter in buffer.dead_letters()} == {"no_route"}
    buffer.close()


def test_reprocess_buffers_what_the_fixed_route_now_takes_and_relabels_what_still_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After the route is fixed, the good message is buffered; the broken one stays, now as invalid_json."""
    _dead_letters_from_a_bad_route(tmp_path)
    config_path = _write_config(tmp_path, "f/{line}/{camera}/detections")
    assert main(["reprocess", "--config", str(config_path)]) == EXIT_FAILURE  # one still fails
    assert "replayed 1 dead letter(s) as 1 event(s); still failing (kept): invalid_json: 1 (1 now under a new " \
           "reason)" in capsys.readouterr().out
    config = tool_config(tmp_path)
    buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    buffer.open()
    try:
        [record] = list(buffer.records())
        assert record.topic == TOPIC and record.event["useCaseId"] == "uc-a"
        [(_, letter)] = list(buffer.dead_letters())
        assert letter.reason == "invalid_json" and letter.route == "inspection" and letter.payload == b"{not json"
    finally:
        buffer.close()
    assert main(["reprocess", "--config", str(config_path)]) == EXIT_FAILURE  # same reason again: left as it was
    assert "still failing (kept): invalid_json: 1\n" in capsys.readouterr().out


def test_reprocess_takes_only_the_given_route_and_reason(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--route and --reason narrow the selection: other dead letters are not touched."""
    _dead_letters_from_a_bad_route(tmp_path)
    config_path = _write_config(tmp_path, "f/{line}/{camera}/detections")
    assert main(["reprocess", "--config", str(config_path), "--route", "elsewhere"]) == EXIT_OK
    assert main(["reprocess", "--config", str(config_path), "--reason", "invalid_json"]) == EXIT_OK
    assert "replayed 0 dead letter(s) as 0 event(s); still failing (kept): none" in capsys.readouterr().out
    config = tool_config(tmp_path)
    buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    buffer.open()
    try:
        assert (buffer.depth, buffer.dead_letter_count) == (0, 2)
    finally:
        buffer.close()


def test_reprocess_relabels_an_unreadable_api_rejected_record_instead_of_keeping_its_old_reason(
        buffer: DiskBuffer, tmp_path: Path) -> None:
    """A rejected record whose bytes no longer read is kept as unreadable_record (not replayed again)."""
    buffer.append([], [DeadLetter(reason="api_rejected", detail="HTTP 400", topic=TOPIC, route="inspection",
                                  payload=b"garbage", received_at_s=1.0, dead_at_s=1.0)])
    result = dlq_replay(buffer, tool_config(tmp_path), DeadLetterFilter())
    assert dict(result.still_failing) == {"unreadable_record": 1} and result.relabelled == 1
    [(_, letter)] = list(buffer.dead_letters())
    assert letter.reason == "unreadable_record" and letter.payload == b"garbage"
    assert dlq_replay(buffer, tool_config(tmp_path), DeadLetterFilter()).skipped == {"unreadable_record": 1}
