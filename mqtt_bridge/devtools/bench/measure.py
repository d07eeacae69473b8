"""What the benchmark reads from outside a process: CPU seconds and peak RSS of its whole process tree.

Owns: `/proc` readings (a system under test may run several processes: the tree is summed), a free port, and the
polling wait. Does not start or stop anything.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["free_port", "tree_cpu_s", "tree_peak_rss_mb", "tree_pids", "wait_for"]

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.02) -> None:
    """Poll `predicate` every `poll_s`; `TimeoutError` naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:  # the process is gone, or the kernel has no children files
        return []
    return found


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def tree_cpu_s(pid: int) -> float:
    """User + system CPU of the tree: live processes, plus the children each has already reaped."""
    total = 0
    for member in tree_pids(pid):
        fields = _stat_fields(member)
        if fields:  # utime, stime, cutime, cstime
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / _TICKS


def tree_peak_rss_mb(pid: int) -> float:
    """The sum of each live process's peak RSS (VmHWM): an upper bound of the tree's peak."""
    total_kb = 0
    for member in tree_pids(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in lines if line.startswith("VmHWM:")), 0)
    return total_kb / 1024
