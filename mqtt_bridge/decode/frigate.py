"""Frigate NVR over MQTT: `<prefix>/events` (one event per tracked object) and `<prefix>/<camera>/<label>/snapshot`.

Owns: the translation of `frigate/events` messages (spec/payload-formats.md §3) into `Decoded`, and the state that
needs: which object ids were already sent (`send_on: new`) and the latest snapshot JPEG per camera and label.

- One event per tracked object (design §7): on its `end` message with the final `after.box` and `after.score`, or
  on its first message (`send_on: new`). The eventId is derived from Frigate's object id, so a redelivered or
  repeated message about the same object overwrites one event. Objects that end as `false_positive` send nothing.
- Boxes are `[x_min, y_min, x_max, y_max]` pixels at the camera's detect resolution; streamId is the camera.
- The snapshot topic carries raw JPEG bytes, cropped and resized by Frigate with the box drawn on: it is attached
  as a display image without boxes (they would not fit it). Other Frigate topics (counts, stats, reviews) send
  nothing.
- Memory is bounded in bytes: the latest snapshots together in `SNAPSHOTS_BYTES` (`cache="frigate_snapshots"`, the
  least recently updated camera/label first out) and the ids already sent in `SENT_IDS_BYTES`
  (`cache="frigate_ids"`).
"""

from __future__ import annotations

from mqtt_bridge.config.format_options import FrigateOptions
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded, Message, confidence_factor
from mqtt_bridge.decode.fields import add_box, center_box, number, optional_text, text, timestamp
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.images.checks import sniff_image_type
from mqtt_bridge.model.bounded import ByteLRU, text_bytes
from mqtt_bridge.model.values import JsonDict, JsonValue

__all__ = ["SENT_IDS_BYTES", "SNAPSHOTS_BYTES", "FrigateDecoder", "is_event", "is_snapshot"]

_TYPES = ("new", "update", "end")
_MAX_REMEMBERED_IDS = 10_000
_MAX_SNAPSHOTS = 1000
SNAPSHOTS_BYTES = 64 * 2**20  # the latest snapshot per camera and label, together (one may be 4 MiB)
SENT_IDS_BYTES = 4 * 2**20
_SNAPSHOT_LEVELS = 4  # <prefix>/<camera>/<label>/snapshot


def is_event(topic: str, document: JsonValue) -> bool:
    """Fingerprint: the topic ends with /events and the keys type, before and after are there (spec §8)."""
    return (topic.endswith("/events") and isinstance(document, dict)
            and {"type", "before", "after"} <= document.keys())


def is_snapshot(topic: str, payload: bytes) -> bool:
    """A `<prefix>/<camera>/<label>/snapshot` message with image bytes."""
    return (topic.endswith("/snapshot") and len(topic.split("/")) >= _SNAPSHOT_LEVELS
            and sniff_image_type(payload) is not None)


class FrigateDecoder:
    """Frigate as a route decoder; keeps the ids already sent and the latest snapshots."""

    def __init__(self, route: RouteConfig) -> None:
        self._options: FrigateOptions = route.frigate
        self._factor = confidence_factor(route)
        self._sent: ByteLRU[str, bool] = ByteLRU("frigate_ids", SENT_IDS_BYTES, lambda key, _: text_bytes(key),
                                                 _MAX_REMEMBERED_IDS)
        self._snapshots: ByteLRU[tuple[str, str], tuple[bytes, float]] = ByteLRU(
            "frigate_snapshots", SNAPSHOTS_BYTES, lambda key, value: text_bytes(*key, value[0]), _MAX_SNAPSHOTS)

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one message: a tracked-object event, a snapshot to remember, or nothing."""
        levels = message.topic.split("/")
        if levels[-1] == "snapshot" and len(levels) >= _SNAPSHOT_LEVELS:
            self._remember_snapshot(levels[-3], levels[-2], message)
            return []
        if levels[-1] != "events":
            return []  # counts, stats, availability, reviews: nothing to send
        document = message.json()
        if not isinstance(document, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "a Frigate event must be a JSON object")
        kind = document.get("type")
        after = document.get("after")
        if kind not in _TYPES:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "type must be new, update or end")
        if not isinstance(after, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "after must be an object")
        object_id = text(after.get("id"), "after.id")
        if self._options.send_on == "end":
            if kind != "end":
                return []
        elif object_id in self._sent:
            return []
        if after.get("false_positive") is True:
            return []
        decoded = self._event(after, object_id, message.received_at_s)
        if self._options.send_on == "new":
            self._sent.put(object_id, True)
        return [decoded]

    def _remember_snapshot(self, camera: str, label: str, message: Message) -> None:
        if not self._options.snapshot or sniff_image_type(message.payload) is None:
            return
        self._snapshots.put((camera, label), (message.payload, message.received_at_s))

    def _event(self, after: JsonDict, object_id: str, received_at_s: float) -> Decoded:
        label = text(after.get("label"), "after.label")
        camera = text(after.get("camera"), "after.camera")
        raw_box = after.get("box")
        if not isinstance(raw_box, list) or len(raw_box) != 4:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "after.box must be [x_min, y_min, x_max, y_max]")
        corners = tuple(number(v, f"after.box[{i}]") for i, v in enumerate(raw_box))
        score = after.get("score")
        confidence = number(score if score is not None else after.get("top_score"), "after.score") * self._factor
        out = Decoded(timestamp=timestamp(after.get("frame_time"), "after.frame_time"), stream_id=camera,
                      key=f"frigate:{object_id}")
        add_box(out, label, center_box("xyxy", (corners[0], corners[1], corners[2], corners[3])), confidence)
        out.metadata["frigateId"] = object_id
        sub_label = after.get("sub_label")
        name = sub_label[0] if isinstance(sub_label, list) and sub_label else sub_label
        if optional_text(name) is not None:
            out.metadata["subLabel"] = optional_text(name)
        top_score = after.get("top_score")
        if isinstance(top_score, int | float) and not isinstance(top_score, bool):
            out.metadata["topScore"] = float(top_score)
        zones = after.get("entered_zones")
        if isinstance(zones, list) and zones:
            out.metadata["zones"] = ",".join(str(z) for z in zones if isinstance(z, str))[:1000]
        snapshot = self._snapshots.get((camera, label))
        if snapshot is not None and 0 <= received_at_s - snapshot[1] <= self._options.snapshot_max_age_s:
            out.image, out.image_name, out.boxes_fit_image = snapshot[0], f"{camera}-{label}.jpg", False
        return out
