"""The receiver (the durable ack path): a group of messages is appended to the raw log on the real buffer in one
commit, then each message is acked through itself, in arrival order; nothing is acked before its commit, and
nothing else (no routing, no decoding) happens on the way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.pipeline.receiver import Receiver
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.raw_log import RawMessage
from tests.helpers import detection_message, wait_until

TOPIC = b"f/L1/cam1/detections"


@dataclass
class _Line:
    """A receiver on a real buffer in `tmp_path`, and the acks its messages report (name, raw depth at ack)."""

    buffer: DiskBuffer
    receiver: Receiver
    stats: Stats
    stop: threading.Event
    over_high_water: list[bool]
    logged: list[int] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    depth_at_ack: dict[str, int] = field(default_factory=dict)

    def message(self, name: str, payload: bytes, *, topic: bytes = TOPIC, retain: bool = False,
                properties: bytes = b"") -> Inbound:
        return Inbound(topic, payload, len(self.acked) + 1, 1, 1, time.time(), retain=retain,
                       properties=properties, acker=self._acker(name))

    def _acker(self, name: str) -> Callable[[], bool]:
        def ack() -> bool:
            self.acked.append(name)
            self.depth_at_ack[name] = self.buffer.raw.depth
            return True
        return ack

    def run_until_drained(self) -> None:
        """Let the receiver commit what is queued, then stop it (run() commits what is queued before returning)."""
        self.stop.set()
        self.receiver.run()


def _receiver(buffer: DiskBuffer, stats: Stats, stop: threading.Event, over: list[bool], logged: list[int],
              *, max_pending: int = 100, may_exceed: Callable[[], bool] | None = None) -> Receiver:
    return Receiver(buffer.raw, lambda: over[0] or buffer.is_over_high_water(), stats, stop,
                    lambda: logged.append(buffer.raw.depth), max_pending=max_pending, may_exceed_high_water=may_exceed)


@pytest.fixture
def line(tmp_path: Path) -> Iterator[_Line]:
    buffer = DiskBuffer(tmp_path / "buffer", 2**30, 1)
    buffer.open()
    stats, stop, over = Stats(), threading.Event(), [False]
    logged: list[int] = []
    try:
        yield _Line(buffer, _receiver(buffer, stats, stop, over, logged), stats, stop, over, logged)
    finally:
        stop.set()
        buffer.close()


def test_receiver_logs_a_group_then_acks_in_arrival_order(line: _Line) -> None:
    """Messages queued together are one raw log commit; each is acked after it, oldest first; the processor is
    woken after the commit."""
    for seq in range(5):
        line.receiver.offer(line.message(f"m{seq}", detection_message(seq)))
    line.run_until_drained()
    assert line.acked == [f"m{seq}" for seq in range(5)]
    assert all(depth == 5 for depth in line.depth_at_ack.values()), line.depth_at_ack  # durable before any ack
    assert line.logged == [5] and line.buffer.raw.untaken == 1
    assert line.stats.count("messages_logged") == 5


def test_receiver_keeps_every_message_as_received_and_decodes_nothing(line: _Line) -> None:
    """Bad JSON, an unrouted topic, a non-UTF-8 topic and a retained message are all logged byte for byte and
    acked; none is dead-lettered or buffered as an event on this path."""
    sent = [line.message("bad", b"{not json"), line.message("unrouted", b"x", topic=b"no/route"),
            line.message("latin", b"y", topic=b"f/\xff"),
            line.message("retained", b"z", retain=True, properties=b'{"ContentType":"image/jpeg"}')]
    for message in sent:
        line.receiver.offer(message)
    line.run_until_drained()
    assert line.acked == ["bad", "unrouted", "latin", "retained"]
    assert line.buffer.depth == 0 and line.buffer.dead_letter_count == 0
    assert [(m.topic, m.payload, m.retain, m.properties) for m in line.buffer.raw.messages()] == [
        (m.topic, m.payload, m.retain, m.properties) for m in sent]
    assert [m.received_at_s for m in line.buffer.raw.messages()] == [m.received_at_s for m in sent]


def test_receiver_failed_commit_acks_nothing_until_it_succeeds(line: _Line) -> None:
    """While the database refuses the commit (closed), nothing is acked and the group is retried; the same group is
    committed and acked, in order, once the buffer works again."""
    line.buffer.close()
    thread = threading.Thread(target=line.receiver.run, name="t-receiver")
    thread.start()
    try:
        line.receiver.offer(line.message("m1", detection_message(1)))
        line.receiver.offer(line.message("m2", detection_message(2)))
        wait_until(lambda: _failures(line) >= 2, timeout_s=10, message="commit retried")
        assert line.acked == []
        line.buffer.open()
        wait_until(lambda: line.acked == ["m1", "m2"], timeout_s=10, message="acked after the commit")
        assert line.buffer.raw.depth == 2 and line.receiver.is_writable
    finally:
        line.stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_receiver_stopped_during_a_failing_commit_acks_nothing(line: _Line) -> None:
    """A stop while the commit keeps failing leaves the group un-acked (the broker redelivers it)."""
    line.buffer.close()
    line.receiver.offer(line.message("m1", detection_message(1)))
    timer = threading.Timer(1.5, line.stop.set)
    timer.start()
    try:
        line.receiver.run()
    finally:
        timer.cancel()
    assert line.acked == [] and _failures(line) >= 1


def _failures(line: _Line) -> int:
    return line.stats.count("buffer_commit_errors") + line.stats.count("intake_errors")


def test_receiver_offer_does_not_block_once_stopped(line: _Line) -> None:
    """With the queue full, `offer` waits (backpressure on the socket) but returns once the bridge stops."""
    small = _receiver(line.buffer, line.stats, line.stop, line.over_high_water, line.logged, max_pending=1)
    small.offer(line.message("m1", detection_message(1)))
    threading.Timer(0.3, line.stop.set).start()
    started = time.monotonic()
    small.offer(line.message("m2", detection_message(2)))
    assert time.monotonic() - started < 5


def test_receiver_over_high_water_holds_acks_until_below(line: _Line) -> None:
    """Over the mark nothing is logged or acked (the broker keeps the messages); below it again, all go on."""
    line.over_high_water[0] = True
    thread = threading.Thread(target=line.receiver.run, name="t-receiver")
    thread.start()
    try:
        line.receiver.offer(line.message("m1", detection_message(1)))
        wait_until(lambda: line.receiver.is_backpressured, timeout_s=5, message="backpressure")
        assert line.acked == [] and line.buffer.raw.depth == 0 and line.stats.gauge("backpressure", 0) == 1
        line.over_high_water[0] = False
        wait_until(lambda: line.acked == ["m1"], timeout_s=5, message="acked once below the mark")
        assert not line.receiver.is_backpressured and line.buffer.raw.depth == 1
    finally:
        line.stop.set()
        thread.join(10)


def test_receiver_over_high_water_goes_on_when_images_may_be_shed(line: _Line) -> None:
    """When every route sheds images (the shedder says so), the receiver keeps logging and acking over the mark."""
    receiver = _receiver(line.buffer, line.stats, line.stop, [True], line.logged, may_exceed=lambda: True)
    receiver.offer(line.message("m1", detection_message(1)))
    line.stop.set()
    receiver.run()
    assert line.acked == ["m1"] and not receiver.is_backpressured


def test_receiver_stopped_over_high_water_acks_nothing(line: _Line) -> None:
    """A stop while held over the mark leaves the messages un-acked and un-logged (the broker sends them again)."""
    line.over_high_water[0] = True
    line.receiver.offer(line.message("m1", detection_message(1)))
    threading.Timer(0.5, line.stop.set).start()
    line.receiver.run()
    assert line.acked == [] and line.buffer.raw.depth == 0


def test_receiver_logged_entries_match_raw_message_layout(line: _Line) -> None:
    """What the receiver logs is exactly `RawMessage` (QoS, retain, receive time kept)."""
    message = line.message("m", b"payload", retain=True)
    line.receiver.offer(message)
    line.run_until_drained()
    assert list(line.buffer.raw.messages()) == [RawMessage(TOPIC, b"payload", 1, True, message.received_at_s)]
