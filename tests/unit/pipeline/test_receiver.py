"""The receiver (intake): a group of messages is committed to the real disk buffer in one transaction, then each
message is acked through itself, in arrival order; nothing is acked before its commit, and outcome hooks hear the
group after the acks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import DeadLetterReason
from mqtt_bridge.model.attachment import Attachment, ReferenceKind
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.observe.hooks import OutcomeHook, OutcomeHooks
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.pipeline.receiver import Receiver
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.transform.ingest import Ingestor
from tests.helpers import detection_message, tiny_png, wait_until

TOPIC = b"f/L1/cam1/detections"
ROUTE = {"name": "cams", "topic": "f/{line}/{camera}/detections", "use_case": "uc"}


class _Recorder(OutcomeHook):
    """Records each committed group, with the acks that had gone out by then."""

    def __init__(self, acked: list[str]) -> None:
        self.acked = acked
        self.groups: list[tuple[list[Record], list[DeadLetter], list[str]]] = []

    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        self.groups.append((list(records), list(dead_letters), list(self.acked)))


class _Failing(OutcomeHook):
    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        raise RuntimeError("hook bug")


@dataclass
class _Line:
    """A receiver on a real buffer in `tmp_path`, and the acks its messages report (name, buffer depth at ack)."""

    buffer: DiskBuffer
    intake: Receiver
    stats: Stats
    stop: threading.Event
    wake: threading.Event
    recorder: _Recorder
    acked: list[str] = field(default_factory=list)
    depth_at_ack: dict[str, int] = field(default_factory=dict)

    def message(self, name: str, payload: bytes, *, companions: tuple[Inbound, ...] = (),
                attachment: Attachment | None = None) -> Inbound:
        message = Inbound(TOPIC, payload, len(self.acked) + 1, 1, 1, time.time(), acker=self._acker(name))
        return message.with_image(attachment, companions) if (companions or attachment) else message

    def _acker(self, name: str) -> Callable[[], bool]:
        def ack() -> bool:
            self.acked.append(name)
            self.depth_at_ack[name] = self.buffer.depth + self.buffer.dead_letter_count
            return True
        return ack

    def run_until_drained(self) -> None:
        """Let the receiver commit what is queued, then stop it (run() commits what is queued before returning)."""
        self.stop.set()
        self.intake.run()


@pytest.fixture
def line(tmp_path: Path) -> Iterator[_Line]:
    buffer = DiskBuffer(tmp_path / "buffer", 2**30, 1)
    buffer.open()
    stats, stop, wake = Stats(), threading.Event(), threading.Event()
    acked: list[str] = []
    recorder = _Recorder(acked)
    ingestor = Ingestor(Router([RouteConfig.model_validate(ROUTE)]), 2**20)
    intake = Receiver(ingestor, buffer, stats, stop, wake, max_pending=100,
                      hooks=OutcomeHooks([_Failing(), recorder]))
    try:
        yield _Line(buffer, intake, stats, stop, wake, recorder, acked)
    finally:
        stop.set()
        buffer.close()


def test_receiver_commits_a_group_then_acks_in_arrival_order(line: _Line) -> None:
    """Messages queued together are committed in one group; each is acked after the commit, oldest first."""
    for seq in range(5):
        line.intake.offer(line.message(f"m{seq}", detection_message(seq)))
    line.run_until_drained()
    assert line.acked == [f"m{seq}" for seq in range(5)]
    assert all(depth == 5 for depth in line.depth_at_ack.values()), line.depth_at_ack  # durable before any ack
    assert [[r.topic for r in records] for records, _, _ in line.recorder.groups] == [[TOPIC.decode()] * 5]
    assert line.stats.count("events_buffered") == 5 and line.stats.count("messages_received", "cams") == 5
    assert line.wake.is_set()  # the flusher is told there is work


def test_receiver_dead_letters_are_committed_and_acked(line: _Line) -> None:
    """A message ingest cannot use is kept as a dead letter (raw bytes) and acked like any other."""
    line.intake.offer(line.message("good", detection_message(1)))
    line.intake.offer(line.message("bad", b"{not json"))
    line.run_until_drained()
    assert line.acked == ["good", "bad"]
    assert line.buffer.depth == 1 and line.buffer.dead_letter_count == 1
    [(_, letter)] = list(line.buffer.dead_letters())
    assert letter.reason == "invalid_json" and letter.payload == b"{not json"
    assert line.stats.count("dead_letters", "invalid_json") == 1


def test_receiver_hooks_hear_the_group_after_its_acks_and_a_failing_hook_is_isolated(line: _Line) -> None:
    """The outcome hooks get records and dead letters once per group, after the acks; the first hook raises and
    neither the second hook nor the receiver notices."""
    line.intake.offer(line.message("good", detection_message(1)))
    line.intake.offer(line.message("bad", b"{not json"))
    line.run_until_drained()
    [(records, dead, acked_before)] = line.recorder.groups
    assert len(records) == 1 and [d.reason for d in dead] == ["invalid_json"] and acked_before == ["good", "bad"]
    assert line.stats.count("intake_errors") == 0


def test_receiver_acks_companions_with_their_detection_after_the_commit(line: _Line) -> None:
    """A detection paired with an image message is acked first, then its image, both after the commit."""
    image = line.message("image", tiny_png(1))
    paired = line.message("detection", detection_message(1), companions=(image,),
                          attachment=Attachment(ReferenceKind.COMPANION, tiny_png(1)))
    line.intake.offer(paired)
    line.run_until_drained()
    assert line.acked == ["detection", "image"]
    assert line.depth_at_ack == {"detection": 1, "image": 1}


def test_receiver_ingests_the_attachment_the_message_carries(line: _Line) -> None:
    """A message whose image reference was refused upstream is dead-lettered with that reason, and acked."""
    problem = (DeadLetterReason.IMAGE_URL_REFUSED, "host not allowed")
    refused = line.message("refused", detection_message(1), attachment=Attachment(ReferenceKind.URL, problem=problem))
    line.intake.offer(refused)
    line.run_until_drained()
    [(_, letter)] = list(line.buffer.dead_letters())
    assert letter.reason == "image_url_refused" and line.acked == ["refused"]


def test_receiver_failed_commit_acks_nothing_until_it_succeeds(line: _Line) -> None:
    """While the buffer refuses the commit (closed: its high-water check or its append raises), nothing is acked
    and the group is retried; the same group is committed and acked, in order, once the buffer works again."""
    line.buffer.close()
    thread = threading.Thread(target=line.intake.run, name="t-intake")
    thread.start()
    try:
        line.intake.offer(line.message("m1", detection_message(1)))
        line.intake.offer(line.message("m2", detection_message(2)))
        wait_until(lambda: _failures(line) >= 2, timeout_s=10, message="commit retried")
        assert line.acked == [] and line.buffer.depth == 0
        line.buffer.open()
        wait_until(lambda: line.acked == ["m1", "m2"], timeout_s=10, message="acked after the commit")
        assert line.buffer.depth == 2 and line.intake.is_writable
    finally:
        line.stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_receiver_stopped_during_a_failing_commit_acks_nothing(line: _Line) -> None:
    """A stop while the commit keeps failing leaves the group un-acked (the broker redelivers it)."""
    line.buffer.close()
    line.intake.offer(line.message("m1", detection_message(1)))
    timer = threading.Timer(1.5, line.stop.set)
    timer.start()
    try:
        line.intake.run()
    finally:
        timer.cancel()
    assert line.acked == [] and _failures(line) >= 1


def _failures(line: _Line) -> int:
    return line.stats.count("buffer_commit_errors") + line.stats.count("intake_errors")


def test_receiver_offer_does_not_block_once_stopped(line: _Line) -> None:
    """With the queue full, `offer` waits (backpressure on the socket) but returns once the bridge stops."""
    small = Receiver(Ingestor(Router([RouteConfig.model_validate(ROUTE)]), 2**20), line.buffer, line.stats,
                   line.stop, line.wake, max_pending=1)
    small.offer(line.message("m1", detection_message(1)))
    threading.Timer(0.3, line.stop.set).start()
    started = time.monotonic()
    small.offer(line.message("m2", detection_message(2)))
    assert time.monotonic() - started < 5


def test_receiver_commits_a_redelivered_message_once_and_acks_every_copy(line: _Line) -> None:
    """A message the broker sends again (its first copy committed, that ack lost with the connection) is recognised
    by its record and only acked; a message with other content, even under the same topic, is committed."""
    payload = detection_message(1)  # a redelivery carries the same bytes (detection_message stamps the time)
    line.intake.offer(line.message("first", payload))
    line.intake.offer(line.message("other", detection_message(2)))
    line.run_until_drained()
    line.stop.clear()
    line.intake.offer(line.message("again", payload))  # a later group: a redelivery after a reconnect
    line.intake.offer(line.message("again-in-group", payload))
    line.intake.offer(line.message("new", detection_message(3)))
    line.run_until_drained()
    assert line.acked == ["first", "other", "again", "again-in-group", "new"]
    assert line.buffer.depth == 3
    assert line.stats.count("events_buffered") == 3 and line.stats.count("redeliveries_recognised") == 2
    assert [len(records) for records, _, _ in line.recorder.groups] == [2, 1]
