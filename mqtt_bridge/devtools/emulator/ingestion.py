"""Asynchronous ingestion warnings: what the API accepts with 201 but flags later, dropping the event's images.

Owns: `IMAGE_WARNINGS`, the rules of spec §3.3 and §3.4 that production applies after accepting an event (an image
reference that names no upload, §5 G8; an image with neither `sourceId` nor `inputSourceId`, while one with only
`inputSourceId` is fine, §6; more than 1000 items in an annotation list, §3.3; an annotation item not shaped as
§3.3 shows). A warning is stored on the event and returned by query (§5 G11). Pure, like `rules`.
"""

from __future__ import annotations

from collections.abc import Iterator

from .rules import (
    ANNOTATION_LISTS,
    EventContext,
    Rule,
    event_images,
    is_number,
    short_text,
)
from .values import JsonDict, JsonValue

__all__ = ["IMAGE_WARNINGS", "MAX_ANNOTATIONS_PER_LIST", "image_warnings"]

MAX_ANNOTATIONS_PER_LIST = 1000  # §3.3 (BUN)
_BOX_KEYS = ("x", "y", "width", "height", "confidence")


def _image_reference_known(event: JsonDict, context: EventContext) -> Iterator[str]:
    for index, image in enumerate(event_images(event)):
        # §6: the Workflow block sends an image with only `inputSourceId` when it has no output image
        if image.get("sourceId") is None and image.get("inputSourceId") is None:
            yield f"images[{index}] has neither sourceId nor inputSourceId"
        for key in ("sourceId", "inputSourceId"):
            value = image.get(key)
            if value is not None and not (isinstance(value, str) and context.is_known_upload(value)):
                yield f"images[{index}].{key} {short_text(value)} is not a known upload"


def _annotation_list_cap(event: JsonDict, _: EventContext) -> Iterator[str]:
    for index, image in enumerate(event_images(event)):
        for name in ANNOTATION_LISTS:
            items = image.get(name)
            if isinstance(items, list) and len(items) > MAX_ANNOTATIONS_PER_LIST:
                yield f"images[{index}].{name} has {len(items)} items, more than {MAX_ANNOTATIONS_PER_LIST}"


def _item_shape_problem(name: str, item: JsonValue) -> str | None:
    if not isinstance(item, dict) or not isinstance(item.get("class"), str):
        return "needs a string class"
    keys = ("confidence",) if name == "classifications" else _BOX_KEYS
    if not all(is_number(item.get(key)) for key in keys):
        return f"needs numeric {', '.join(key for key in keys if not is_number(item.get(key)))}"
    if name == "instanceSegmentations":
        points = item.get("points")
        if not isinstance(points, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(is_number(c) for c in p) for p in points):
            return "needs points as [[x, y], ...]"
    if name == "keypoints":
        keypoints = item.get("keypoints")
        if not isinstance(keypoints, list) or not all(
                isinstance(k, dict) and all(is_number(k.get(c)) for c in ("id", "x", "y")) for k in keypoints):
            return 'needs keypoints as [{"id", "x", "y"}, ...]'
    return None


def _annotation_item_shape(event: JsonDict, _: EventContext) -> Iterator[str]:
    for index, image in enumerate(event_images(event)):
        for name in ANNOTATION_LISTS:
            items = image.get(name)
            for position, item in enumerate(items if isinstance(items, list) else []):
                problem = _item_shape_problem(name, item)
                if problem is not None:
                    yield f"images[{index}].{name}[{position}] {problem}"
                    break


IMAGE_WARNINGS: tuple[Rule[JsonDict], ...] = (
    Rule("image-reference-known", "§5 G8, §6", _image_reference_known),
    Rule("annotation-list-cap", "§3.3", _annotation_list_cap),
    Rule("annotation-item-shape", "§3.3", _annotation_item_shape),
)


def image_warnings(event: JsonDict, context: EventContext) -> list[str]:
    """The ingestion warnings `IMAGE_WARNINGS` give an accepted event; any warning drops the event's images."""
    return [warning for rule in IMAGE_WARNINGS for warning in rule.check(event, context)]
