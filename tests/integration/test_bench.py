"""`mqtt-bridge bench`: a small run measures the bridge and both baselines and writes the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mqtt_bridge.cli.main import EXIT_CONFIG, EXIT_OK, main

pytestmark = pytest.mark.integration


def test_bench_small_run_reports_every_system_with_ratios(mosquitto_binary: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny run of every mode writes JSON and PNG, prints ratios, and finds nothing lost or duplicated."""
    code = main(["bench", "--out", str(tmp_path), "--count", "400", "--rate", "100", "--rate-seconds", "1",
                 "--repetitions", "1"])
    assert code == EXIT_OK
    [report_path] = tmp_path.glob("bench-*.json")
    assert list(tmp_path.glob("bench-*.png"))
    report = json.loads(report_path.read_text())
    summary = report["summary"]
    assert set(summary) == {"drain", "max", "rate"}
    for mode, systems in summary.items():
        assert set(systems) == {"bridge", "naive", "receive-only"}, mode
        for system, figures in systems.items():
            assert figures["lost"] == 0 and figures["duplicates"] == 0, (mode, system)
    assert summary["drain"]["bridge"]["events_per_s"] > 0
    assert summary["rate"]["bridge"]["p99_ms"] is not None
    out = capsys.readouterr().out
    assert "x naive" in out and "drain  bridge" in out


def test_bench_rejects_unknown_modes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A typo in --modes is a usage error, not a silently empty run."""
    assert main(["bench", "--out", str(tmp_path), "--modes", "drian"]) == EXIT_CONFIG
    assert "drian" in capsys.readouterr().err
