"""Faults of the Vision Events API, played by the emulator at run time: down (503, refused connections), hanging,
storing then resetting, 429 with Retry-After, 400 for a few events, a wrong key (reliability.md §5 T4-T9)."""

from __future__ import annotations

import itertools
import math
import os
import time

import pytest

from tests.faults.checker import EventIdOracle, assert_exactly_once
from tests.faults.conftest import FaultRig
from tests.faults.ledger import valid_stream
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 100
BROKER_QUEUE = 200  # Mosquitto's max_queued_messages in the outage case: the stream is many times larger


def _event_writes(rig: FaultRig, since_s: float = 0.0) -> list[tuple[float, int, str]]:
    """(arrival, status, path) of every API write the emulator saw since `since_s` (monotonic)."""
    return [(r.at_s, r.status, r.path) for r in rig.emulator.requests_log()
            if r.method == "POST" and r.path.startswith("/vision-events") and r.at_s >= since_s]


def test_api_down_longer_than_the_broker_queue_lasts_then_back(rig: FaultRig) -> None:
    """503, then refused connections, for many times the broker's queue: all buffered and acked, then drained."""
    broker = rig.broker(max_queued_messages=BROKER_QUEUE)
    total = rig.size(2000, 60_000)
    half = total // 2
    rig.emulator.set_faults(status_always=503)
    bridge = rig.bridge(broker, api={"connect_timeout_s": 1, "retry_max_s": 1}).start()
    messages = valid_stream("down", total, image_every=50)
    # A steady camera rate: the broker's queue only overflows if the bridge stops acking (as a bridge that
    # holds messages in memory until the API answers must do).
    with rig.publisher(broker, rate_per_s=500) as publisher:
        publisher.publish_all(messages[:half])
        assert publisher.wait_acked(60)
        wait_until(lambda: bridge.metric("buffer_depth") == half, timeout_s=60, message="first half buffered")
        rig.emulator.stop()  # now the port refuses connections
        rig.emulator.clear_faults()  # for when it comes back
        publisher.publish_all(messages[half:])
        assert publisher.wait_acked(60)
        ledger = publisher.ledger()
    wait_until(lambda: bridge.metric("buffer_depth") == total, timeout_s=60, message="everything buffered")
    wait_until(lambda: bridge.metrics().get("api_retries{network}", 0) > 0, timeout_s=10,
               message="a refused connection seen")
    metrics = bridge.metrics()
    rss_mib = bridge.memory_kb("VmRSS") / 1024
    assert rig.emulator.write_counts() == {}
    assert metrics.get("api_retries{503}", 0) > 0 and metrics.get("api_retries{network}", 0) > 0, metrics
    back_at = time.monotonic()
    rig.emulator.start()
    rig.wait_stored(total, timeout_s=120)
    drain_s = time.monotonic() - back_at
    writes = _event_writes(rig, back_at)
    batches = sum(1 for _, status, path in writes if path == "/vision-events/batch" and status == 201)
    first_s = writes[0][0] - back_at
    assert bridge.terminate() == 0
    report = rig.check(ledger, bridge)
    rig.record("T4 API down: 503 then connection refused, longer than the broker's queue lasts",
               f"{total} msgs, broker queue {BROKER_QUEUE}", report,
               f"all buffered at {rss_mib:.0f} MiB RSS; first request {first_s:.1f} s after the API came back; "
               f"drained in {drain_s:.1f} s with {batches} batches")
    assert_exactly_once(report)
    assert "dropped" not in broker.log_text().lower(), "the broker dropped messages: the bridge stopped acking"
    assert first_s <= 1 + 1 + 1, "backoff not capped at retry_max_s"  # retry_max_s + connect timeout + slack
    assert batches <= math.ceil(total / BATCH) + 5, "the backlog did not drain in full batches"
    assert rss_mib < 200


def test_api_that_never_answers_times_out_each_request_and_loses_nothing(rig: FaultRig) -> None:
    """An API that accepts and then hangs past the read timeout: every POST ends at its timeout; nothing stuck."""
    broker = rig.broker()
    total = rig.size(600, 5000)
    bridge = rig.bridge(broker, api={"read_timeout_s": 1, "retry_max_s": 0.5}).start()
    hang_s = rig.size(5, 60)
    rig.emulator.set_faults(delay_s=3)  # stores after the bridge gave up: the retry must overwrite
    started = time.monotonic()
    with rig.publisher(broker) as publisher:
        publisher.publish_all(valid_stream("hang", total))
        assert publisher.wait_acked(60)
        ledger = publisher.ledger()
    rig.pause(max(0.0, hang_s - (time.monotonic() - started)))
    timeouts = bridge.log_text().count("timed out")
    cleared_at = time.monotonic()
    rig.emulator.clear_faults()
    rig.wait_stored(total, timeout_s=120)
    recovered_s = time.monotonic() - cleared_at
    wait_until(lambda: bridge.metric("buffer_depth") == 0, timeout_s=30, message="buffer drained")
    assert bridge.terminate() == 0
    # the request in flight when the fault was cleared still ends at its timeout (and is stored late) after the
    # count above: the bound on rewrites takes every timeout of the run
    timeouts_in_run = bridge.log_text().count("timed out")
    report = rig.check(ledger, bridge)
    rig.record("T5 API accepts, then never answers (3 s > 1 s read timeout)", f"{total} msgs, {hang_s} s", report,
               f"{timeouts} requests ended at their timeout; all delivered {recovered_s:.1f} s after the fix")
    assert timeouts >= hang_s // 2, "requests did not end at their read timeout: the sender was stuck"
    assert_exactly_once(report, max_rewrites=timeouts_in_run * BATCH)
    assert report.rewrites > 0, "the hung requests were stored late; their retries must have overwritten them"
    assert recovered_s < 3 + 1 + 0.5 + 10  # a hung request still in flight, its timeout, one backoff, the backlog


def test_api_that_stores_then_resets_is_overwritten_not_duplicated(rig: FaultRig) -> None:
    """The API stores a batch, then resets the connection (ambiguous): the retry overwrites, never duplicates."""
    broker = rig.broker()
    total = rig.size(3000, 20_000)
    resets = max(3, total // BATCH // 10)  # about one batch in ten
    rig.emulator.set_faults(reset_after_commit=resets)
    bridge = rig.bridge(broker).start()
    with rig.publisher(broker) as publisher:
        publisher.publish_all(valid_stream("reset", total, image_every=25))
        assert publisher.wait_acked(60)
        ledger = publisher.ledger()
    rig.wait_stored(total)
    wait_until(lambda: rig.emulator.faults.reset_after_commit == 0, timeout_s=30, message="every reset played")
    wait_until(lambda: bridge.metric("buffer_depth") == 0, timeout_s=30, message="buffer drained")
    assert bridge.terminate() == 0
    seen = sum(1 for _, status, _ in _event_writes(rig) if status == 0)
    report = rig.check(ledger, bridge)
    rig.record("T6 API stores, then resets the connection", f"{total} msgs, {resets} resets", report,
               f"{seen} ambiguous outcomes, each retried as an overwrite")
    assert seen == resets
    assert_exactly_once(report, max_rewrites=resets * BATCH)
    assert report.rewrites > 0, "no retry overwrote: the fault was not exercised"
    assert max(rig.emulator.write_counts().values()) <= 1 + resets


def test_api_429_retry_after_is_honoured_before_any_new_request(rig: FaultRig) -> None:
    """429 with Retry-After for a while: no request comes before Retry-After elapsed; nothing lost."""
    broker = rig.broker()
    total = rig.size(500, 5000)
    retry_after_s = 2
    bridge = rig.bridge(broker).start()  # its own backoff is 0.05..0.5 s: only Retry-After makes the gaps long
    rig.emulator.set_faults(status_always=429, retry_after_s=retry_after_s)
    with rig.publisher(broker) as publisher:
        publisher.publish_all(valid_stream("ratelimit", total, image_every=50))
        assert publisher.wait_acked(60)
        ledger = publisher.ledger()
    rig.pause(rig.size(5, 30))
    rig.emulator.clear_faults()
    rig.wait_stored(total)
    assert bridge.terminate() == 0
    writes = _event_writes(rig)
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(writes) if earlier[1] == 429]
    report = rig.check(ledger, bridge)
    rig.record(f"T7 API 429 with Retry-After: {retry_after_s}", f"{total} msgs", report,
               f"{len(gaps)} refusals; shortest gap after one {min(gaps):.2f} s")
    assert len(gaps) >= 2
    assert min(gaps) >= retry_after_s, gaps
    assert_exactly_once(report)


def test_api_400_for_marked_events_dead_letters_exactly_those(rig: FaultRig) -> None:
    """The API refuses 1 % of the events with 400: exactly those dead-lettered, the rest delivered, no backoff."""
    broker = rig.broker()
    total = rig.size(2000, 10_000)
    bridge = rig.bridge(broker)
    messages = valid_stream("reject", total, image_every=50)
    oracle = EventIdOracle(bridge.raw)
    marked = {m.msg_id: oracle.event_id(m) for m in messages[7::100]}
    rig.emulator.set_faults(fail_event_ids={event_id for event_id in marked.values() if event_id})
    bridge.start()
    with rig.publisher(broker) as publisher:
        publisher.publish_all(messages)
        assert publisher.wait_acked(60)
        ledger = publisher.ledger()
    rig.wait_stored(total - len(marked))
    wait_until(lambda: bridge.metric("buffer_depth") == 0, timeout_s=30, message="buffer drained")
    retries = bridge.metric("api_retries")
    assert bridge.terminate() == 0
    letters = bridge.dead_letters()
    report = rig.check(ledger, bridge)
    rig.record("T8 API 400 for 1 % of the events", f"{total} msgs, {len(marked)} refused", report,
               f"exactly the refused ones dead-lettered with status 400; {retries:.0f} backoffs")
    assert report.dead_lettered_ids == set(marked)
    assert report.dead_lettered == {"api_rejected": len(marked)}
    assert all(letter.api_status == 400 and "rejected by fault injection" in letter.api_body for letter in letters)
    assert_exactly_once(report, dead_lettered=len(marked))
    assert report.delivered == total - len(marked)
    assert retries == 0, "a permanent 400 must not trigger backoff for the other events"


def test_api_wrong_key_kept_until_the_key_file_is_rotated(rig: FaultRig) -> None:
    """A wrong key in `api_key_file` keeps everything (not ready); rotating the file delivers it, no restart."""
    broker = rig.broker()
    total = rig.size(500, 5000)
    key_file = rig.tmp_path / "api-key"
    key_file.write_text("wrong-key\n")
    bridge = rig.bridge(broker, api={"api_key": None, "api_key_file": str(key_file)}).start()
    with rig.publisher(broker) as publisher:
        publisher.publish_all(valid_stream("key", total, image_every=50))
        assert publisher.wait_acked(60)
        ledger = publisher.ledger()
    wait_until(lambda: bridge.readyz()[1].get("api_ready") is False, timeout_s=30, message="not ready: key refused")
    assert bridge.readyz()[0] == 503
    wait_until(lambda: bridge.metric("buffer_depth") == total, timeout_s=30, message="everything kept")
    rig.pause(rig.size(2, 30))
    refused = sum(1 for _, status, _ in _event_writes(rig) if status == 401)
    assert rig.emulator.write_counts() == {}
    staged = rig.tmp_path / "api-key.new"  # rotate as a secret mount does: a new file renamed over the old
    staged.write_text("demo-key\n")
    os.replace(staged, key_file)
    rig.wait_stored(total)
    wait_until(lambda: bridge.readyz()[1].get("api_ready") is True, timeout_s=10, message="ready again")
    assert bridge.terminate() == 0
    report = rig.check(ledger, bridge)
    rig.record("T9 wrong API key, then the key file rotated", f"{total} msgs", report,
               f"{refused} requests refused with 401 meanwhile; no restart")
    assert refused >= 2
    assert_exactly_once(report)
