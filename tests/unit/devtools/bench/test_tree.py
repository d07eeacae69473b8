"""The tree sampler measures real process trees: CPU of the parent and every child (also those that exited or were
orphaned), the peak of their summed RSS, and how many processes there were."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_bridge.devtools.bench import tree
from mqtt_bridge.devtools.bench.tree import TreeSampler
from tests.helpers import wait_until

WORKLOAD = str(Path(__file__).with_name("tree_workload.py"))
CHILD_CPU_S = 0.4
CHILD_MB = 48
# clock ticks round each process's CPU, and what a process uses after it reports (exit) is not in its report;
# a child left out would be off by CHILD_CPU_S
CPU_TOLERANCE_S = 0.12


@pytest.fixture
def started() -> Iterator[list[tuple[subprocess.Popen[str], TreeSampler]]]:
    """Parents started by a test, each with its sampler; stopped and reaped after it."""
    started: list[tuple[subprocess.Popen[str], TreeSampler]] = []
    yield started
    for process, sampler in started:
        sampler.stop()
        if process.stdin is not None:
            process.stdin.close()
        process.wait(30)


def _start(started: list[tuple[subprocess.Popen[str], TreeSampler]], mode: str, mb: int = CHILD_MB,
           interval_s: float = 0.02) -> tuple[subprocess.Popen[str], TreeSampler]:
    process = subprocess.Popen([sys.executable, WORKLOAD, "parent", mode, str(CHILD_CPU_S), str(mb)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid, interval_s=interval_s)
    sampler.start()
    started.append((process, sampler))
    return process, sampler


def _reported_cpu_s(process: subprocess.Popen[str], lines: int = 1) -> tuple[float, list[int]]:
    """The CPU the parent and its children say they used (each its own `time.process_time()`), and burners' pids."""
    assert process.stdout is not None
    total, pids = 0.0, []
    for _ in range(lines):
        report = json.loads(process.stdout.readline())
        total += report["cpu_s"] + sum(report.get("children", []))
        pids += [report["pid"]] if "pid" in report else []
    return total, pids


def _gone_or_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("discovery", ["children-files", "proc-scan"])
def test_tree_sampler_counts_the_cpu_and_rss_of_a_parent_and_two_live_children(
        started: list[tuple[subprocess.Popen[str], TreeSampler]], discovery: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two busy children of 0.4 s each: the tree's CPU is the three processes' sum, their RSS is summed, 3 seen."""
    if discovery == "proc-scan":  # a kernel without /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)
        monkeypatch.setattr(tree, "_has_children_files", lambda: False)
    process, sampler = _start(started, "alive")
    expected_cpu_s, _ = _reported_cpu_s(process)
    usage = sampler.usage()
    assert usage.processes == 3
    assert expected_cpu_s > 2 * CHILD_CPU_S
    assert abs(usage.cpu_s - expected_cpu_s) <= CPU_TOLERANCE_S, (usage, expected_cpu_s)
    assert usage.peak_rss_mb >= 2 * CHILD_MB, usage


def test_tree_sampler_counts_children_that_exited_and_the_peak_of_the_sum_not_the_sum_of_peaks(
        started: list[tuple[subprocess.Popen[str], TreeSampler]]) -> None:
    """A child run to its end, then its replacement (a restart): both CPUs count (via the parent's reaped CPU),
    both processes are seen, and the RSS is what was resident at once (one child's 48 MiB, not two)."""
    process, sampler = _start(started, "restart")
    expected_cpu_s, _ = _reported_cpu_s(process)
    usage = sampler.usage()
    assert usage.processes == 3
    assert abs(usage.cpu_s - expected_cpu_s) <= CPU_TOLERANCE_S, (usage, expected_cpu_s)
    assert CHILD_MB <= usage.peak_rss_mb < 2 * CHILD_MB, usage


def test_tree_sampler_counts_children_it_never_sampled_through_the_parents_reaped_cpu(
        started: list[tuple[subprocess.Popen[str], TreeSampler]]) -> None:
    """Sampling only at start and at the reading, both children of a restart were born and reaped in between: the
    parent's cutime + cstime holds their CPU."""
    process, sampler = _start(started, "restart", mb=1, interval_s=3600)
    expected_cpu_s, _ = _reported_cpu_s(process)
    usage = sampler.usage()
    assert usage.processes == 1  # the children were never seen, yet their CPU is there
    assert abs(usage.cpu_s - expected_cpu_s) <= CPU_TOLERANCE_S, (usage, expected_cpu_s)


def test_tree_sampler_keeps_the_cpu_of_a_child_its_parent_did_not_reap(
        started: list[tuple[subprocess.Popen[str], TreeSampler]]) -> None:
    """A parent that ignores SIGCHLD gets no reaped CPU for its child: the child's CPU as last sampled stays counted
    after it vanished."""
    process, sampler = _start(started, "ignore", mb=1)
    expected_cpu_s, _ = _reported_cpu_s(process)
    usage = sampler.usage()
    assert usage.processes == 2
    assert abs(usage.cpu_s - expected_cpu_s) <= CPU_TOLERANCE_S, (usage, expected_cpu_s)


def test_tree_sampler_follows_an_orphan_and_keeps_its_cpu_once_it_exits(
        started: list[tuple[subprocess.Popen[str], TreeSampler]]) -> None:
    """A child whose parent exits without waiting is re-parented out of the tree (to init): it is still measured,
    and its CPU stays counted once it has exited."""
    process, sampler = _start(started, "orphan")
    assert process.stdin is not None
    wait_until(lambda: sampler.usage().processes == 2, 10, message="the burner in the tree")
    process.stdin.write("exit now\n")
    process.stdin.flush()
    expected_cpu_s, [orphan] = _reported_cpu_s(process, lines=2)  # the parent's line, then the burner's
    usage = sampler.usage()
    assert usage.processes == 2
    assert abs(usage.cpu_s - expected_cpu_s) <= CPU_TOLERANCE_S, (usage, expected_cpu_s)
    assert usage.peak_rss_mb >= CHILD_MB
    process.stdin.close()  # the burner's stdin too: it exits
    wait_until(lambda: _gone_or_zombie(orphan), 10, message="the orphan exits")
    assert sampler.cpu_s() >= usage.cpu_s - 0.02


def test_tree_sampler_starts_counting_cpu_at_start(started: list[tuple[subprocess.Popen[str], TreeSampler]]) -> None:
    """What the tree used before `start()` is not in its figure: a sampler started late reads about nothing."""
    process, _ = _start(started, "alive", mb=1)
    _reported_cpu_s(process)  # the children are busy no more
    late = TreeSampler(process.pid, interval_s=0.02)
    late.start()
    try:
        assert late.usage().cpu_s <= 0.05
        assert late.usage().processes == 3
    finally:
        late.stop()


_FORKED_SHARING = """
import os, sys, time
shared = bytearray(os.urandom(48 * 2**20))  # touched: resident in the parent, then shared with the child
pid = os.fork()
if pid == 0:
    time.sleep(3); os._exit(0)
print("ready", flush=True)
sys.stdin.read()
os.waitpid(pid, 0)
"""


def test_tree_sampler_counts_pages_a_forked_child_shares_once_in_pss_and_twice_in_rss() -> None:
    """A parent forks a child that shares its 48 MiB (copy-on-write, untouched since): the summed RSS counts them
    in both, the summed PSS once, which is what the two cost together."""
    if not Path("/proc/self/smaps_rollup").exists():
        pytest.skip("this kernel has no /proc/<pid>/smaps_rollup")
    process = subprocess.Popen([sys.executable, "-c", _FORKED_SHARING], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdin is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        sampler = TreeSampler(process.pid, interval_s=0.02).start()
        wait_until(lambda: sampler.usage().processes == 2, timeout_s=5, message="the child sampled")
        usage = sampler.usage()
        sampler.stop()
    finally:
        process.stdin.close()
        process.wait(30)
    assert usage.peak_pss_mb is not None
    assert usage.peak_rss_mb >= 2 * CHILD_MB, usage
    assert CHILD_MB <= usage.peak_pss_mb < 1.5 * CHILD_MB, usage
