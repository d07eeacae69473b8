"""Buffer pressure: with drop_images, images go first and events keep flowing; otherwise acks stop as before."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import parse_config
from mqtt_bridge.images.shedding import ImageShedder
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.model.record import Record
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.pipeline.processor import Processor
from mqtt_bridge.pipeline.receiver import Receiver
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.transform.ingest import Ingestor
from tests.helpers import detection_message, tiny_png, wait_until


def _config(tmp_path: Path, on_full: str = "drop_images", **route_image: Any) -> BridgeConfig:
    (tmp_path / "buffer").mkdir(exist_ok=True)
    return parse_config({
        "api": {"api_key": "k"},
        "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": 1, "min_free_bytes": 1, "on_full": on_full},
        "routes": [{"name": "cams", "topic": "f/{line}/{camera}/detections", "use_case": "uc",
                    "image": route_image},
                   {"name": "other", "topic": "o/{camera}", "use_case": "uc"}]}, env={})


def _record(route: str = "cams", with_image: bool = True) -> Record:
    event: dict[str, Any] = {"eventId": "e1", "eventType": "quality_check", "useCaseId": "uc",
                             "timestamp": "2024-01-01T00:00:00.000Z", "customMetadata": {"line": "L1"}}
    if with_image:
        event["images"] = [{"label": "x", "objectDetections": [
            {"class": "dent", "x": 1, "y": 2, "width": 3, "height": 4, "confidence": 0.5}]}]
        event["displayImagePosition"] = 0
    return Record(event=event, route=route, topic="f/L1/cam1/detections", received_at_s=0.0,
                  image=tiny_png(1) if with_image else b"", image_name="a.png" if with_image else "")


def test_shedding_drops_images_keeps_events_and_notes_it(tmp_path: Path) -> None:
    """The event loses its image, keeps a summary of its boxes and says imageDropped: buffer_full."""
    stats = Stats()
    [shed] = ImageShedder(_config(tmp_path), stats)([_record()]) or []
    assert shed.image == b"" and "images" not in shed.event and "displayImagePosition" not in shed.event
    assert shed.event["customMetadata"] == {"line": "L1", "imageDropped": "buffer_full", "detections": 1,
                                            "classes": "dent"}
    assert stats.count("images_shed", "cams") == 1


def test_shedding_route_choice_and_disk_reserve_stop_acking(tmp_path: Path) -> None:
    """A route that keeps stop_acking, or a disk short of min_free_bytes, holds the group as before."""
    assert ImageShedder(_config(tmp_path, on_full="stop_acking", on_buffer_full="drop_images"),
                        Stats())([_record(), _record("other", with_image=False)]) is None
    config = _config(tmp_path)
    full_disk = config.model_copy(update={"buffer": config.buffer.model_copy(update={"min_free_bytes": 2**62})})
    assert ImageShedder(full_disk, Stats())([_record()]) is None
    assert not ImageShedder.is_needed(_config(tmp_path, on_full="stop_acking"))


def test_shedding_may_exceed_high_water_only_when_every_route_sheds(tmp_path: Path) -> None:
    """The receiver may go on over the mark only when every route drops images and the disk keeps its reserve."""
    config = _config(tmp_path)
    assert ImageShedder(config, Stats()).may_exceed_high_water()
    mixed = _config(tmp_path, on_full="stop_acking", on_buffer_full="drop_images")
    assert not ImageShedder(mixed, Stats()).may_exceed_high_water()
    full_disk = config.model_copy(update={"buffer": config.buffer.model_copy(update={"min_free_bytes": 2**62})})
    assert not ImageShedder(full_disk, Stats()).may_exceed_high_water()


@pytest.mark.parametrize("on_full", ["drop_images", "stop_acking"])
def test_shedding_over_high_water_through_receiver_and_processor(tmp_path: Path, on_full: str) -> None:
    """Over the mark the receiver logs and acks and the processor buffers events without images (drop_images), or
    the receiver acks nothing (stop_acking)."""
    config = _config(tmp_path, on_full=on_full)
    stats, stop = Stats(), threading.Event()
    acked: list[int] = []

    def acker(seq: int) -> Callable[[], bool]:
        def ack() -> bool:
            acked.append(seq)
            return True
        return ack

    with DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes) as buffer:
        shedder = ImageShedder(config, stats) if ImageShedder.is_needed(config) else None
        processor = Processor(Ingestor(Router(list(config.routes)), 2**20), buffer, stats, stop, threading.Event(),
                              max_in_flight=100, max_in_flight_bytes=2**20, shed_images=shedder)
        receiver = Receiver(buffer.raw, buffer.is_over_high_water, stats, stop, processor.wake, max_pending=100,
                            may_exceed_high_water=shedder.may_exceed_high_water if shedder else None)
        threads = [threading.Thread(target=receiver.run, name="t-receiver"),
                   threading.Thread(target=processor.run, name="t-processor")]
        for thread in threads:
            thread.start()
        try:
            for seq in range(3):
                receiver.offer(Inbound(b"f/L1/cam1/detections", detection_message(seq, with_image=True), seq + 1, 1,
                                       1, time.time(), acker=acker(seq)))
            if on_full == "drop_images":
                wait_until(lambda: len(acked) == 3 and buffer.depth == 3, timeout_s=10, message="three events")
                records = list(buffer.records())
                assert [r.image for r in records] == [b"", b"", b""]
                assert all(r.event["customMetadata"]["imageDropped"] == "buffer_full" for r in records)  # type: ignore[index,call-overload]
                assert not receiver.is_backpressured
            else:
                wait_until(lambda: receiver.is_backpressured, timeout_s=5, message="backpressure")
                assert acked == [] and buffer.depth == 0 and buffer.raw.depth == 0
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
