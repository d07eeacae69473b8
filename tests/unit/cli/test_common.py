"""Shared CLI helpers: the --since/--until time parser and the progress bar."""

from __future__ import annotations

import io

import pytest

from mqtt_bridge.cli.common import Progress, UsageError, parse_when


def test_parse_when_reads_iso_unix_and_ages() -> None:
    """--since/--until take ISO 8601, a Unix time, or an age."""
    assert parse_when("2024-01-01T00:00:00Z") == 1_704_067_200.0
    assert parse_when("1704067200") == 1_704_067_200.0
    assert parse_when("2h", now_s=10_000.0) == 2_800.0
    with pytest.raises(UsageError):
        parse_when("yesterday")


def test_progress_bar_draws_only_on_a_terminal() -> None:
    """A pipe or a log file gets no progress bar."""
    stream = io.StringIO()
    progress = Progress(10, "replaying", stream)
    progress.advance(10)
    progress.close()
    assert stream.getvalue() == ""
