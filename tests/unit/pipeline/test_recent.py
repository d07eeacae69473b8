"""`RecentCommits` recognises a record committed lately and forgets the oldest beyond its capacity."""

from __future__ import annotations

from mqtt_bridge.model.record import Record
from mqtt_bridge.pipeline.recent import RecentCommits


def _record(seq: int) -> Record:
    return Record(event={"eventId": f"id-{seq}", "seq": seq}, route="r", topic="t", received_at_s=1.0)


def test_recent_commits_skips_a_record_committed_before_and_forgets_the_oldest_past_capacity() -> None:
    recent = RecentCommits(3)
    kept, digests = recent.fresh([_record(n) for n in range(5)])
    assert [r.event["seq"] for r in kept] == [0, 1, 2, 3, 4]
    recent.remember(digests)  # only the last 3 stay known
    kept, _ = recent.fresh([_record(n) for n in range(5)])
    assert [r.event["seq"] for r in kept] == [0, 1]

