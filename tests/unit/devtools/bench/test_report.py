"""The benchmark's figures: medians, the table's ratios, and the rule that fails a run the rig may have limited."""

from __future__ import annotations

from mqtt_bridge.devtools.bench.report import (
    Capacity,
    RunResult,
    Summary,
    capacity_line,
    capacity_shortfalls,
    summarize,
    table,
)


def _figures(events_per_s: float | None) -> dict[str, float | None]:
    return {"events_per_s": events_per_s, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "cpu_s_per_10k": 0.5,
            "cores": 1.0, "peak_rss_mb": 30.0, "lost": 0.0, "duplicates": 0.0}


SUMMARY: Summary = {
    "drain": {"bridge": _figures(8_000), "naive": _figures(20_000), "receive-only": _figures(55_000)},
    "max": {"bridge": _figures(7_000), "naive": _figures(9_000), "receive-only": _figures(12_000)},
    "rate": {"bridge": _figures(None), "naive": _figures(None)},
}


def test_capacity_shortfalls_empty_when_sink_and_publisher_have_three_times_the_fastest_system() -> None:
    """The sink needs 3x the fastest poster (20k), the publisher 3x the fastest max-mode system (12k)."""
    assert capacity_shortfalls(Capacity(sink_events_per_s=60_000, publisher_messages_per_s=36_000), SUMMARY) == []


def test_capacity_shortfalls_names_a_sink_below_three_times_the_fastest_poster() -> None:
    """A sink at 59,999 events/s cannot vouch for a baseline at 20,000: the run must fail, naming both."""
    [problem] = capacity_shortfalls(Capacity(sink_events_per_s=59_999, publisher_messages_per_s=1e9), SUMMARY)
    assert "sink" in problem and "59,999" in problem and "drain naive" in problem and "20,000" in problem


def test_capacity_shortfalls_names_a_publisher_below_three_times_the_fastest_max_mode_system() -> None:
    """The publisher is on the measured path in max mode only, so the receive-only ceiling there sets the bar."""
    [problem] = capacity_shortfalls(Capacity(sink_events_per_s=1e9, publisher_messages_per_s=35_000), SUMMARY)
    assert "publisher" in problem and "max receive-only" in problem and "12,000" in problem


def test_capacity_shortfalls_ignores_the_receive_only_ceiling_for_the_sink() -> None:
    """The receive-only counters post nothing, so the 55k drain ceiling does not raise the sink's bar."""
    assert capacity_shortfalls(Capacity(sink_events_per_s=60_000, publisher_messages_per_s=1e9), SUMMARY) == []


def test_capacity_line_prints_both_capacities_and_their_headroom() -> None:
    """The line shows each capacity and how many times the fastest system it serves."""
    line = capacity_line(Capacity(sink_events_per_s=200_000, publisher_messages_per_s=24_000), SUMMARY)
    assert line.startswith("capacity: sink 200,000 events/s (10.0x") and "publisher 24,000 msg/s" in line
    assert "(2.0x the fastest max-mode system)" in line


def _run(system: str, events_per_s: float, lost: int = 0) -> RunResult:
    return RunResult(system=system, mode="drain", repetition=0, messages=100, delivered=100 - lost, lost=lost,
                     duplicates=0, events_per_s=events_per_s, p50_ms=None, p95_ms=None, p99_ms=None, cpu_s=1.0,
                     wall_s=1.0, cores=1.0, cpu_s_per_10k=1.0, peak_rss_mb=30.0)


def test_summarize_takes_medians_and_sums_losses_over_repetitions() -> None:
    """Three repetitions give their median rate; a loss in any one of them shows."""
    summary = summarize([_run("naive", 10), _run("naive", 30, lost=2), _run("naive", 20)])
    assert summary["drain"]["naive"]["events_per_s"] == 20 and summary["drain"]["naive"]["lost"] == 2


def test_table_ratios_are_against_the_user_style_naive_baseline() -> None:
    """The bridge at 8,000 against the naive script at 20,000 is 0.40x, and 0.15x the 3.1.1 ceiling."""
    row = next(line for line in table(SUMMARY, "note").splitlines() if line.startswith("drain  bridge"))
    assert " 0.40 " in row and " 0.15 " in row


def test_summarize_reports_the_most_processes_any_repetition_had() -> None:
    """A supervisor with two children (3), and once a restarted child (4): the summary says 4, the table shows it."""
    runs = [_run("bridge", 10), _run("bridge", 20), _run("bridge", 30)]
    for run, processes in zip(runs, (3, 4, 3), strict=True):
        run.processes = processes
    summary = summarize(runs)
    assert summary["drain"]["bridge"]["processes"] == 4
    header, row = table(summary, "note").splitlines()[:2]
    assert header.split().index("procs") > header.split().index("RSS") and row.split()[-3] == "4"
