"""The message trace behind the status page's search: stages, bounds and recent dead letters."""

from __future__ import annotations

from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.observe.trace import MessageTrace


def _record(event_id: str, topic: str = "f/L1/cam1/detections") -> Record:
    return Record(event={"eventId": event_id}, route="inspection", topic=topic, received_at_s=100.0)


def test_trace_follows_an_event_through_every_stage() -> None:
    """received → buffered → image uploaded → delivered, found by eventId."""
    trace = MessageTrace(100)
    record = _record("e-1")
    trace.on_committed([record], [])
    trace.on_image_uploaded(record)
    trace.on_delivered(record)
    [found] = trace.search("e-1")
    assert found["status"] == "delivered"
    stages = found["stages"]
    assert isinstance(stages, dict)
    assert list(stages) == ["received", "buffered", "image_uploaded", "delivered"]
    assert stages["received"] == 100.0


def test_trace_search_by_topic_prefix_returns_newest_first() -> None:
    """A topic or topic prefix finds every recent message on it, newest first."""
    trace = MessageTrace(100)
    trace.on_committed([_record("a", "f/L1/cam1/d"), _record("b", "f/L2/cam1/d"), _record("c", "f/L1/cam2/d")], [])
    assert [r["eventId"] for r in trace.search("f/L1/")] == ["c", "a"]
    assert [r["eventId"] for r in trace.search("f/L2/cam1/d")] == ["b"]
    assert trace.search("   ") == []


def test_trace_is_bounded_and_forgets_the_oldest() -> None:
    """Past its capacity the oldest entries fall out."""
    trace = MessageTrace(3)
    trace.on_committed([_record(f"e-{i}") for i in range(5)], [])
    assert len(trace) == 3
    assert trace.search("e-0") == []
    assert trace.search("e-4")


def test_trace_keeps_ingest_and_api_dead_letters_with_reasons() -> None:
    """Dead letters from ingest and from the API are searchable and listed as recent, newest first."""
    trace = MessageTrace(100)
    letter = DeadLetter(reason="invalid_json", detail="unexpected character", topic="f/L1/cam1/detections",
                        route="inspection", payload=b"{", received_at_s=50.0, dead_at_s=50.0)
    trace.on_committed([], [letter])
    record = _record("e-9")
    trace.on_committed([record], [])
    trace.on_dead_lettered(record, "api_rejected: unknown useCaseId")
    recent = trace.recent_dead_letters()
    assert [d["reason"] for d in recent] == ["api_rejected", "invalid_json"]
    [found] = trace.search("e-9")
    assert found["status"] == "dead_lettered"
    assert found["reason"] == "api_rejected: unknown useCaseId"
    assert trace.search("f/L1/cam1/detections")[-1]["reason"] == "unexpected character"


def test_trace_with_capacity_zero_keeps_only_recent_dead_letters() -> None:
    """trace_size 0 turns the search off but the page still lists recent dead letters."""
    trace = MessageTrace(0)
    record = _record("e-1")
    trace.on_committed([record], [])
    trace.on_dead_lettered(record, "api_rejected: x")
    assert len(trace) == 0
    assert len(trace.recent_dead_letters()) == 1


def test_trace_delivered_run_marks_each_record_delivered() -> None:
    """`on_delivered_many` stamps every record of the run as delivered, as one `on_delivered` each would."""
    trace = MessageTrace(100)
    records = [_record(f"e-{n}") for n in range(3)]
    trace.on_committed(records[:2], [])
    trace.on_delivered_many(records)
    for record in records:
        [found] = trace.search(record.event_id)
        assert found["status"] == "delivered"
        assert isinstance(found["stages"], dict) and found["stages"]["received"] == 100.0
