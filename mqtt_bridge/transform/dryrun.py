"""Dry run: what the bridge would send for given messages, without a broker, a buffer or the API.

Owns: running messages through a real `Ingestor` built from the config's routes (the same decoders, rules and
state as `run`, e.g. a Sparkplug BIRTH before its DATA), optionally with a pinned clock, and the printable outcome of
each message: its Vision Events, a summary of their images, the predictions that have no image to go on (the API
takes boxes on images only), the dead letter, dropped boxes and debounced events. A message may come with the
image its reference resolved to (`run_bytes`: a capture replay, `transform.replay`, pairs companion images).
`mqtt-bridge decode` prints it; the golden-file tests compare it. Must not touch the network or the disk.
"""

from __future__ import annotations

import time
from datetime import datetime

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.images.checks import content_hash, sniff_image_type
from mqtt_bridge.model.attachment import Attachment
from mqtt_bridge.model.values import JsonDict, JsonValue
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.ingest import Ingestor, IngestResult

__all__ = ["DryRun", "render"]


def render(result: IngestResult, topic: str) -> JsonDict:
    """The printable outcome of one message (what `mqtt-bridge decode` prints and golden files hold)."""
    out: JsonDict = {"topic": topic, "route": result.route, "events": [r.event for r in result.records]}
    images: list[JsonValue] = [
        {"eventId": record.event_id, "type": sniff_image_type(record.image), "bytes": len(record.image),
         "sha256": content_hash(record.image)}
        for record in result.records if record.image]
    if images:
        out["images"] = images
    if result.unattached:
        out["predictions_without_image"] = list(result.unattached)
    if result.dead_letter is not None:
        out["dead_letter"] = {"reason": result.dead_letter.reason, "detail": result.dead_letter.detail}
    if result.dropped_boxes:
        out["dropped_boxes"] = result.dropped_boxes
    if result.suppressed:
        out["suppressed"] = result.suppressed
    if result.timestamps_replaced:
        out["timestamps_replaced"] = result.timestamps_replaced
    return out


class DryRun:
    """Decodes messages as the bridge would, in order, keeping decoder state between them."""

    def __init__(self, routes: list[RouteConfig], max_payload_bytes: int, now: datetime | None = None) -> None:
        """`now` pins both the receive time of every message and the clock of the API's timestamp window."""
        self._now = now
        self._ingestor = Ingestor(Router(routes), max_payload_bytes, clock=(lambda: now) if now else None,
                                  collect_unattached=True)

    def run(self, topic: str, payload: bytes, received_at_s: float | None = None) -> JsonDict:
        """Decode one message and return its printable outcome."""
        if received_at_s is None:
            received_at_s = self._now.timestamp() if self._now is not None else time.time()
        return render(self._ingestor.process(topic.encode("utf-8"), payload, received_at_s), topic)

    def run_bytes(self, topic: bytes, payload: bytes, received_at_s: float,
                  attachment: Attachment | None = None) -> JsonDict:
        """Decode one message as heard (the topic as bytes), with the image its reference resolved to, if any."""
        result = self._ingestor.process(topic, payload, received_at_s, attachment)
        return render(result, topic.decode("utf-8", errors="replace"))
