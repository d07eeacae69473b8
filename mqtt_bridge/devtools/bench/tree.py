"""The CPU seconds, peak RSS and process count of one system's whole process tree, sampled from `/proc`.

Owns: walking a root process and all its descendants (`/proc/<pid>/task/<tid>/children`, or the parents in every
`/proc/<pid>/stat` where the kernel has no children files), reading each one's `stat` and `statm`, and the
accounting of a tree whose members come and go while it is measured: a supervised bridge is a parent with children,
and a child that dies is replaced by a new one (issue 14 items 2 and 5: "RSS of all its processes").

- CPU is utime + stime of every process that was in the tree during the window. Processes alive at the end are read
  then; one that exited was waited for by its parent, whose cutime + cstime grew by all it used (read at the next
  sample); whatever the parent's reaped CPU does not explain (an orphan reaped by init, a parent that ignores
  SIGCHLD) is counted as last sampled, so at most one sampling interval of such a process is missed. A process
  whose parent died stays measured: it is followed by its pid (and start time) after it left the tree.
- RSS is the peak, over the samples, of the sum of every live member's resident set (shared pages count in each
  process, as `ps` shows them).
- `processes` counts the distinct processes seen (pid and start time, so a reused pid is another process).

Between two samples is what it cannot see: a child born and reaped there counts in CPU (its parent's reaped CPU)
but not in RSS or `processes`; one born and orphaned there is missed. A sample costs about 1 ms of CPU for three
processes of 13 threads (measured), in the caller's process, not in the measured tree.

Does not start or stop anything, and reads nothing of the processes but `/proc`. No psutil: the project does not
depend on it, and these three figures need two small files per process.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TreeSampler", "TreeUsage", "tree_pids"]

log = logging.getLogger(__name__)
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_PSS_EVERY = 10  # samples between two PSS readings (every 0.5 s at the default interval)
_Key = tuple[int, int]  # (pid, start time in ticks since boot): a pid the kernel hands out again is another process


@dataclass(frozen=True)
class _Reading:
    """One process at one sample."""

    ppid: int
    own_ticks: int  # utime + stime
    reaped_ticks: int  # cutime + cstime: the children (and their descendants) it has waited for
    rss_bytes: int

    @property
    def total_ticks(self) -> int:
        return self.own_ticks + self.reaped_ticks


@dataclass(frozen=True)
class TreeUsage:
    """What a `TreeSampler` measured: CPU since its first sample, the peak summed RSS, the processes seen."""

    cpu_s: float
    peak_rss_mb: float
    processes: int
    peak_pss_mb: float | None = None  # the peak of the summed PSS (shared pages split between their users)


def _read(pid: int) -> tuple[int, _Reading] | None:
    """(start time, reading) of `pid`, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):  # gone between the two reads, or while reading
        return None
    # fields[0] is stat's field 3 (state): ppid 4, utime 14, stime 15, cutime 16, cstime 17, starttime 22
    reading = _Reading(ppid=int(fields[1]), own_ticks=int(fields[11]) + int(fields[12]),
                       reaped_ticks=int(fields[13]) + int(fields[14]), rss_bytes=resident_pages * _PAGE_BYTES)
    return int(fields[19]), reading


def _pss_bytes(pids: list[int]) -> int | None:
    """The summed PSS of `pids` (/proc/<pid>/smaps_rollup: a page shared by n processes counts 1/n in each, so the
    sum is what the tree costs in memory, as a cgroup counts it); None where the kernel has no smaps_rollup."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except FileNotFoundError:
            if not Path(f"/proc/{pid}").exists():
                continue  # gone since the sample
            return None
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("Pss:")), 0)
    return total


@functools.cache
def _has_children_files() -> bool:
    return Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children").exists()


def _children_of(pid: int) -> list[int]:
    """Children of `pid` from its threads' children files (a child's parent is the thread that forked it)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:  # the process or one of its threads is gone
        return found
    return found


def _children_by_scan() -> dict[int, list[int]]:
    """{ppid: [pid]} of every process on the machine: the kernel has no children files."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := _read(int(entry.name))) is not None:
            children.setdefault(found[1].ppid, []).append(int(entry.name))
    return children


def tree_pids(root_pid: int) -> list[int]:
    """`root_pid` and its live descendants, the root first ([] once it is gone)."""
    return [pid for pid, _ in _read_tree(root_pid)]


def _read_tree(root_pid: int, known: tuple[_Key, ...] = ()) -> dict[_Key, _Reading]:
    """`root_pid` and its live descendants, and those of `known` still alive outside it (orphans), with theirs.

    A pid of `known` counts only while its start time is the same (else the kernel gave the pid to another process).
    """
    by_scan = None if _has_children_files() else _children_by_scan()
    tree: dict[_Key, _Reading] = {}
    visited: set[int] = set()
    todo: list[tuple[int, int | None]] = [*known, (root_pid, None)]  # a stack: the root's tree is walked first
    while todo:
        pid, expected_start = todo.pop()
        if pid in visited:
            continue
        found = _read(pid)
        if found is None or (expected_start is not None and found[0] != expected_start):
            continue
        visited.add(pid)
        tree[(pid, found[0])] = found[1]
        todo += [(child, None) for child in (_children_of(pid) if by_scan is None else by_scan.get(pid, []))]
    return tree


def _anchor(key: _Key, before: dict[_Key, _Reading], now: dict[_Key, _Reading]) -> _Key | None:
    """The nearest ancestor of the vanished `key` (as of `before`) that is still alive `now`, if any."""
    pid_to_key = {k[0]: k for k in before}
    current = key
    for _ in range(len(before)):
        parent = pid_to_key.get(before[current].ppid)
        if parent is None:
            return None
        if parent in now:
            return parent
        current = parent
    return None


class TreeSampler:
    """Samples one process tree every `interval_s` on a thread, from `start()` to `stop()`."""

    def __init__(self, root_pid: int, interval_s: float = 0.05) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[_Key, _Reading] = {}
        self._seen: set[_Key] = set()
        self._base_ticks = 0
        self._unexplained_ticks = 0
        self._peak_rss_bytes = 0
        self._peak_pss_bytes: int | None = None
        self._samples = 0
        self._error: BaseException | None = None

    def start(self) -> TreeSampler:
        """Take the first sample (CPU counts from here) and start sampling; returns itself."""
        self.sample()
        self._base_ticks = sum(r.total_ticks for r in self._last.values())
        self._thread = threading.Thread(target=self._loop, name=f"tree-sampler-{self.root_pid}")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as exc:  # a thread loop's edge: kept, and raised by the next usage()
                log.exception("tree sample failed root_pid=%d", self.root_pid)
                self._error = exc
                return

    def sample(self) -> None:
        """Read the tree now and account the processes that left it since the last sample."""
        with self._lock:
            before = self._last
            now = _read_tree(self.root_pid, tuple(before))
            groups: dict[_Key | None, list[_Key]] = {}
            for key in before.keys() - now.keys():
                groups.setdefault(_anchor(key, before, now), []).append(key)
            for anchor, gone in groups.items():
                explained = now[anchor].reaped_ticks - before[anchor].reaped_ticks if anchor is not None else 0
                self._unexplained_ticks += max(0, sum(before[k].total_ticks for k in gone) - explained)
            self._last = now
            self._seen |= now.keys()
            self._peak_rss_bytes = max(self._peak_rss_bytes, sum(r.rss_bytes for r in now.values()))
            self._samples += 1
            if self._samples % _PSS_EVERY == 1:  # the kernel walks every page table for it: not at every sample
                pss = _pss_bytes([pid for pid, _ in now])
                if pss is not None:
                    self._peak_pss_bytes = max(self._peak_pss_bytes or 0, pss)

    def cpu_s(self) -> float:
        """CPU seconds the tree used since `start()`, read now."""
        return self.usage().cpu_s

    def usage(self) -> TreeUsage:
        """Sample now; CPU since `start()`, the peak summed RSS and the processes seen so far."""
        if self._error is not None:
            raise RuntimeError(f"sampling the tree of {self.root_pid} failed") from self._error
        self.sample()
        with self._lock:
            ticks = sum(r.total_ticks for r in self._last.values()) - self._base_ticks + self._unexplained_ticks
            return TreeUsage(cpu_s=ticks / _TICKS_PER_S, peak_rss_mb=self._peak_rss_bytes / 2**20,
                             processes=len(self._seen),
                             peak_pss_mb=None if self._peak_pss_bytes is None else self._peak_pss_bytes / 2**20)

    def stop(self) -> None:
        """Stop the sampling thread (the figures stay readable)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
