"""The flusher over a real DiskBuffer and a fake Vision Events API: batching, uploads, retries, splitting, auth,
confirmed delivery (only what the answer's eventIds list) and billing stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import pytest

from mqtt_bridge.errors import AuthApiError, BillingApiError, RetryableApiError
from mqtt_bridge.images.checks import content_hash
from mqtt_bridge.model.record import Record
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.observe.hooks import Outcome, OutcomeHook
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.pipeline.flusher import Backoff, Flusher, FlushSettings
from mqtt_bridge.storage.buffer import DiskBuffer
from tests.helpers import tiny_png, wait_until
from tests.unit.pipeline.fake_api import FakeEventsApi

FAST = FlushSettings(max_events=100, max_bytes=5 * 2**20, max_wait_s=0.0, retry_min_s=0.01, retry_max_s=0.05)


def _record(n: int, image: bytes = b"", received_at_s: float = 1.0) -> Record:
    event: JsonDict = {"eventId": f"e{n}", "useCaseId": "uc", "eventType": "object_detection"}
    if image:
        event["images"] = [{"label": "cam"}]
    return Record(event=event, route="r", topic=f"cam/{n}", received_at_s=received_at_s, image=image)


class _Outcomes(OutcomeHook):
    """Records the outcomes the flusher emits (as `(eventId, outcome, reason)`) and its `on_auth_error` calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.auth_errors = 0

    def on_image_uploaded(self, record: Record) -> None:
        self.seen.append((record.event_id, Outcome.IMAGE_UPLOADED.value, ""))

    def on_delivered(self, record: Record) -> None:
        self.seen.append((record.event_id, Outcome.DELIVERED.value, ""))

    def on_dead_lettered(self, record: Record, reason: str) -> None:
        self.seen.append((record.event_id, Outcome.DEAD_LETTERED.value, reason))

    def auth_error(self) -> None:
        self.auth_errors += 1


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[DiskBuffer]:
    with DiskBuffer(tmp_path / "buffer", 2**30, 1) as opened:
        yield opened


@contextmanager
def _running(buffer: DiskBuffer, api: FakeEventsApi, settings: FlushSettings = FAST, stats: Stats | None = None,
             outcomes: _Outcomes | None = None) -> Iterator[Flusher]:
    """A flusher running in its own thread; stopped and joined on exit."""
    stop, wake = threading.Event(), threading.Event()
    flusher = Flusher(buffer, api, settings, stats or Stats(), stop, wake,
                      hooks=outcomes,
                      on_auth_error=outcomes.auth_error if outcomes else None)
    thread = threading.Thread(target=flusher.run, name="test-flusher", daemon=True)
    thread.start()
    try:
        yield flusher
    finally:
        stop.set()
        wake.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the flusher did not stop"


def test_flusher_delivers_a_batch_and_deletes_it_from_the_buffer(buffer: DiskBuffer) -> None:
    """Buffered records go out in one batch, in order, and are gone from the buffer once the API accepted them."""
    buffer.append([_record(i) for i in range(5)], [])
    api, stats, outcomes = FakeEventsApi(), Stats(), _Outcomes()
    with _running(buffer, api, stats=stats, outcomes=outcomes) as flusher:
        wait_until(lambda: buffer.depth == 0, message="buffer drained")
        assert flusher.is_api_ready and flusher.last_delivery_s is not None
    assert [call.event_ids for call in api.batch_calls()] == [("e0", "e1", "e2", "e3", "e4")]
    assert api.created == ["e0", "e1", "e2", "e3", "e4"]
    assert buffer.peek(10, 2**20) == [] and buffer.dead_letter_count == 0
    assert stats.count("events_delivered") == 5 and stats.count("api_batches") == 1
    assert stats.gauge("last_delivery_time_seconds") > 0
    assert outcomes.seen == [(f"e{i}", "delivered", "") for i in range(5)]


def test_flusher_batches_fire_on_max_events(buffer: DiskBuffer) -> None:
    """A backlog goes out in batches of at most `max_events`, oldest first."""
    buffer.append([_record(i) for i in range(250)], [])
    api = FakeEventsApi()
    with _running(buffer, api):
        wait_until(lambda: buffer.depth == 0, message="buffer drained")
    assert [len(call.event_ids) for call in api.batch_calls()] == [100, 100, 50]
    assert api.created == [f"e{i}" for i in range(250)]


def test_flusher_waits_max_wait_for_a_small_batch(buffer: DiskBuffer) -> None:
    """A lone record is held until its age reaches `max_wait_s` (more may join it), then sent."""
    api = FakeEventsApi()
    settings = FlushSettings(max_events=100, max_wait_s=0.4, retry_min_s=0.01, retry_max_s=0.05)
    with _running(buffer, api, settings):
        received = time.time()
        buffer.append([_record(1, received_at_s=received)], [])
        wait_until(lambda: buffer.depth == 0, message="the lone record is sent")
        sent = time.time()
    assert sent - received >= 0.4 - 0.05
    assert [call.event_ids for call in api.batch_calls()] == [("e1",)]


def test_flusher_retryable_error_keeps_the_data_and_backs_off(buffer: DiskBuffer) -> None:
    """A 5xx keeps every record in the buffer; the batch is retried after growing delays, then delivered once."""
    buffer.append([_record(i) for i in range(3)], [])
    api, stats = FakeEventsApi(), Stats()
    api.fail_batches(*[RetryableApiError("POST /batch: HTTP 503", 503) for _ in range(3)])
    settings = FlushSettings(max_wait_s=0.0, retry_min_s=0.2, retry_max_s=5.0)
    with _running(buffer, api, settings, stats) as flusher:
        wait_until(lambda: len(api.batch_calls()) >= 2, message="a retry")
        assert buffer.depth == 3 and api.created == []
        assert "503" in flusher.last_error
        wait_until(lambda: buffer.depth == 0, timeout_s=10, message="delivered after the retries")
        assert flusher.last_error == ""
    calls = api.batch_calls()
    assert [call.succeeded for call in calls] == [False, False, False, True]
    gaps = [later.at_s - earlier.at_s for earlier, later in pairwise(calls)]
    # jittered exponential: the n-th delay lies in [d/2, d] with d = 0.2 * 2^n
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4
    assert api.created == ["e0", "e1", "e2"]
    assert stats.count("api_retries", "503") == 3 and stats.count("events_delivered") == 3


def test_flusher_honours_retry_after(buffer: DiskBuffer) -> None:
    """A 429 with Retry-After is not retried sooner than the server asked, whatever the backoff says."""
    buffer.append([_record(1)], [])
    api = FakeEventsApi()
    api.fail_batches(RetryableApiError("POST /batch: HTTP 429", 429, retry_after_s=0.5))
    with _running(buffer, api):
        wait_until(lambda: buffer.depth == 0, timeout_s=10, message="delivered after Retry-After")
    first, second = api.batch_calls()
    assert second.at_s - first.at_s >= 0.5


def test_flusher_network_error_counts_as_a_network_retry(buffer: DiskBuffer) -> None:
    """A failure without an HTTP status (a timeout, a refused connection) is retried and counted as `network`."""
    buffer.append([_record(1)], [])
    api, stats = FakeEventsApi(), Stats()
    api.fail_batches(RetryableApiError("POST /batch: timed out"))
    with _running(buffer, api, stats=stats):
        wait_until(lambda: buffer.depth == 0, message="delivered after the timeout")
    assert stats.count("api_retries", "network") == 1 and api.created == ["e1"]


def test_flusher_permanent_4xx_splits_the_batch_and_dead_letters_only_the_bad_event(buffer: DiskBuffer) -> None:
    """The API refuses a whole batch for one bad event: the flusher halves it until the bad event is alone, delivers
    the rest once each, and dead-letters that one event with the API's status and answer."""
    buffer.append([_record(i) for i in range(8)], [])
    api, stats, outcomes = FakeEventsApi(reject_event_ids={"e5"}), Stats(), _Outcomes()
    with _running(buffer, api, stats=stats, outcomes=outcomes):
        wait_until(lambda: buffer.depth == 0, message="batch finished")
    assert api.batch_calls()[0].event_ids == tuple(f"e{i}" for i in range(8))
    assert sorted(api.created) == sorted(f"e{i}" for i in range(8) if i != 5)
    assert len(api.created) == 7  # nothing is sent twice
    [(_, letter)] = list(buffer.dead_letters())
    assert letter.reason == "api_rejected" and letter.event_id == "e5" and letter.route == "r"
    assert letter.api_status == 400 and letter.api_body == '{"error": "invalid event", "eventId": "e5"}'
    assert Record.from_bytes(letter.payload) == _record(5)  # the buffered record, so that replay can resend it
    assert stats.count("dead_letters", "api_rejected") == 1 and stats.count("events_delivered") == 7
    assert ("e5", "dead_lettered", 'api_rejected: {"error": "invalid event", "eventId": "e5"}') in outcomes.seen
    assert sum(1 for _, status, _ in outcomes.seen if status == "delivered") == 7


def test_flusher_auth_error_keeps_everything_and_marks_not_ready(buffer: DiskBuffer) -> None:
    """401/403 dead-letters nothing: the records stay, the bridge reports not ready, and delivery resumes (ready
    again) once the key is accepted."""
    buffer.append([_record(i) for i in range(4)], [])
    api, stats, outcomes = FakeEventsApi(), Stats(), _Outcomes()
    api.fail_batches(*[AuthApiError("POST /batch: HTTP 401", 401, '{"error": "bad key"}') for _ in range(1000)])
    with _running(buffer, api, stats=stats, outcomes=outcomes) as flusher:
        wait_until(lambda: len(api.batch_calls()) >= 3, message="refused three times")
        assert not flusher.is_api_ready
        assert buffer.depth == 4 and buffer.dead_letter_count == 0
        assert "bad key" in flusher.last_error
        api.heal()  # the key was fixed
        # the flusher marks the API ready right after the commit that empties the buffer: wait for both
        wait_until(lambda: buffer.depth == 0 and flusher.is_api_ready, timeout_s=10,
                   message="delivered once the key works")
        assert flusher.is_api_ready and flusher.last_error == ""
    refusals = len(api.batch_calls()) - 1
    assert outcomes.auth_errors == refusals and stats.count("api_retries", "401") == refusals
    assert buffer.dead_letter_count == 0 and api.created == ["e0", "e1", "e2", "e3"]


def test_flusher_uploads_images_before_the_batch_and_each_content_once(buffer: DiskBuffer) -> None:
    """Each image is uploaded before the batch that refers to it; records with the same bytes share one upload,
    and every event carries its image's sourceId."""
    same, other = tiny_png(1), tiny_png(2)
    buffer.append([_record(0, same), _record(1, other), _record(2, same), _record(3)], [])
    api, stats, outcomes = FakeEventsApi(), Stats(), _Outcomes()
    with _running(buffer, api, stats=stats, outcomes=outcomes):
        wait_until(lambda: buffer.depth == 0, message="delivered")
    assert api.kinds() == ["upload", "upload", "batch"]
    by_bytes = {data: source_id for source_id, data in api.uploads.items()}
    assert set(by_bytes) == {same, other}
    assert api.events["e0"]["images"] == [{"label": "cam", "sourceId": by_bytes[same]}]
    assert api.events["e1"]["images"] == [{"label": "cam", "sourceId": by_bytes[other]}]
    assert api.events["e2"]["images"] == [{"label": "cam", "sourceId": by_bytes[same]}]
    assert "images" not in api.events["e3"]
    assert stats.count("images_uploaded") == 2
    assert [event_id for event_id, status, _ in outcomes.seen if status == "image_uploaded"] == ["e0", "e1"]
    # delivered: the upload entries are forgotten with the records, so the buffer does not grow with them
    assert buffer.source_id(content_hash(same)) is None and buffer.source_id(content_hash(other)) is None


def test_flusher_retry_after_a_failed_batch_reuses_the_uploaded_image(buffer: DiskBuffer) -> None:
    """An image uploaded before a batch that failed is not uploaded again: its sourceId was remembered durably."""
    picture = tiny_png(3)
    buffer.append([_record(0, picture)], [])
    api = FakeEventsApi()
    api.fail_batches(RetryableApiError("POST /batch: HTTP 502", 502))
    with _running(buffer, api):
        wait_until(lambda: len(api.batch_calls()) >= 1, message="first attempt")
        wait_until(lambda: buffer.depth == 0, message="delivered on retry")
    assert api.kinds() == ["upload", "batch", "batch"]
    assert api.events["e0"]["images"] == [{"label": "cam", "sourceId": "src-1"}]


def test_flusher_rejected_upload_dead_letters_that_record_and_delivers_the_rest(buffer: DiskBuffer) -> None:
    """An image the API refuses (permanent 4xx) dead-letters its record as upload_rejected; the others go out."""
    buffer.append([_record(0, tiny_png(4)), _record(1, tiny_png(5)), _record(2)], [])
    api, stats = FakeEventsApi(reject_upload_names={"e0.png"}), Stats()
    with _running(buffer, api, stats=stats):
        wait_until(lambda: buffer.depth == 0, message="finished")
    assert api.created == ["e1", "e2"]
    [(_, letter)] = list(buffer.dead_letters())
    assert (letter.reason, letter.event_id, letter.api_status) == ("upload_rejected", "e0", 415)
    assert letter.api_body == '{"error": "unsupported image"}'
    assert stats.count("dead_letters", "upload_rejected") == 1


def test_flusher_names_an_upload_by_event_id_and_sniffed_type(buffer: DiskBuffer) -> None:
    """An image without a name is uploaded as `<eventId>.<type from its bytes>`; a named one keeps its name."""
    named = Record(event={"eventId": "e9", "images": [{}]}, route="r", topic="t", received_at_s=1.0,
                   image=tiny_png(6), image_name="frame-9.png")
    buffer.append([_record(0, tiny_png(7)), named], [])
    api = FakeEventsApi()
    with _running(buffer, api):
        wait_until(lambda: buffer.depth == 0, message="delivered")
    assert [call.name for call in api.calls if call.kind == "upload"] == ["e0.png", "frame-9.png"]


def test_flusher_survives_an_unexpected_error_and_keeps_the_data(buffer: DiskBuffer) -> None:
    """An error that is no API error (a bug, a broken fake) is logged and counted; the loop goes on and the records
    are delivered later, never lost."""
    buffer.append([_record(i) for i in range(2)], [])
    api, stats = FakeEventsApi(), Stats()
    api.fail_batches(RuntimeError("boom"))
    with _running(buffer, api, stats=stats):
        wait_until(lambda: buffer.depth == 0, timeout_s=10, message="delivered after the error")
    assert stats.count("flusher_errors") == 1 and api.created == ["e0", "e1"]


def test_flusher_stops_while_retrying_and_keeps_the_batch(buffer: DiskBuffer) -> None:
    """Stopping during a backoff wait ends the thread at once; the undelivered batch stays in the buffer."""
    buffer.append([_record(i) for i in range(3)], [])
    api = FakeEventsApi()
    api.fail_batches(*[RetryableApiError("POST /batch: HTTP 503", 503) for _ in range(100)])
    settings = FlushSettings(max_wait_s=0.0, retry_min_s=30.0, retry_max_s=60.0)
    started = time.monotonic()
    with _running(buffer, api, settings):
        wait_until(lambda: len(api.batch_calls()) == 1, message="first attempt")
    assert time.monotonic() - started < 10  # did not sit out the 15-30 s backoff
    assert buffer.depth == 3 and api.created == []


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    """The n-th delay lies in [d/2, d] with d = min(max, min * 2^n); reset starts over; Retry-After is a floor."""
    backoff = Backoff(1.0, 8.0)
    for ceiling in (1.0, 2.0, 4.0, 8.0, 8.0):
        assert ceiling / 2 <= backoff.next_delay_s() <= ceiling
    backoff.reset()
    assert 0.5 <= backoff.next_delay_s() <= 1.0
    assert backoff.next_delay_s(retry_after_s=30.0) == 30.0
    assert backoff.next_delay_s(retry_after_s=10**6) == 3600.0  # an absurd Retry-After is capped at an hour


# --- only what the API confirmed is delivered (issue 12 item 1) ---------------------------------------------------


def test_flusher_resends_alone_what_the_answer_left_out_and_delivers_everything(buffer: DiskBuffer) -> None:
    """A 201 that confirms 98 of 100: the 98 are done, the 2 left out are re-sent each on its own and delivered;
    nothing is lost, nothing delivered twice."""
    buffer.append([_record(i) for i in range(100)], [])
    api, stats, outcomes = FakeEventsApi(drop_once_event_ids={"e3", "e70"}), Stats(), _Outcomes()
    with _running(buffer, api, stats=stats, outcomes=outcomes):
        wait_until(lambda: buffer.depth == 0, message="buffer drained")
    calls = api.batch_calls()
    assert [call.event_ids for call in calls] == [tuple(f"e{i}" for i in range(100)), ("e3",), ("e70",)]
    assert sorted(api.events) == sorted(f"e{i}" for i in range(100)) and len(api.created) == 100
    assert buffer.dead_letter_count == 0
    assert stats.count("events_unconfirmed") == 2 and stats.count("events_delivered") == 100
    assert sorted(event_id for event_id, status, _ in outcomes.seen if status == "delivered") == \
        sorted(f"e{i}" for i in range(100))


def test_flusher_deletes_nothing_the_api_has_not_confirmed(buffer: DiskBuffer) -> None:
    """While an event waits for its re-send, it and every event behind it stay in the buffer (only a confirmed
    prefix is deleted), and only the unconfirmed event is sent again."""
    buffer.append([_record(i) for i in range(10)], [])
    api = FakeEventsApi(drop_event_ids={"e3"})
    settings = FlushSettings(max_wait_s=0.0, retry_min_s=30.0, retry_max_s=60.0, unconfirmed_attempts=3)
    with _running(buffer, api, settings):
        wait_until(lambda: len(api.batch_calls()) == 1 and buffer.depth == 7, message="the first answer settled")
        assert [record.event_id for record in buffer.peek(10, 2**20)] == [f"e{i}" for i in range(3, 10)]
    assert "e3" not in api.events and buffer.dead_letter_count == 0


def test_flusher_dead_letters_an_event_the_api_never_confirms_as_not_confirmed(buffer: DiskBuffer) -> None:
    """An event left out of `unconfirmed_attempts` answers is dead-lettered as not_confirmed with the API's answer;
    the others are delivered, each once."""
    buffer.append([_record(i) for i in range(4)], [])
    api, stats, outcomes = FakeEventsApi(drop_event_ids={"e1"}), Stats(), _Outcomes()
    settings = FlushSettings(max_wait_s=0.0, retry_min_s=0.01, retry_max_s=0.05, unconfirmed_attempts=3)
    with _running(buffer, api, settings, stats, outcomes):
        wait_until(lambda: buffer.depth == 0, message="batch finished")
    assert [call.event_ids for call in api.batch_calls()] == [("e0", "e1", "e2", "e3"), ("e1",), ("e1",)]
    assert api.created == ["e0", "e2", "e3"]
    [(_, letter)] = list(buffer.dead_letters())
    assert (letter.reason, letter.event_id, letter.api_status) == ("not_confirmed", "e1", 201)
    assert letter.api_body == '{"created": 0, "eventIds": []}'  # the last answer, which left it out
    assert "3 answers" in letter.detail
    assert Record.from_bytes(letter.payload) == _record(1)  # replayable like api_rejected
    assert stats.count("events_unconfirmed") == 3 and stats.count("dead_letters", "not_confirmed") == 1
    assert stats.count("events_delivered") == 3
    assert ("e1", "dead_lettered", 'not_confirmed: {"created": 0, "eventIds": []}') in outcomes.seen


def test_flusher_answer_without_event_ids_counts_every_sent_event_and_warns_once(
        buffer: DiskBuffer, caplog: pytest.LogCaptureFixture) -> None:
    """An older server's answer (`created` only) keeps the old rule: every sent event is done; one warning."""
    buffer.append([_record(i) for i in range(250)], [])
    api, stats = FakeEventsApi(is_answering_without_event_ids=True), Stats()
    with caplog.at_level("WARNING", logger="mqtt_bridge.pipeline.flusher"), _running(buffer, api, stats=stats):
        wait_until(lambda: buffer.depth == 0, message="buffer drained")
    assert len(api.batch_calls()) == 3 and stats.count("events_delivered") == 250
    assert stats.count("events_unconfirmed") == 0
    assert sum("holds no eventIds" in record.getMessage() for record in caplog.records) == 1


def test_flusher_a_crash_between_answer_and_delete_resends_the_batch_and_loses_nothing(buffer: DiskBuffer) -> None:
    """When the delete after a confirmed answer fails (a crash stand-in), the batch stays and is sent again; the
    upsert by eventId absorbs the repeat."""
    buffer.append([_record(i) for i in range(5)], [])
    api, stats = FakeEventsApi(), Stats()
    complete = buffer.complete
    crashes = [RuntimeError("crash before the delete")]

    def crashing_complete(*args: object, **kwargs: object) -> None:
        if crashes:
            raise crashes.pop()
        complete(*args, **kwargs)  # type: ignore[arg-type]

    buffer.complete = crashing_complete  # type: ignore[method-assign]
    with _running(buffer, api, stats=stats):
        wait_until(lambda: buffer.depth == 0, timeout_s=10, message="delivered after the crash")
    assert [call.event_ids for call in api.batch_calls()] == [tuple(f"e{i}" for i in range(5))] * 2
    assert sorted(api.events) == [f"e{i}" for i in range(5)] and buffer.dead_letter_count == 0
    assert stats.count("flusher_errors") == 1 and stats.count("events_delivered") == 5


# --- 402 / 423: billing and quota stops (issue 12 item 2) ----------------------------------------------------------


def _billing(status: int = 402, message: str = "Monthly event quota reached",
             retry_after_s: float | None = None) -> BillingApiError:
    return BillingApiError(f"POST /batch: HTTP {status}", status, f'{{"error": "{message}"}}',
                           retry_after_s=retry_after_s)


def test_flusher_billing_stop_keeps_everything_and_reports_the_api_message_then_resumes(buffer: DiskBuffer) -> None:
    """402 dead-letters nothing: the records stay, the API is not ready with "billing/quota: <message>", retries
    wait `billing_retry_s` (not the short backoff), and delivery resumes at once when a retry succeeds."""
    buffer.append([_record(i) for i in range(6)], [])
    api, stats, outcomes = FakeEventsApi(), Stats(), _Outcomes()
    api.fail_batches(*[_billing() for _ in range(1000)])
    settings = FlushSettings(max_wait_s=0.0, retry_min_s=0.01, retry_max_s=0.05, billing_retry_s=0.3)
    with _running(buffer, api, settings, stats, outcomes) as flusher:
        wait_until(lambda: len(api.batch_calls()) >= 3, message="refused three times")
        assert not flusher.is_api_ready
        assert flusher.not_ready_reason == "billing/quota: Monthly event quota reached (HTTP 402)"
        assert buffer.depth == 6 and buffer.dead_letter_count == 0
        api.heal()  # the plan was upgraded
        # the flusher marks the API ready right after the commit that empties the buffer: wait for both
        wait_until(lambda: buffer.depth == 0 and flusher.is_api_ready, timeout_s=10,
                   message="delivered once billing is fixed")
        assert flusher.is_api_ready and flusher.not_ready_reason == "" and flusher.last_error == ""
    calls = api.batch_calls()
    gaps = [later.at_s - earlier.at_s for earlier, later in pairwise(calls)]
    assert all(gap >= 0.3 for gap in gaps)  # slow retries
    assert buffer.dead_letter_count == 0 and api.created == [f"e{i}" for i in range(6)]
    assert stats.count("api_retries", "402") == len(calls) - 1 and outcomes.auth_errors == 0
    assert all(status == "delivered" for _, status, _ in outcomes.seen)


def test_flusher_billing_stop_honours_retry_after(buffer: DiskBuffer) -> None:
    """A 423 with Retry-After is retried when the server said, not after the (long) billing interval."""
    buffer.append([_record(1)], [])
    api = FakeEventsApi()
    api.fail_batches(_billing(423, "Billing paused", retry_after_s=0.3))
    settings = FlushSettings(max_wait_s=0.0, retry_min_s=0.01, retry_max_s=0.05, billing_retry_s=300.0)
    with _running(buffer, api, settings):
        wait_until(lambda: buffer.depth == 0, timeout_s=10, message="delivered after Retry-After")
    first, second = api.batch_calls()
    assert 0.3 <= second.at_s - first.at_s < 5


def test_flusher_billing_stop_on_an_upload_keeps_the_record(buffer: DiskBuffer) -> None:
    """A 402 on an image upload is no upload_rejected: the record waits and goes out with its image later."""
    buffer.append([_record(0, tiny_png(8)), _record(1)], [])
    api, stats = FakeEventsApi(), Stats()
    api.upload_errors.append(BillingApiError("POST /upload: HTTP 402", 402, '{"error": "quota"}'))
    settings = FlushSettings(max_wait_s=0.0, retry_min_s=0.01, retry_max_s=0.05, billing_retry_s=0.05)
    with _running(buffer, api, settings, stats):
        wait_until(lambda: buffer.depth == 0, timeout_s=10, message="delivered after the billing stop")
    assert buffer.dead_letter_count == 0 and api.created == ["e0", "e1"]
    assert api.events["e0"]["images"] == [{"label": "cam", "sourceId": "src-1"}]


def test_flusher_auth_error_reports_an_auth_reason(buffer: DiskBuffer) -> None:
    """401/403 mark the API not ready with an `auth:` reason holding the API's message."""
    buffer.append([_record(1)], [])
    api = FakeEventsApi()
    api.fail_batches(*[AuthApiError("POST /batch: HTTP 403", 403, '{"error": "Insufficient permissions"}')
                       for _ in range(1000)])
    with _running(buffer, api) as flusher:
        wait_until(lambda: not flusher.is_api_ready, message="not ready")
        assert flusher.not_ready_reason == "auth: POST /batch: HTTP 403: Insufficient permissions"
        api.heal()
        wait_until(lambda: buffer.depth == 0, timeout_s=10, message="delivered")
        assert flusher.not_ready_reason == ""
def test_flusher_uploads_with_a_topic_derived_name_and_the_event_metadata(buffer: DiskBuffer) -> None:
    """Each upload carries `name` (topic and file name, safe characters, real extension) and `metadata` with the
    event's deviceId, streamId and route, so that the image is findable in the workspace (issue 12 item 7)."""
    record = Record(event={"eventId": "e5", "deviceId": "line1-cam2", "streamId": "cam2", "images": [{}]},
                    route="inspection", topic="plant/line1/cam2", received_at_s=1.0, image=tiny_png(8))
    buffer.append([record], [])
    api = FakeEventsApi()
    with _running(buffer, api):
        wait_until(lambda: buffer.depth == 0, message="delivered")
    [upload] = [call for call in api.calls if call.kind == "upload"]
    assert (upload.name, upload.title) == ("e5.png", "plant_line1_cam2_e5.png")
    assert upload.metadata == {"deviceId": "line1-cam2", "streamId": "cam2", "route": "inspection"}
