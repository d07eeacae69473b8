"""glibc's mmap threshold for the `run` process: freed large buffers go back to the system."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mqtt_bridge.cli.malloc import tune_malloc

# Allocates ~190 MiB of 48 KiB buffers interleaved with small long-lived ones, frees the large ones, prints the RSS
# (MiB) left: with glibc's default threshold the freed 48 KiB blocks stay in the heap behind the small ones.
_FLOOD = """
import gc, sys
from mqtt_bridge.cli.malloc import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tune" else False
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
big, small = [], []
for i in range(4000):
    big.append(bytes(48 * 1024) + str(i).encode())
    small.append(bytearray(600))
del big
gc.collect()
print(tuned, rss_mib())
"""


def _flood(mode: str, env: dict[str, str]) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _FLOOD, mode], capture_output=True, text=True, check=True,
                         env=env, timeout=60).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's")
def test_tune_malloc_returns_freed_large_buffers_to_the_system() -> None:
    """After a flood of 48 KiB buffers is freed, a tuned process keeps a small RSS; an untuned one keeps the flood."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    tuned, tuned_rss_mib = _flood("tune", env)
    untuned, untuned_rss_mib = _flood("none", env)
    assert tuned and not untuned
    assert untuned_rss_mib > 120, f"the flood did not stay in the untuned heap ({untuned_rss_mib} MiB): no test"
    assert tuned_rss_mib < 60, f"{tuned_rss_mib} MiB kept after the free with the threshold set"


def test_tune_malloc_leaves_a_threshold_the_environment_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """MALLOC_MMAP_THRESHOLD_ in the environment (the image, the systemd unit) wins: nothing is changed."""
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert tune_malloc() is False
