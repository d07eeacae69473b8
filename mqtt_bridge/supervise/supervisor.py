"""The supervisor: `mqtt-bridge run` as a parent of two processes, so that the bridge uses two cores (issue 14 item 2).

Owns: the process tree and its rules. The parent takes the buffer's instance lock and checks the database (a corrupt
or locked buffer exits 4 before any child starts), then forks a worker (processor, image stage, flusher, health
server: `supervise.worker_process`) and a receiver (MQTT → raw log → acks: `supervise.receiver_process`). It holds
no data and starts no threads: it forwards the receiver's wake-ups and reports to the worker and watches both.
- A child that dies is started again after a backoff (0.5 s, doubling to 30 s); one that exits within
  `_STABLE_S` of its start counts as a failed start, and after `_MAX_FAILED_STARTS` in a row the parent stops the
  other and exits 1. A child's exit 2, 3 or 4 (config, port taken, buffer unusable) is not retried: the parent
  stops and exits with it.
- SIGTERM or SIGINT (to the parent; the children ignore both, so a terminal's Ctrl-C or a container runtime that
  signals every process still stops them in order): STOP to the receiver (it commits and acks what is queued, then
  disconnects), then STOP to the worker (its processor drains the raw log, its flusher finishes the batch in flight),
  all within `flush.shutdown_grace_s` + 5 s; a child still running 2 s after that is killed (its data is on disk).
- kill -9 of a child: restarted as above. kill -9 of the parent: each child has asked the kernel to kill it with its
  parent (PR_SET_PDEATHSIG on Linux; elsewhere it stops when its pipe to the parent closes), so the lock is free for
  the next start and nothing runs unsupervised. Nothing is lost either way: what was acked is in the raw log.
The children are forked from this single-threaded process, so they share the parsed config and the instance lock's
open file (the lock lasts until the last of the three ends).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.supervise.link import RESTARTS, STOP, Message
from mqtt_bridge.supervise.receiver_process import run_receiver
from mqtt_bridge.supervise.worker_process import run_worker

__all__ = ["PROCESS_NAMES", "Supervisor"]

log = logging.getLogger(__name__)

_STABLE_S = 30.0  # a child that ran this long before it died was not a failed start
_MAX_FAILED_STARTS = 5
_BACKOFF_S = (0.5, 30.0)
_FINAL_EXIT_CODES = {2, 3, 4}  # a child's exit code that another start would not change
_KILL_AFTER_S = 2.0
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# the children's names in ps, top and /proc/<pid>/comm (at most 15 characters)
PROCESS_NAMES = {run_receiver.__name__: "bridge-receiver", run_worker.__name__: "bridge-worker"}


@dataclass(slots=True)
class _Child:
    role: str
    body: Callable[[BridgeConfig, Connection], int]
    process: BaseProcess | None = None
    conn: Connection | None = None
    started_at: float = 0.0
    failed_starts: int = 0
    restarts: int = 0
    restart_at: float | None = None  # when to start it again after it died
    exit_code: int | None = None

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.exitcode is None


class Supervisor:
    """`run()` returns the exit code of `mqtt-bridge run`: 0 after SIGTERM, 1 when a child keeps failing, or the
    2/3/4 a child exited with. Raises StorageError when the buffer is unusable (before any child starts)."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self._context = multiprocessing.get_context("fork")
        self._worker = _Child("worker", run_worker)
        self._receiver = _Child("receiver", run_receiver)
        self._stopping = False
        self._exit_code = 0

    def run(self) -> int:
        """Check the buffer and take its lock, start the children, supervise them until a signal, stop them."""
        buffer = DiskBuffer(self.config.buffer.path, self.config.buffer.max_bytes, self.config.buffer.min_free_bytes)
        buffer.open(load=False)  # instance lock + integrity check; the children open the database themselves
        buffer.close(keep_lock=True)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info("supervisor started pid=%d: starting the worker and receiver processes", os.getpid())
            self._start(self._worker)
            self._start(self._receiver)
            while not self._stopping:
                self._turn(time.monotonic() + 0.5)
            self._stop_children()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            buffer.close()
        log.info("supervisor stopped exit=%d", self._exit_code)
        return self._exit_code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %s received; stopping the receiver, then the worker", signal.Signals(signum).name)
        self._stopping = True

    # --- children -------------------------------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        parent_end, child_end = self._context.Pipe()
        inherited = [c.conn for c in (self._worker, self._receiver) if c.conn is not None] + [parent_end]
        process = self._context.Process(target=_child_main, name=f"mqtt-bridge-{child.role}",
                                        args=(child.body, self.config, child_end, inherited, os.getpid()))
        process.start()
        child_end.close()
        if child.conn is not None:
            child.conn.close()
        child.process, child.conn = process, parent_end
        child.started_at, child.restart_at, child.exit_code = time.monotonic(), None, None
        log.info("%s process started pid=%s", child.role, process.pid)
        if child.restarts:
            self._send_restarts()

    def _turn(self, until: float) -> None:
        """Forward what the receiver sent, notice children that ended, start again those that are due."""
        running = [c for c in (self._worker, self._receiver) if c.is_running]
        handles: list[Connection | int] = [c.conn for c in running if c.conn is not None]
        handles += [c.process.sentinel for c in running if c.process is not None]
        due = [c.restart_at for c in (self._worker, self._receiver) if c.restart_at is not None]
        timeout = max(0.0, min([until, *due]) - time.monotonic())
        for ready in wait(handles, timeout) if handles else _sleep(timeout):
            if ready is self._receiver.conn:
                self._forward_from_receiver()
            elif ready is self._worker.conn:
                self._drain(self._worker)
        for child in (self._worker, self._receiver):
            if child.process is not None and not child.is_running and child.exit_code is None:
                self._ended(child)
            if child.restart_at is not None and time.monotonic() >= child.restart_at and not self._stopping:
                self._start(child)

    def _forward_from_receiver(self) -> None:
        for message in self._drain(self._receiver):
            self._send(self._worker, message)

    @staticmethod
    def _send(child: _Child, message: Message) -> None:
        """Send to a running child; one that is ending misses it (a worker reads the raw log from disk when it
        starts again, a receiver being stopped is stopping anyway)."""
        if child.is_running and child.conn is not None:
            with contextlib.suppress(OSError):
                child.conn.send(message)

    def _drain(self, child: _Child) -> list[Message]:
        messages: list[Message] = []
        try:
            while child.conn is not None and child.conn.poll():
                messages.append(child.conn.recv())
        except (EOFError, OSError):
            pass
        return messages

    def _ended(self, child: _Child) -> None:
        assert child.process is not None
        code = child.process.exitcode if child.process.exitcode is not None else 1
        child.exit_code = code
        if self._stopping:
            return
        cause = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        if code in _FINAL_EXIT_CODES:
            log.error("%s process ended (%s); stopping the bridge", child.role, cause)
            self._exit_code, self._stopping = code, True
            return
        ran_s = time.monotonic() - child.started_at
        child.failed_starts = child.failed_starts + 1 if ran_s < _STABLE_S else 1
        if child.failed_starts > _MAX_FAILED_STARTS:
            log.error("%s process keeps failing (%d starts in a row ended within %.0f s; last: %s); stopping the "
                      "bridge", child.role, child.failed_starts, _STABLE_S, cause)
            self._exit_code, self._stopping = 1, True
            return
        delay = min(_BACKOFF_S[1], _BACKOFF_S[0] * 2 ** (child.failed_starts - 1))
        child.restarts += 1
        child.restart_at = time.monotonic() + delay
        log.error("%s process ended (%s) after %.1f s; starting it again in %.1f s (restart %d)", child.role, cause,
                  ran_s, delay, child.restarts)

    def _send_restarts(self) -> None:
        self._send(self._worker, (RESTARTS, {c.role: c.restarts for c in (self._worker, self._receiver)}))

    # --- stop -----------------------------------------------------------------------------------------------

    def _stop_children(self) -> None:
        """STOP to the receiver, wait for it (forwarding its last wake-ups), then STOP to the worker and wait."""
        deadline = time.monotonic() + self.config.flush.shutdown_grace_s + 5.0
        for child in (self._receiver, self._worker):
            child.restart_at = None
            if not child.is_running:
                continue
            self._send(child, (STOP, max(0.5, deadline - time.monotonic())))
            while child.is_running and time.monotonic() < deadline + _KILL_AFTER_S:
                self._turn(min(deadline + _KILL_AFTER_S, time.monotonic() + 0.2))
            if child.is_running and child.process is not None:
                log.warning("%s process still running after the grace; killing it (its data is on disk)",
                            child.role)
                child.process.kill()
                child.process.join(5.0)
            log.info("%s process stopped exit=%s", child.role, child.process.exitcode if child.process else None)


def _sleep(timeout_s: float) -> list[Connection | int]:
    time.sleep(timeout_s)
    return []


def _child_main(body: Callable[[BridgeConfig, Connection], int], config: BridgeConfig, conn: Connection,
                inherited: list[Connection], parent_pid: int) -> None:
    """A child's first steps: die with the parent, leave signals to it, close the parent's pipe ends, run."""
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            prctl(_PR_SET_NAME, PROCESS_NAMES[body.__name__].encode(), 0, 0, 0)  # what ps and top show
        except (OSError, AttributeError):
            log.debug("prctl unavailable; the child stops when its pipe closes")
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    for other in inherited:
        other.close()
    sys.exit(body(config, conn))
