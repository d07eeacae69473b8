"""The channel between the supervisor and one of its child processes (design §3: the receiver and the worker).

Owns: the messages (tuples over a `multiprocessing` pipe) and the child's end of it: a reader thread that hands each
message to the child's handler and calls `on_parent_gone` when the pipe ends (the supervisor died), and a sender
thread that sends what the child queued (wake-ups coalesced into one) and, every `REPORT_INTERVAL_S`, the child's
report, so that a full pipe never blocks the caller (the receiver thread, which acks). No exception escapes either
thread. What travels here is never data: raw messages and events go through the buffer on disk, so a lost
message on this channel delays work (the worker also looks at the raw log on its own every fraction of a second) but
loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

__all__ = ["HELLO", "LOGGED", "REPORT", "REPORT_INTERVAL_S", "RESTARTS", "STOP", "ChildLink", "Message"]

log = logging.getLogger(__name__)

Message = tuple[object, ...]

STOP = "stop"  # supervisor -> child: (STOP, grace_s): stop in order within grace_s
LOGGED = "logged"  # receiver -> supervisor -> worker: (LOGGED,): new raw segments are on disk
HELLO = "hello"  # receiver -> supervisor -> worker: (HELLO, first_seq): a receiver started (`RawLog.rewind`)
REPORT = "report"  # receiver -> supervisor -> worker: (REPORT, {...}): its state and counters (`supervise.intake`)
RESTARTS = "restarts"  # supervisor -> worker: (RESTARTS, {role: count}): how often each child was started again
REPORT_INTERVAL_S = 0.25


class ChildLink:
    """A child's end of its pipe to the supervisor. `start` the threads, `send`/`wake` from any thread."""

    def __init__(self, conn: Connection, on_message: Callable[[Message], None],
                 on_parent_gone: Callable[[], None], report: Callable[[], dict[str, object]] | None = None) -> None:
        self._conn = conn
        self._on_message = on_message
        self._on_parent_gone = on_parent_gone
        self._report = report
        self._pending: list[Message] = []
        self._woken = False
        self._has_work = threading.Condition()
        self._closed = False
        self._send_lock = threading.Lock()  # one sender at a time on the pipe (the thread, or `flush`)
        self._next_report_s = 0.0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the reader and sender threads (daemons: the child's own shutdown decides when it ends)."""
        for name, body in (("link-reader", self._read), ("link-sender", self._send_loop)):
            thread = threading.Thread(target=body, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def send(self, message: Message) -> None:
        """Queue one message for the supervisor."""
        with self._has_work:
            self._pending.append(message)
            self._has_work.notify()

    def wake(self) -> None:
        """Tell the worker that new raw segments are on disk (at most one such message per send)."""
        with self._has_work:
            self._woken = True
            self._has_work.notify()

    def flush(self) -> None:
        """Send the report and what is queued now, from the caller's thread (at the end of a child's shutdown)."""
        with self._has_work:
            self._woken = True
        self._send_due(with_report=True)

    def close(self) -> None:
        """Stop the sender; the pipe closes with the process."""
        with self._has_work:
            self._closed = True
            self._has_work.notify()

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a thread loop: an unreadable message is logged and skipped
                log.exception("link: unreadable message from the supervisor")
                continue
            try:
                self._on_message(message)
            except Exception:  # the handler's failure must not end the link
                log.exception("link: handling %r failed", message[:1])
        if not self._closed:
            log.warning("the supervisor is gone (its pipe closed); stopping")
            try:
                self._on_parent_gone()
            except Exception:
                log.exception("link: stopping after the supervisor went failed")

    def _send_loop(self) -> None:
        while True:
            with self._has_work:
                if not (self._pending or self._woken or self._closed):
                    self._has_work.wait(REPORT_INTERVAL_S)
                if self._closed:
                    return
            if not self._send_due(with_report=time.monotonic() >= self._next_report_s):
                return

    def _send_due(self, *, with_report: bool) -> bool:
        """Send what is queued, a wake-up and the report; False once the pipe is gone."""
        with self._has_work:
            messages, self._pending = self._pending, []
            if self._woken:
                messages.append((LOGGED,))
                self._woken = False
        try:
            if with_report and self._report is not None:
                self._next_report_s = time.monotonic() + REPORT_INTERVAL_S
                messages.append((REPORT, self._report()))
            with self._send_lock:
                for message in messages:
                    self._conn.send(message)
        except (BrokenPipeError, EOFError, OSError):
            return False
        except Exception:  # a thread loop: a report that cannot be built or sent is skipped
            log.exception("link: sending to the supervisor failed")
        return True
