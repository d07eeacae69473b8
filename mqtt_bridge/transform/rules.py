"""Event typing rules of a route: which predictions it keeps, the eventData they make, and the debounce.

Owns: the class allow-list, `min_confidence` and `max_predictions` filters; the `eventData` a decoded message gets
per event type (design §7 defaults, or the route's `quality_check`, `safety_alert` and `inventory_count` rules);
and the debounce state per route, device, stream and class (`debounce_s`), so that a 30 fps stream does not become
30 events a second, bounded in bytes (`DEBOUNCE_BYTES`, the least recently stamped key first out, counted as
`cache="debounce"`: a forgotten key only lets its next event through). Pure: no I/O, no clock of its own (callers
pass the time).
"""

from __future__ import annotations

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded
from mqtt_bridge.model.bounded import ByteLRU, text_bytes
from mqtt_bridge.model.event import MAX_METADATA_VALUE_CHARS
from mqtt_bridge.model.values import JsonDict

__all__ = ["DEBOUNCE_BYTES", "Debouncer", "event_classes", "event_data_for", "filter_predictions", "located"]

_MAX_DEBOUNCE_KEYS = 100_000
DEBOUNCE_BYTES = 16 * 2**20


def _confidence(item: JsonDict) -> float:
    value = item.get("confidence")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def located(decoded: Decoded) -> list[JsonDict]:
    """Every prediction with a box: detections, instance segmentations and keypoint detections."""
    return [*decoded.detections, *decoded.instance_segmentations, *decoded.keypoints]


def event_classes(decoded: Decoded) -> list[str]:
    """The distinct classes of an event's predictions (boxes first, then classifications), in order."""
    return list(dict.fromkeys(str(p["class"]) for p in (*located(decoded), *decoded.classifications)))


def filter_predictions(decoded: Decoded, route: RouteConfig) -> None:
    """Apply the route's class allow-list, `min_confidence` and `max_predictions` (highest confidence kept)."""
    allowed = set(route.classes) if route.classes is not None else None
    minimum = route.min_confidence

    def keep(items: list[JsonDict]) -> list[JsonDict]:
        if not items:  # most lists of most messages (once per list per message: issue 14)
            return items
        # a float confidence (what decoders give) is compared in place; anything else goes through `_confidence`
        kept = [p for p in items
                if ((type(c := p.get("confidence")) is float and c >= minimum) or _confidence(p) >= minimum)
                and (allowed is None or str(p.get("class")) in allowed)]
        if len(kept) > route.max_predictions:
            kept.sort(key=_confidence, reverse=True)
            kept = kept[:route.max_predictions]
        return kept

    decoded.detections = keep(decoded.detections)
    decoded.instance_segmentations = keep(decoded.instance_segmentations)
    decoded.keypoints = keep(decoded.keypoints)
    decoded.classifications = keep(decoded.classifications)


def event_data_for(event_type: str, decoded: Decoded, route: RouteConfig) -> JsonDict | None:
    """The `eventData` the predictions make; None means "no event" (a safety_alert without a matching detection)."""
    boxes = located(decoded)
    classes = [str(p["class"]) for p in boxes]
    if event_type == "quality_check":
        rule = route.quality_check
        if rule is None:
            return {"result": "fail" if classes else "pass"}
        failing = [p for p in (*boxes, *decoded.classifications)
                   if str(p["class"]) in rule.fail_classes and _confidence(p) >= rule.min_confidence]
        return {"result": "fail" if failing else "pass"}
    if event_type == "inventory_count":
        counting = route.inventory_count
        if counting is not None:
            return {"itemCount": classes.count(counting.count_class), "itemType": counting.count_class}
        data: JsonDict = {"itemCount": len(classes)}
        if classes and len(set(classes)) == 1:
            data["itemType"] = classes[0]
        return data
    if event_type == "safety_alert":
        return _safety_alert(decoded, route)
    if event_type == "custom":
        return {"value": ",".join(dict.fromkeys(classes))[:MAX_METADATA_VALUE_CHARS] or "none"}
    return {}


def _safety_alert(decoded: Decoded, route: RouteConfig) -> JsonDict | None:
    rule = route.safety_alert
    boxes = located(decoded)
    if rule is None or not rule.alert_types:
        if not boxes:
            return None
        alert: JsonDict = {"alertType": str(boxes[0]["class"])}
    else:
        matches = [p for p in (*boxes, *decoded.classifications) if str(p["class"]) in rule.alert_types]
        if not matches:
            return None
        best = max(matches, key=_confidence)
        alert = {"alertType": rule.alert_types[str(best["class"])]}
    if rule is not None and rule.severity is not None:
        alert["severity"] = rule.severity
    return alert


class Debouncer:
    """Remembers when each (route, device, stream, class) last produced an event. One thread at a time."""

    def __init__(self) -> None:
        self._last_s: ByteLRU[tuple[str, str, str, str], float] = ByteLRU(
            "debounce", DEBOUNCE_BYTES, lambda key, _: text_bytes(*key), _MAX_DEBOUNCE_KEYS)

    def is_suppressed(self, route: str, device: str, stream: str, classes: list[str], now_s: float,
                      window_s: float) -> bool:
        """Whether every class of this event (or "nothing detected") already had an event less than `window_s` ago.

        When not suppressed, the event's classes are stamped with `now_s`. A message arriving out of order (older
        than the last stamp) is never suppressed.
        """
        if window_s <= 0:
            return False
        keys = [(route, device, stream, name) for name in (classes or [""])]
        if all(self._is_recent(key, now_s, window_s) for key in keys):
            return True
        for key in keys:
            self._last_s.put(key, now_s)
        return False

    def _is_recent(self, key: tuple[str, str, str, str], now_s: float, window_s: float) -> bool:
        last = self._last_s.get(key)
        return last is not None and 0 <= now_s - last < window_s
