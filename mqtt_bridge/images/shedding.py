"""Shedding images under buffer pressure: over the high-water mark, images go first; events are never dropped.

Owns: the `buffer.on_full` / `routes[].image.on_buffer_full` policy. With `drop_images`, records the processor
commits while the buffer is over `buffer.max_bytes` go without their images: each event loses its `images` and says
so in `customMetadata.imageDropped = "buffer_full"`, with its boxes summarised as for events without images
(`detections`, `classes`), and `images_shed_total` counts it. The receiver goes on logging and acking raw messages
over the mark only when every route sheds (`may_exceed_high_water`): it does not route messages, so with any route
that keeps `stop_acking` it holds the acks (issue 14). The hard stop stays: with less than `buffer.min_free_bytes`
free on the disk, nothing more is acked. Pure apart from one `statvfs` per group while over the mark.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.model.event import MAX_METADATA_KEYS, MAX_METADATA_VALUE_CHARS
from mqtt_bridge.model.record import Record
from mqtt_bridge.model.values import JsonDict, JsonValue
from mqtt_bridge.observe.stats import Stats

__all__ = ["ImageShedder"]

log = logging.getLogger(__name__)

_NOTE = "buffer_full"
_LOG_EVERY_S = 60.0


def _routes_policy(config: BridgeConfig) -> dict[str, str]:
    return {route.label: route.image.on_buffer_full or config.buffer.on_full for route in config.routes}


def _without_image(record: Record) -> Record:
    event = {k: v for k, v in record.event.items() if k not in ("images", "displayImagePosition")}
    metadata: JsonDict = dict(record.event.get("customMetadata") or {})  # type: ignore[arg-type]
    labels: list[str] = []
    count = 0
    images = record.event.get("images")
    for image in images if isinstance(images, list) else []:
        if not isinstance(image, dict):
            continue
        for name in ("objectDetections", "instanceSegmentations", "keypoints", "classifications"):
            items = image.get(name)
            if isinstance(items, list):
                labels.extend(str(i.get("class")) for i in items if isinstance(i, dict))
                count += len(items) if name != "classifications" else 0
    if len(metadata) <= MAX_METADATA_KEYS - 3:
        metadata["imageDropped"] = _NOTE
        if labels:
            metadata.setdefault("detections", count)
            classes: JsonValue = ",".join(dict.fromkeys(labels))[:MAX_METADATA_VALUE_CHARS]
            metadata.setdefault("classes", classes)
    if metadata:
        event["customMetadata"] = metadata
    return dataclasses.replace(record, event=event, image=b"", image_name="")


class ImageShedder:
    """Called by the intake for a group while the buffer is over its high-water mark."""

    def __init__(self, config: BridgeConfig, stats: Stats) -> None:
        self._policy = _routes_policy(config)
        self._default = config.buffer.on_full
        self._path: Path = config.buffer.path
        self._min_free_bytes = config.buffer.min_free_bytes
        self._stats = stats
        self._last_log = 0.0
        self._shed_since_log = 0

    @staticmethod
    def is_needed(config: BridgeConfig) -> bool:
        """Whether any route drops images under pressure (else the intake keeps today's behaviour only)."""
        return "drop_images" in _routes_policy(config).values()

    def may_exceed_high_water(self) -> bool:
        """For the receiver over the mark: True when every route drops images first and the disk keeps its
        reserve, so the raw messages may still be logged and acked (the processor sheds their images)."""
        if any(self._policy.get(label, self._default) != "drop_images" for label in self._policy):
            return False
        try:
            return shutil.disk_usage(self._path).free >= self._min_free_bytes
        except OSError:
            return False

    def __call__(self, records: list[Record]) -> list[Record] | None:
        """The group with its images dropped, or None when they must stay (a route that keeps stop_acking, or the
        disk short of its reserve: see the module docstring)."""
        if any(self._policy.get(record.route, self._default) != "drop_images" for record in records):
            return None
        try:
            if shutil.disk_usage(self._path).free < self._min_free_bytes:
                return None
        except OSError:
            return None
        out = []
        for record in records:
            if record.image or record.event.get("images"):
                out.append(_without_image(record))
                self._stats.add("images_shed", label=record.route)
                self._shed_since_log += 1
            else:
                out.append(record)
        now = time.monotonic()
        if self._shed_since_log and now - self._last_log >= _LOG_EVERY_S:
            log.warning("buffer over its high-water mark: buffering events without their images images_shed=%d",
                        self._shed_since_log)
            self._last_log, self._shed_since_log = now, 0
        return out
