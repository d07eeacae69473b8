"""Faults of the bridge's own processes (issue 14 item 2): `mqtt-bridge run` is a supervisor with a receiver process
(MQTT → raw log → acks) and a worker process (processor, flusher, health server). Each child is SIGKILLed on its
own mid-stream (the receiver mid-commit, the worker mid-transaction and mid-batch), the supervisor is SIGKILLed
(its children must go with it), and a child that keeps dying makes the supervisor give up with exit 1."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.checker import assert_exactly_once
from tests.faults.conftest import FaultRig
from tests.faults.ledger import Publisher, valid_stream
from tests.faults.processes import RECEIVE_MAXIMUM, FaultBridge
from tests.helpers import is_running, process_tree, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 100
KILLS = 4  # fewer than the supervisor's 5 failed starts in a row (a child killed within 30 s of its start)


def _kill_child(bridge: FaultBridge, role: str) -> int:
    """SIGKILL the bridge's `role` process; wait until the supervisor has started a new one; returns its pid."""
    old = bridge.child_pid(role)
    os.kill(old, signal.SIGKILL)
    return bridge.child_pid(role, timeout_s=30, not_in=[old])


def _stream_while_killing(rig: FaultRig, role: str, run: str, rate_per_s: int, *,
                          slow_api: bool = False) -> tuple[FaultBridge, Publisher, int]:
    """A bridge and a stream, `role`'s process SIGKILLed `KILLS` times mid-stream; returns once every message was
    acked and stored, after checking that the other child process ran throughout."""
    other = "worker" if role == "receiver" else "receiver"
    broker = rig.broker()
    total = rig.size(3000, 30_000)
    bridge = rig.bridge(broker).start()
    other_pid = bridge.child_pid(other)
    publisher = rig.publisher(broker, rate_per_s=rate_per_s)
    publisher.start(valid_stream(run, total, image_every=40))
    if slow_api:
        rig.emulator.set_faults(delay_s=0.3)  # batches stay in flight long enough to be cut
    for _ in range(KILLS):
        rig.pause(rig.rng.uniform(0.5, 1.5))
        _kill_child(bridge, role)
    rig.emulator.clear_faults()
    publisher.join()
    assert publisher.wait_acked(90)
    rig.wait_stored(total, timeout_s=120)
    assert bridge.child_pid(other) == other_pid, f"the {other} must keep running while the {role} is restarted"
    return bridge, publisher, total


def test_receiver_process_sigkilled_mid_stream_is_restarted_and_loses_nothing(rig: FaultRig) -> None:
    """SIGKILL the receiver process mid-stream (mid-commit: groups are being fsynced all the time at this rate);
    the supervisor starts it again, the broker redelivers what was not acked, every message arrives once."""
    bridge, publisher, total = _stream_while_killing(rig, "receiver", "rx", rig.size(300, 500))
    assert bridge.metric("process_restarts{receiver}") == KILLS
    assert bridge.terminate() == 0, bridge.log_text()[-3000:]
    report = rig.check(publisher.ledger(), bridge)
    rig.record(f"T19 receiver process SIGKILLed {KILLS}x mid-stream, restarted by the supervisor", f"{total} msgs",
               report, "worker kept running; process_restarts{process=receiver} counted every restart")
    assert_exactly_once(report, max_rewrites=KILLS * RECEIVE_MAXIMUM)
    assert report.acked == total


def test_worker_process_sigkilled_mid_batch_is_restarted_and_loses_nothing(rig: FaultRig) -> None:
    """SIGKILL the worker process (processor mid-transaction, flusher mid-batch against a slow API) several times;
    the receiver goes on acking into the raw log meanwhile, and every message arrives once."""
    bridge, publisher, total = _stream_while_killing(rig, "worker", "wk", rig.size(400, 800), slow_api=True)
    assert bridge.terminate() == 0, bridge.log_text()[-3000:]
    report = rig.check(publisher.ledger(), bridge)
    rig.record(f"T20 worker process SIGKILLed {KILLS}x mid-batch (slow API), restarted by the supervisor",
               f"{total} msgs", report, "receiver kept acking into the raw log meanwhile")
    assert_exactly_once(report, max_rewrites=KILLS * (RECEIVE_MAXIMUM + 2 * BATCH))
    assert report.acked == total


def test_supervisor_sigkilled_takes_its_children_along_and_a_restart_delivers_everything(rig: FaultRig) -> None:
    """SIGKILL the supervisor: both children end at once (nothing runs unsupervised, the buffer's lock is free),
    a new `run` starts at once, and every message arrives once."""
    broker = rig.broker()
    total = rig.size(2000, 20_000)
    bridge = rig.bridge(broker).start()
    publisher = rig.publisher(broker, rate_per_s=rig.size(300, 500))
    publisher.start(valid_stream("sup", total, image_every=40))
    rig.pause(rig.rng.uniform(1.0, 2.0))
    children = process_tree(bridge.pid)[1:]
    assert len(children) == 2, children
    assert bridge.kill() == -signal.SIGKILL
    wait_until(lambda: not any(is_running(pid) for pid in children),
               timeout_s=5, message="the children ended with their supervisor")
    started = time.monotonic()
    bridge.start()  # would exit 4 if a child still held the buffer
    restart_s = time.monotonic() - started
    publisher.join()
    assert publisher.wait_acked(90)
    rig.wait_stored(total, timeout_s=120)
    assert bridge.terminate() == 0, bridge.log_text()[-3000:]
    log = bridge.run_log()
    assert log.index("receiver process stopped") < log.index("shutdown complete"), "receiver stops first"
    report = rig.check(publisher.ledger(), bridge)
    rig.record("T21 supervisor SIGKILLed: children end with it, restart at once", f"{total} msgs", report,
               f"restart to subscribed {restart_s:.1f} s; SIGTERM then stopped the receiver before the worker")
    assert_exactly_once(report, max_rewrites=RECEIVE_MAXIMUM + BATCH)


def test_a_child_that_keeps_dying_makes_the_supervisor_exit_1(rig: FaultRig) -> None:
    """Kill the receiver process as soon as each new one starts: after 5 failed starts in a row the supervisor
    stops the worker and exits 1 (so that systemd or Kubernetes see it), saying which process keeps failing."""
    broker = rig.broker()
    bridge = rig.bridge(broker).start()
    killed: list[int] = []
    for _ in range(6):
        pid = bridge.child_pid("receiver", timeout_s=40, not_in=killed)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    assert bridge.wait_exit(timeout_s=60) == 1
    assert "receiver process keeps failing" in bridge.run_log()
