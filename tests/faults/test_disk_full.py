"""The buffer on a small filesystem that fills up (reliability.md §5 T14): a tmpfs mounted by the test (root only;
skipped locally without root, required in CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.checker import assert_exactly_once
from tests.faults.conftest import FaultRig
from tests.faults.ledger import bulky_stream
from tests.faults.processes import fill_filesystem, small_filesystem
from tests.helpers import is_ci, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 2**20
FS_BYTES = 16 * MIB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs for the buffer (mounting needs root: skipped locally without it, a failure in CI)."""
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
        if is_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    with small_filesystem(tmp_path / "small-fs", FS_BYTES) as path:
        yield path


def test_buffer_full_filesystem_holds_acks_at_the_high_water_mark_and_recovers(rig: FaultRig, small_fs: Path) -> None:
    """At the high-water mark, then on a 100 % full disk: no acks, no restart, all delivered once space returns."""
    broker = rig.broker()
    total = rig.size(1200, 6000)
    rig.emulator.set_faults(status_always=503)
    bridge = rig.bridge(broker, buffer={"path": str(small_fs / "buffer"), "max_bytes": 4 * MIB,
                                        "min_free_bytes": 2 * MIB}).start()
    pid = bridge.pid
    with rig.publisher(broker, rate_per_s=400) as publisher:
        publisher.publish_all(bulky_stream("full", total, rig.rng))
        assert publisher.wait_acked(60)  # the broker takes what the bridge holds back
        ledger = publisher.ledger()
    wait_until(lambda: bridge.metric("backpressure") == 1, timeout_s=30, message="backpressure at the mark")
    depth_at_mark = bridge.metric("buffer_depth")
    status, ready = bridge.readyz()
    assert status == 503 and ready.get("backpressured") is True, ready
    assert 0 < depth_at_mark < total
    filler = fill_filesystem(small_fs, leave_free_bytes=0)  # a foreign process takes every byte left
    rig.pause(3)
    assert bridge.metric("buffer_depth") == depth_at_mark, "acked past the mark on a full disk"
    assert bridge.metric("backpressure") == 1
    assert bridge.pid == pid and bridge.returncode is None
    filler.unlink()
    rig.emulator.clear_faults()
    rig.wait_stored(total, timeout_s=120)
    wait_until(lambda: bridge.metric("backpressure") == 0, timeout_s=30, message="acking resumed")
    assert bridge.pid == pid, "the bridge restarted"
    assert bridge.log_text().count("buffer opened") == 1, "crash loop"
    assert bridge.terminate() == 0
    report = rig.check(ledger, bridge)
    rig.record("T14 buffer on a 16 MiB tmpfs: API down to the high-water mark, then the disk filled to 100 %",
               f"{total} msgs of ~10 KB", report,
               f"acks held at {depth_at_mark:.0f} buffered (4 MiB mark); same process throughout; recovered")
    assert_exactly_once(report)


def test_buffer_commit_failing_with_enospc_acks_nothing_and_recovers(rig: FaultRig, small_fs: Path) -> None:
    """Disk full below the mark: commits fail with ENOSPC, nothing is acked, all committed once space returns."""
    broker = rig.broker()
    total = rig.size(800, 4000)
    rig.emulator.set_faults(status_always=503)
    bridge = rig.bridge(broker, buffer={"path": str(small_fs / "buffer"), "max_bytes": 1024 * MIB,
                                        "min_free_bytes": 1}).start()
    pid = bridge.pid
    stream = bulky_stream("enospc", total, rig.rng)
    with rig.publisher(broker, rate_per_s=400) as publisher:
        publisher.publish_all(stream[: total // 4])
        assert publisher.wait_acked(30)
        wait_until(lambda: bridge.metric("buffer_depth") == total // 4, timeout_s=30, message="first part buffered")
        filler = fill_filesystem(small_fs, leave_free_bytes=16 * 1024)  # above min_free_bytes, below a commit
        publisher.publish_all(stream[total // 4:])
        assert publisher.wait_acked(60)
        ledger = publisher.ledger()
        wait_until(lambda: bridge.metric("buffer_commit_errors") > 0, timeout_s=30, message="a commit failed")
        depth_when_full = bridge.metric("buffer_depth")
        rig.pause(2)
        assert bridge.pid == pid and bridge.returncode is None
        assert bridge.metric("buffer_depth") == depth_when_full
        filler.unlink()
    rig.emulator.clear_faults()
    rig.wait_stored(total, timeout_s=120)
    errors = bridge.metric("buffer_commit_errors")
    assert bridge.log_text().count("buffer opened") == 1, "crash loop"
    assert bridge.terminate() == 0
    report = rig.check(ledger, bridge)
    rig.record("T14b disk full below the mark (ENOSPC on commit)", f"{total} msgs of ~10 KB", report,
               f"{errors:.0f} failed commits retried, none acked; same process throughout; recovered")
    assert_exactly_once(report)
