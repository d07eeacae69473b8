"""Outcome hooks: the emitter calls every hook in order, and a hook that raises is logged, never spread."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.observe.hooks import Outcome, OutcomeHook, OutcomeHooks


class _Recorder(OutcomeHook):
    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name = name
        self.calls = calls

    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        self.calls.append((self.name, f"committed {len(records)}/{len(dead_letters)}"))

    def on_image_uploaded(self, record: Record) -> None:
        self.calls.append((self.name, f"image_uploaded {record.event_id}"))

    def on_delivered(self, record: Record) -> None:
        self.calls.append((self.name, f"delivered {record.event_id}"))

    def on_dead_lettered(self, record: Record, reason: str) -> None:
        self.calls.append((self.name, f"dead_lettered {record.event_id} {reason}"))


class _Broken(OutcomeHook):
    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        raise RuntimeError("boom")

    def on_delivered(self, record: Record) -> None:
        raise ValueError("boom")


def _record(event_id: str) -> Record:
    return Record(event={"eventId": event_id}, route="r", topic="t", received_at_s=1.0)


def test_hooks_emitter_calls_each_hook_in_order_for_each_outcome() -> None:
    """Every outcome reaches every hook, in the order the hooks were given."""
    calls: list[tuple[str, str]] = []
    hooks = OutcomeHooks([_Recorder("a", calls), _Recorder("b", calls)])
    hooks.on_committed([_record("e1")], [])
    hooks.on_image_uploaded(_record("e1"))
    hooks.on_delivered(_record("e1"))
    hooks.on_dead_lettered(_record("e2"), "api_rejected: x")
    assert calls == [("a", "committed 1/0"), ("b", "committed 1/0"), ("a", "image_uploaded e1"),
                     ("b", "image_uploaded e1"), ("a", "delivered e1"), ("b", "delivered e1"),
                     ("a", "dead_lettered e2 api_rejected: x"), ("b", "dead_lettered e2 api_rejected: x")]


def test_hooks_failing_hook_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises never breaks the caller nor the hooks after it; the failure is logged with its names."""
    calls: list[tuple[str, str]] = []
    hooks = OutcomeHooks([_Broken(), _Recorder("after", calls)])
    hooks.on_committed([], [])
    hooks.on_delivered(_record("e1"))
    assert calls == [("after", "committed 0/0"), ("after", "delivered e1")]
    failures = [r.getMessage() for r in caplog.records if "outcome hook failed" in r.getMessage()]
    assert failures == ["outcome hook failed hook=_Broken outcome=on_committed",
                        "outcome hook failed hook=_Broken outcome=on_delivered"]


def test_hooks_base_hook_ignores_every_outcome() -> None:
    """The base class is a no-op for each outcome, so a hook overrides only what it needs."""
    hook = OutcomeHook()
    hook.on_committed([_record("e")], [])
    hook.on_image_uploaded(_record("e"))
    hook.on_delivered(_record("e"))
    hook.on_dead_lettered(_record("e"), "x")


def test_hooks_outcomes_are_the_trace_stages_in_order() -> None:
    """The outcome enum lists the path of a message in order (the trace's stages, the receipts' statuses)."""
    assert [o.value for o in Outcome] == ["received", "buffered", "image_uploaded", "delivered", "dead_lettered"]


class _Runs(_Recorder):
    def on_delivered_many(self, records: Sequence[Record]) -> None:
        self.calls.append((self.name, f"delivered {','.join(r.event_id for r in records)}"))


def test_hooks_delivered_run_reaches_a_run_hook_once_and_others_record_by_record() -> None:
    """A run of delivered records is one call to a hook that takes runs, and one isolated call per record to a
    hook that does not: a failure on one record still lets the later records reach it."""
    calls: list[tuple[str, str]] = []

    class _BrokenOnSecond(_Recorder):
        def on_delivered(self, record: Record) -> None:
            if record.event_id == "e2":
                raise ValueError("boom")
            super().on_delivered(record)

    hooks = OutcomeHooks([_Runs("runs", calls), _BrokenOnSecond("each", calls)])
    hooks.on_delivered_many([_record("e1"), _record("e2"), _record("e3")])
    assert calls == [("runs", "delivered e1,e2,e3"), ("each", "delivered e1"), ("each", "delivered e3")]
