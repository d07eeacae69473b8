"""The canonical decoder's shortcut for plain messages gives exactly what the pydantic model gives, error or not."""

from __future__ import annotations

import copy

import pytest

from mqtt_bridge.decode import canonical
from mqtt_bridge.decode.base import Decoded
from mqtt_bridge.errors import DecodeError
from mqtt_bridge.model.values import JsonDict, JsonValue

_DET: JsonDict = {"class": "scratch", "confidence": 0.9, "x": 10.0, "y": 20.0, "width": 4.0, "height": 3.0}
_BASE: JsonDict = {"schema": canonical.SCHEMA_ID, "detections": [_DET], "metadata": {"seq": 1, "ok": True},
                   "event_data": {"externalId": "p-1"}}


def _with(**changes: JsonValue) -> JsonDict:
    doc = copy.deepcopy(_BASE)
    doc.update(changes)
    return doc


def _det(**changes: JsonValue) -> JsonDict:
    return _with(detections=[{**_DET, **changes}])


CASES: list[JsonValue] = [
    _BASE, {}, {"detections": []}, _with(schema=None), _with(schema="other/v2"), _with(unknown=1),
    _with(event_id="own-1"), _with(event_id=""), _with(event_id="x" * 257), _with(event_id=5),
    _with(device_id="d"), _with(stream_id=""), _with(event_type="safety_alert"), _with(event_type="nope"),
    _with(event_type=["quality_check"]), _with(timestamp="2026-01-02T03:04:05Z"), _with(timestamp="soon"),
    _with(timestamp=1767000000), _with(timestamp=1767000000.5), _with(timestamp=True),
    _with(metadata={str(i): i for i in range(101)}), _with(metadata={"k": [1]}), _with(metadata={"k": None}),
    _with(metadata={"k": 1.5, "s": "v", "b": False}), _with(event_data={"n": {"x": 1}}), _with(metadata=[]),
    _with(detections=None), _with(detections={"a": 1}), _with(detections=[None]), _with(detections=[[1]]),
    _det(x=10), _det(confidence=1), _det(confidence=1.7), _det(confidence=-0.2), _det(x="10"), _det(x=True),
    _det(x=None), _det(width=0.0), _det(height=-1.0), _det(**{"class": ""}), _det(**{"class": 7}),
    _det(**{"class": "c" * 257}), _det(extra=1), _with(detections=[{"class": "a", "confidence": 0.5}]),
    _det(x=1e308, y=1e308), _det(x=2**70), _with(classifications=[{"class": "ok", "confidence": 0.8}]),
    _with(classifications=[{"class": "ok", "confidence": "0.8"}]), _with(classifications=[{"class": "ok"}]),
    _with(image={"data": "aGVsbG8="}), _with(image=None), [1, 2], "text", None, 3,
]


def _outcome(decode: object, document: JsonValue, factor: float) -> Decoded | tuple[str, str]:
    assert callable(decode)
    try:
        result = decode(document, factor)
    except DecodeError as exc:
        return exc.reason.value, exc.detail
    assert isinstance(result, Decoded)
    return result


@pytest.mark.parametrize("factor", [1.0, 0.01])
@pytest.mark.parametrize("document", CASES)
def test_canonical_decode_of_any_message_equals_the_models_verdict(document: JsonValue, factor: float) -> None:
    """decode() (shortcut or not) returns the same Decoded, or the same dead-letter reason and detail, as the model."""
    assert _outcome(canonical.decode, document, factor) == _outcome(canonical._judged, document, factor)


def test_canonical_shortcut_takes_the_common_message() -> None:
    """A plain message is read without the model (the point of the shortcut): its result is the model's."""
    plain = canonical._plain(_BASE, 1.0)
    assert plain is not None and plain == canonical._judged(_BASE, 1.0)
    assert canonical._plain(_det(x="10"), 1.0) is None  # lax coercion: the model's call
