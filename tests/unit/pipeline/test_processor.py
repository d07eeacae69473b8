"""The processor: raw log entries on the real buffer become events or dead letters, inserted in the same commit that
deletes the raw entries; a lost commit is redone from the raw log without duplicates; companion images are paired
after the ack; what it holds in memory stays bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.images.references import ImageReferences
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.observe.hooks import OutcomeHook, OutcomeHooks
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.pipeline.processor import Processor
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.raw_log import RawMessage
from mqtt_bridge.transform.ingest import Ingestor
from tests.helpers import detection_message, tiny_png, wait_until

TOPIC = b"f/L1/cam1/detections"
ROUTE: dict[str, Any] = {"name": "cams", "topic": "f/{line}/{camera}/detections", "use_case": "uc"}


def _companion(window_s: float) -> dict[str, Any]:
    return {**ROUTE, "image": {"companion": {
        "topic": "f/{line}/{camera}/image/{frame}", "key": "{line}/{camera}/{payload.metadata.seq}",
        "image_key": "{line}/{camera}/{frame}", "window_s": window_s}}}


COMPANION = _companion(0.5)
LONG_WINDOW = _companion(60)  # a detection waits for its image longer than any test runs
PLAIN: dict[str, Any] = {"name": "plain", "topic": "plain/{camera}", "use_case": "uc"}


class _Recorder(OutcomeHook):
    def __init__(self) -> None:
        self.groups: list[tuple[list[Record], list[DeadLetter]]] = []

    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        self.groups.append((list(records), list(dead_letters)))


class _Failing(OutcomeHook):
    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        raise RuntimeError("hook bug")


@dataclass
class _Line:
    """A processor (and, for companion routes, the image stage) on a real buffer, run in threads."""

    buffer: DiskBuffer
    routes: list[dict[str, Any]]
    max_in_flight: int = 1000
    stats: Stats = field(default_factory=Stats)
    stop: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    recorder: _Recorder = field(default_factory=_Recorder)
    threads: list[threading.Thread] = field(default_factory=list)
    processor: Processor | None = None

    def start(self, first_stage: Callable[[Inbound], None] | None = None) -> Processor:
        router = Router([RouteConfig.model_validate(r) for r in self.routes])
        processor = Processor(Ingestor(router, 2**20), self.buffer, self.stats, self.stop, self.wake,
                              max_in_flight=self.max_in_flight, max_in_flight_bytes=2**30,
                              hooks=OutcomeHooks([_Failing(), self.recorder]))
        if ImageReferences.is_needed([RouteConfig.model_validate(r) for r in self.routes]):
            references = ImageReferences(router, processor.offer, self.stats, self.stop, 2**20)
            processor.set_first_stage(references.offer)
            self.threads.append(threading.Thread(target=references.run_timer, name="t-timer"))
        if first_stage is not None:
            processor.set_first_stage(first_stage)
        self.threads.append(threading.Thread(target=processor.run, name="t-processor"))
        for thread in self.threads:
            thread.start()
        self.processor = processor
        return processor

    def log(self, *messages: tuple[bytes, bytes]) -> None:
        """Append one receiver group commit of (topic, payload) messages, and wake the processor."""
        self.buffer.raw.append([RawMessage(topic, payload, 1, False, time.time()) for topic, payload in messages])
        if self.processor is not None:
            self.processor.wake()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self.threads)
        self.threads.clear()
        self.stop.clear()


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[DiskBuffer]:
    with DiskBuffer(tmp_path / "buffer", 2**30, 1) as opened:
        yield opened


def _drained(buffer: DiskBuffer) -> Callable[[], bool]:
    return lambda: buffer.raw.depth == 0


def test_processor_turns_raw_entries_into_events_and_deletes_them_in_one_commit(buffer: DiskBuffer) -> None:
    """Raw entries become buffered events; the raw log is empty afterwards, also after a reopen; the flusher is
    woken and the hooks hear the group (a failing hook is isolated)."""
    line = _Line(buffer, [ROUTE])
    line.start()
    line.log(*[(TOPIC, detection_message(seq)) for seq in range(5)])
    wait_until(_drained(buffer), timeout_s=10, message="raw log processed")
    line.finish()
    assert buffer.depth == 5 and line.wake.is_set()
    assert [len(records) for records, _ in line.recorder.groups] == [5]
    assert line.stats.count("messages_received", "cams") == 5 and line.stats.count("events_buffered") == 5
    buffer.close()
    buffer.open()
    assert buffer.raw.depth == 0 and buffer.depth == 5


def test_processor_dead_letters_bad_input_with_its_raw_bytes(buffer: DiskBuffer) -> None:
    """A message ingest cannot use is kept as a dead letter with its bytes; its raw entry is finished."""
    line = _Line(buffer, [ROUTE])
    line.start()
    line.log((TOPIC, detection_message(1)), (TOPIC, b"{not json"), (b"no/route", b"{}"))
    wait_until(_drained(buffer), timeout_s=10, message="raw log processed")
    line.finish()
    assert buffer.depth == 1
    reasons = sorted((letter.reason, letter.payload) for _, letter in buffer.dead_letters())
    assert reasons == [("invalid_json", b"{not json"), ("no_route", b"{}")]
    assert line.stats.count("dead_letters", "invalid_json") == 1


def test_processor_processes_what_the_log_held_at_start(tmp_path: Path) -> None:
    """Raw entries logged before a restart (acked, never processed) are processed when the processor starts."""
    with DiskBuffer(tmp_path / "b", 2**30, 1) as before:
        before.raw.append([RawMessage(TOPIC, detection_message(seq), 1, False, time.time()) for seq in range(3)])
    with DiskBuffer(tmp_path / "b", 2**30, 1) as buffer:
        line = _Line(buffer, [ROUTE])
        line.start()
        wait_until(_drained(buffer), timeout_s=10, message="the old raw log processed")
        line.finish()
        assert buffer.depth == 3


def test_processor_lost_commit_is_redone_from_the_raw_log_without_duplicates(buffer: DiskBuffer,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit that never lands (the buffer refuses it until the bridge stops) leaves the raw entries in the log;
    the next processor makes the same events once, under the same eventIds."""
    payloads = [detection_message(seq) for seq in range(3)]
    line = _Line(buffer, [ROUTE])

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("disk I/O error")

    monkeypatch.setattr(buffer, "append", refuse)
    line.start()
    line.log(*[(TOPIC, p) for p in payloads])
    wait_until(lambda: line.stats.count("buffer_commit_errors") >= 1, timeout_s=10, message="the commit failed")
    line.finish()
    monkeypatch.undo()
    assert buffer.depth == 0 and buffer.raw.depth == 3
    buffer.close()
    buffer.open()
    line = _Line(buffer, [ROUTE])
    line.start()
    wait_until(_drained(buffer), timeout_s=10, message="redone")
    line.finish()
    ids = [record.event_id for record in buffer.records()]
    oracle = Ingestor(Router([RouteConfig.model_validate(ROUTE)]), 2**20)
    expected = [oracle.process(TOPIC, p, 0.0, None).records[0].event_id for p in payloads]
    assert ids == expected and buffer.raw.depth == 0


def test_processor_commits_a_message_logged_twice_once(buffer: DiskBuffer) -> None:
    """A message the broker sent again (both copies in the raw log) is buffered once; both entries are finished."""
    payload = detection_message(1)
    line = _Line(buffer, [ROUTE])
    line.start()
    line.log((TOPIC, payload), (TOPIC, detection_message(2)))
    wait_until(_drained(buffer), timeout_s=10, message="first group")
    line.log((TOPIC, payload))
    wait_until(_drained(buffer), timeout_s=10, message="the copy")
    line.finish()
    assert buffer.depth == 2 and line.stats.count("redeliveries_recognised") == 1


def test_processor_pairs_a_companion_image_after_the_ack_and_finishes_both(buffer: DiskBuffer) -> None:
    """A detection waits in the processor (its raw entry on disk) until its image arrives in a later group; the
    event carries the image, and both raw entries are deleted by that commit."""
    line = _Line(buffer, [LONG_WINDOW])
    line.start()
    line.log((TOPIC, detection_message(7)))
    wait_until(lambda: buffer.raw.in_flight[0] == 1, timeout_s=10, message="detection taken and waiting")
    assert buffer.raw.depth == 1 and buffer.depth == 0
    line.log((b"f/L1/cam1/image/7", tiny_png(7)))
    wait_until(_drained(buffer), timeout_s=10, message="pair committed")
    line.finish()
    [record] = list(buffer.records())
    assert record.image == tiny_png(7)
    assert line.stats.count("companion_images_paired", "cams") == 1


def test_processor_unclaimed_image_is_finished_without_an_event(buffer: DiskBuffer) -> None:
    """An image no detection claims within the window is dropped: its raw entry is deleted, nothing is buffered."""
    line = _Line(buffer, [COMPANION])
    line.start()
    line.log((b"f/L1/cam1/image/9", tiny_png(9)))
    wait_until(_drained(buffer), timeout_s=10, message="image dropped and finished")
    line.finish()
    assert buffer.depth == 0 and line.stats.count("companion_images_dropped", "cams") == 1


def test_processor_waiting_detection_survives_a_restart_and_pairs_afterwards(buffer: DiskBuffer) -> None:
    """A detection waiting for its image when the processor stops is still in the raw log (its segment partly
    finished); after the restart it is paired with the image that arrives then, and nothing is duplicated."""
    line = _Line(buffer, [LONG_WINDOW, PLAIN])
    line.start()
    line.log((TOPIC, detection_message(1)), (b"plain/x", detection_message(5)))
    wait_until(lambda: buffer.raw.depth == 1, timeout_s=10, message="the plain detection committed")
    line.finish()  # the companion detection has not seen its image
    buffer.close()
    buffer.open()
    assert buffer.raw.depth == 1 and buffer.depth == 1
    line = _Line(buffer, [LONG_WINDOW, PLAIN])
    line.start()
    line.log((b"f/L1/cam1/image/1", tiny_png(1)))
    wait_until(_drained(buffer), timeout_s=10, message="paired after the restart")
    line.finish()
    records = list(buffer.records())
    assert len(records) == 2 and records[1].image == tiny_png(1)


def test_processor_holds_at_most_its_in_flight_limit(buffer: DiskBuffer) -> None:
    """With a first stage that keeps everything (as a slow image stage would), the processor takes no more raw
    segments once its in-flight limit is reached; the rest waits on disk."""
    kept: list[Inbound] = []
    line = _Line(buffer, [ROUTE], max_in_flight=3)
    for seq in range(6):
        line.log((TOPIC, detection_message(seq)), (TOPIC, detection_message(100 + seq)))
    line.start(first_stage=kept.append)
    wait_until(lambda: len(kept) >= 4, timeout_s=10, message="segments taken")
    time.sleep(0.5)  # give it time to take more than it may (it must not)
    assert len(kept) == 4 and buffer.raw.untaken == 4
    for message in kept[:2]:
        message.ack()  # finished (e.g. an image no detection claimed): room again
    wait_until(lambda: len(kept) == 6, timeout_s=10, message="one more segment taken")
    line.finish()
