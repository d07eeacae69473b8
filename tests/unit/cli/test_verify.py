"""`mqtt-bridge verify` over a real ledger and a query API that answers from a set of stored ids."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mqtt_bridge.cli.verify import verify
from mqtt_bridge.model.values import JsonDict, JsonValue, format_timestamp
from mqtt_bridge.storage.ledger import DeliveryLedger, LedgerEntry, ledger_path
from tests.unit.cli.tool_data import tool_config


class _Workspace:
    """Answers every query with the stored ids of its use case, two per page."""

    def __init__(self, stored: dict[str, set[str]], lookback_days: int = 14) -> None:
        self.stored, self.lookback_days = stored, lookback_days
        self.use_cases: list[str] = []

    def query_events(self, body: JsonDict) -> JsonDict:
        use_case = str(body["useCaseId"])
        if not body.get("cursor"):
            self.use_cases.append(use_case)
        ids = sorted(self.stored.get(use_case, set()))
        offset = int(str(body.get("cursor") or 0))
        events: list[JsonValue] = [{"eventId": i} for i in ids[offset:offset + 2]]
        more = offset + 2 < len(ids)
        return {"events": events, "nextCursor": str(offset + 2) if more else None, "hasMore": more,
                "lookbackDays": self.lookback_days}


def _entry(event_id: str, use_case: str, age: timedelta, delivered_at_s: float = 100.0) -> LedgerEntry:
    stamp = format_timestamp(datetime.now(UTC) - age)
    return LedgerEntry(event_id, use_case, "quality_check", stamp, delivered_at_s, "inspection")


def test_verify_reports_missing_counts_redeliveries_once_and_sets_expired_apart(tmp_path: Path) -> None:
    """Each use case is asked once (paged); an id delivered twice counts once; a missing event is printed with its
    route; one older than the workspace's retention is counted apart, not as missing."""
    config = tool_config(tmp_path)
    with DeliveryLedger(ledger_path(config.buffer.path), 100) as ledger:
        ledger.record([_entry("a1", "uc-a", timedelta(minutes=5)), _entry("a2", "uc-a", timedelta(minutes=4)),
                       _entry("a3", "uc-a", timedelta(minutes=3)), _entry("b1", "uc-b", timedelta(minutes=2))])
        ledger.record([_entry("a1", "uc-a", timedelta(minutes=5), delivered_at_s=200.0),
                       _entry("old", "uc-b", timedelta(days=20))])
    workspace = _Workspace({"uc-a": {"a1", "a2", "x", "y"}, "uc-b": {"b1"}})
    out = io.StringIO()
    result = verify(config, out, api=workspace)
    assert sorted(workspace.use_cases) == ["uc-a", "uc-b"]
    assert sorted(e.event_id for e in result.found) == ["a1", "a2", "b1"]
    assert [e.event_id for e in result.missing] == ["a3"]
    assert [e.event_id for e in result.expired] == ["old"]
    text = out.getvalue()
    assert "missing  a3  use_case=uc-a route=inspection" in text
    assert "5 delivered event(s) in the ledger: 3 found, 1 missing, 1 older than the workspace's retention" in text


def test_verify_since_checks_only_recent_deliveries(tmp_path: Path) -> None:
    """`since_s` leaves out entries delivered before it."""
    config = tool_config(tmp_path)
    with DeliveryLedger(ledger_path(config.buffer.path), 100) as ledger:
        ledger.record([_entry("early", "uc-a", timedelta(minutes=9), delivered_at_s=10.0),
                       _entry("late", "uc-a", timedelta(minutes=1), delivered_at_s=500.0)])
    result = verify(config, io.StringIO(), since_s=100.0, api=_Workspace({"uc-a": {"late"}}))
    assert [e.event_id for e in result.found] == ["late"] and result.checked == 1
