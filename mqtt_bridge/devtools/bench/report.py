"""The benchmark's results: one run's figures, medians, ratios, the printed table and the capacity rule.

Owns: `RunResult`, the per-mode medians (`summarize`), the table printed at the end (ratios against the user-style
`naive` baseline and the 3.1.1 receive-only ceiling) and `capacity_shortfalls`, the rule that makes a run fail when
the sink or the publisher could have limited what it measured (design §6: a benchmark is honest only when the same
run shows they are not the bottleneck). Pure functions: no processes, no I/O.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = ["BRIDGES", "CAPACITY_FACTOR", "MODES", "SINK_USERS", "SYSTEMS", "Capacity", "RunResult", "Summary",
           "capacity_line", "capacity_shortfalls", "summarize", "table"]

# bridge: `mqtt-bridge run` (a supervisor, a receiver and a worker process); bridge-1proc: `run --single-process`
BRIDGES = ("bridge", "bridge-1proc")
SYSTEMS = (*BRIDGES, "naive", "naive-mqtt5", "receive-only", "receive-only-mqtt5")
SINK_USERS = (*BRIDGES, "naive", "naive-mqtt5")  # the receive-only ceilings post nothing
MODES = ("drain", "max", "rate")
CAPACITY_FACTOR = 3.0
Summary = dict[str, dict[str, dict[str, float | None]]]


@dataclass
class RunResult:
    """One system in one mode, one repetition."""

    system: str
    mode: str
    repetition: int
    messages: int
    delivered: int
    lost: int
    duplicates: int
    events_per_s: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    cpu_s: float | None
    wall_s: float
    cores: float | None
    cpu_s_per_10k: float | None
    peak_rss_mb: float | None  # the peak of the summed RSS of all its processes
    processes: int | None = None  # how many processes it had: a supervisor, its children, restarted ones
    peak_pss_mb: float | None = None  # the peak of their summed PSS: a page they share counts once in all


@dataclass(frozen=True)
class Capacity:
    """What the rig itself can take, measured in the same run: the sink alone, and publisher → Mosquitto."""

    sink_events_per_s: float
    publisher_messages_per_s: float


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results: list[RunResult]) -> Summary:
    """Median of each figure per mode and system; lost and duplicates are summed over the repetitions, and
    `processes` is the most any repetition had (a child restarted once shows)."""
    out: Summary = {}
    fields = ("events_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_s_per_10k", "cores", "peak_rss_mb", "peak_pss_mb")
    for mode in [m for m in MODES if any(r.mode == m for r in results)]:
        for system in [s for s in SYSTEMS if any(r.system == s for r in results)]:
            runs = [r for r in results if r.mode == mode and r.system == system]
            if not runs:
                continue
            medians: dict[str, float | None] = {f: _median([getattr(r, f) for r in runs]) for f in fields}
            medians["processes"] = max((float(r.processes) for r in runs if r.processes is not None), default=None)
            medians["lost"] = float(sum(r.lost for r in runs))
            medians["duplicates"] = float(sum(r.duplicates for r in runs))
            out.setdefault(mode, {})[system] = medians
    return out


def _fastest(summary: Summary, systems: tuple[str, ...], modes: tuple[str, ...]) -> tuple[float, str]:
    best, label = 0.0, "-"
    for mode in modes:
        for system, figures in summary.get(mode, {}).items():
            value = figures.get("events_per_s") or 0.0
            if system in systems and value > best:
                best, label = value, f"{mode} {system}"
    return best, label


def capacity_shortfalls(capacity: Capacity, summary: Summary, factor: float = CAPACITY_FACTOR) -> list[str]:
    """Why the run's figures may be the rig's, not the systems': empty when sink and publisher had `factor` x room.

    The sink must take `factor` x the fastest system that posts to it, in any mode. The publisher must put
    `factor` x the fastest system of the `max` mode through Mosquitto: it is on the measured path only there (drain
    queues the backlog before the system connects; rate mode publishes at a fixed, low rate).
    """
    problems = []
    sink_need, sink_who = _fastest(summary, SINK_USERS, MODES)
    if capacity.sink_events_per_s < factor * sink_need:
        problems.append(f"the sink takes {capacity.sink_events_per_s:,.0f} events/s, less than {factor:g}x the "
                        f"fastest system posting to it ({sink_who}: {sink_need:,.0f} events/s)")
    pub_need, pub_who = _fastest(summary, SYSTEMS, ("max",))
    if capacity.publisher_messages_per_s < factor * pub_need:
        problems.append(f"the publisher puts {capacity.publisher_messages_per_s:,.0f} msg/s through Mosquitto, less "
                        f"than {factor:g}x the fastest system it feeds ({pub_who}: {pub_need:,.0f} events/s)")
    return problems


def capacity_line(capacity: Capacity, summary: Summary, factor: float = CAPACITY_FACTOR) -> str:
    """One line: both capacities and their headroom over the fastest system each one feeds."""
    sink_need, _ = _fastest(summary, SINK_USERS, MODES)
    pub_need, _ = _fastest(summary, SYSTEMS, ("max",))

    def room(have: float, need: float) -> str:
        return f"{have / need:.1f}x" if need else "-"

    return (f"capacity: sink {capacity.sink_events_per_s:,.0f} events/s ({room(capacity.sink_events_per_s, sink_need)}"
            f" the fastest poster), publisher {capacity.publisher_messages_per_s:,.0f} msg/s through Mosquitto "
            f"({room(capacity.publisher_messages_per_s, pub_need)} the fastest max-mode system); needed: "
            f"{factor:g}x each")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(summary: Summary, note: str) -> str:
    """The printed table: one row per mode and system, ratios against `naive` (3.1.1) and the 3.1.1 ceiling."""
    lines = [f"{'mode':<6} {'system':<18} {'events/s':>9} {'x naive':>7} {'x ceil':>6} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'cpu s/10k':>9} {'cpu x naive':>11} {'cores':>5} {'RSS MB':>6} {'PSS MB':>6} {'procs':>5} {'lost':>5} "
             f"{'dup':>4}"]
    for mode in [m for m in MODES if m in summary]:
        rows = summary[mode]
        naive = rows.get("naive", {})
        ceiling = rows.get("receive-only", {}).get("events_per_s")
        for system in [s for s in SYSTEMS if s in rows]:
            r = rows[system]
            lines.append(
                f"{mode:<6} {system:<18} {_fmt(r['events_per_s']):>9} "
                f"{_fmt(_ratio(r['events_per_s'], naive.get('events_per_s')), 2):>7} "
                f"{_fmt(_ratio(r['events_per_s'], ceiling), 2):>6} {_fmt(r['p50_ms'], 1):>8} "
                f"{_fmt(r['p99_ms'], 1):>8} {_fmt(r['cpu_s_per_10k'], 2):>9} "
                f"{_fmt(_ratio(r['cpu_s_per_10k'], naive.get('cpu_s_per_10k')), 2):>11} {_fmt(r['cores'], 2):>5} "
                f"{_fmt(r['peak_rss_mb'], 1):>6} {_fmt(r.get('peak_pss_mb'), 1):>6} {_fmt(r.get('processes')):>5} "
                f"{_fmt(r['lost']):>5} {_fmt(r['duplicates']):>4}")
    lines.append(note)
    return "\n".join(lines)
