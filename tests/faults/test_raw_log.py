"""Faults of the raw-first data path (issue 14): detections acked and kept in the raw log while they wait for their
companion image survive kill -9 and are paired after the restart, exactly once."""

from __future__ import annotations

import signal

import pytest

from tests.faults.checker import assert_exactly_once
from tests.faults.conftest import FaultRig
from tests.faults.ledger import valid_stream
from tests.helpers import PahoClient, events_by_seq, tiny_png, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the test route with a companion image topic; a window far longer than the case, so that every detection is still
# waiting for its image when the bridge is killed and the images arrive only after the restart
COMPANION_ROUTES: list[dict[str, object]] = [{
    "name": "inspection", "topic": "t/factory/{line}/{camera}/detections", "format": "canonical",
    "use_case": "uc-a", "device_id": "{line}-{camera}", "stream_id": "{camera}", "event_type": "quality_check",
    "metadata": {"line": "{line}"},
    "image": {"companion": {"topic": "t/factory/{line}/{camera}/image/{frame}",
                            "key": "{line}/{camera}/{payload.metadata.seq}", "image_key": "{line}/{camera}/{frame}",
                            "window_s": 600, "max_parked": 10_000}}}]


def _image_topic(topic: str, seq: int) -> str:
    return topic.rsplit("/", 1)[0] + f"/image/{seq}"


def test_raw_log_sigkill_while_detections_wait_for_their_images_pairs_them_after_the_restart(rig: FaultRig) -> None:
    """Detections acked into the raw log wait for companion images; kill -9; the images are published while the
    bridge is down; after the restart (and a second kill -9 mid-pairing) every detection arrives once, with its
    image."""
    broker = rig.broker()
    total = rig.size(300, 3000)
    bridge = rig.bridge(broker, routes=COMPANION_ROUTES).start()
    publisher = rig.publisher(broker)
    stream = valid_stream("raw", total)
    publisher.start(stream)
    publisher.join()
    assert publisher.wait_acked(60)
    wait_until(lambda: bridge.metric("raw_log_depth") == total, timeout_s=60,
               message="every detection acked and waiting in the raw log")
    # the worker process finds the receiver's segments on disk and parks them a moment after they are logged
    wait_until(lambda: bridge.metric("images_parked") == total, timeout_s=30, message="every detection parked")
    assert rig.emulator.events() == []
    assert bridge.kill() == -signal.SIGKILL

    images = {message.msg_id: tiny_png(seq) for seq, message in enumerate(stream)}
    with PahoClient(broker, client_id="raw-images").connect() as camera:  # queued by the broker for the bridge
        camera.publish_many([(_image_topic(m.topic, seq), images[m.msg_id]) for seq, m in enumerate(stream)],
                            timeout_s=60)
    bridge.start()
    wait_until(lambda: len(rig.emulator.write_counts()) >= total // 3, timeout_s=120, interval_s=0.05,
               message="pairing and delivery under way")
    rig.pause(rig.rng.uniform(0.0, 0.5))
    assert bridge.kill() == -signal.SIGKILL  # mid-pairing: some pairs delivered, some committed, some raw
    bridge.start()
    rig.wait_stored(total, timeout_s=180)
    wait_until(lambda: bridge.metric("raw_log_depth") == 0, timeout_s=30, message="raw log empty")
    assert bridge.terminate() == 0, bridge.log_text()[-3000:]

    report = rig.check(publisher.ledger(), bridge)
    rig.record("raw log: SIGKILL while detections wait for companion images, images only after the restart",
               f"{total} msgs + {total} images", report, "a second SIGKILL mid-pairing")
    assert_exactly_once(report, max_rewrites=total)
    uploads = rig.emulator.uploads()
    by_seq = events_by_seq(rig.emulator.events(), run="raw")
    assert sorted(by_seq) == list(range(total))
    for seq, [event] in by_seq.items():
        [image] = event["images"]
        assert uploads[image["sourceId"]] == tiny_png(seq), f"event of seq {seq} carries another image"
