"""Event typing rules per route: quality_check / safety_alert / inventory_count rules, filters, scale, debounce."""

from __future__ import annotations

import time

import orjson
import pytest

from mqtt_bridge.config.load import parse_config
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import ConfigError
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.ingest import Ingestor, IngestResult

TOPIC = b"factory/L1/cam2/detections"


def _det(label: str, confidence: float, x: float = 30) -> JsonDict:
    return {"class": label, "confidence": confidence, "x": x, "y": 20, "width": 10, "height": 8}


def _process(route: dict[str, object], detections: list[JsonDict], received_at_s: float | None = None,
             ingestor: Ingestor | None = None) -> IngestResult:
    ingestor = ingestor or _ingestor(route)
    return ingestor.process(TOPIC, orjson.dumps({"detections": detections}), received_at_s or time.time())


def _ingestor(route: dict[str, object]) -> Ingestor:
    base: dict[str, object] = {"topic": "factory/{line}/{camera}/detections", "use_case": "uc",
                               "device_id": "{line}-{camera}"}
    return Ingestor(Router([RouteConfig.model_validate(base | route)]), 64 * 1024)


def _data(result: IngestResult) -> object:
    assert result.dead_letter is None, result.dead_letter
    [record] = result.records
    return record.event["eventData"]


def test_rules_quality_check_fails_only_on_configured_classes_above_threshold() -> None:
    """quality_check.fail_classes + min_confidence decide pass/fail; other classes still travel with the event."""
    route: dict[str, object] = {"quality_check": {"fail_classes": ["scratch"], "min_confidence": 0.6}}
    assert _data(_process(route, [_det("dust", 0.99), _det("scratch", 0.5)])) == {"result": "pass"}
    assert _data(_process(route, [_det("dust", 0.99), _det("scratch", 0.6)])) == {"result": "fail"}


def test_rules_safety_alert_maps_the_most_confident_class_and_skips_others() -> None:
    """safety_alert.alert_types picks the best matching detection; no match means no event (not a dead letter)."""
    route: dict[str, object] = {"event_type": "safety_alert", "safety_alert": {
        "alert_types": {"person": "person_in_zone", "no_helmet": "missing_ppe"}, "severity": "medium"}}
    data = _data(_process(route, [_det("person", 0.7), _det("no_helmet", 0.9), _det("box", 1.0)]))
    assert data == {"alertType": "missing_ppe", "severity": "medium"}
    result = _process(route, [_det("box", 1.0)])
    assert result.records == [] and result.dead_letter is None


def test_rules_inventory_count_counts_one_class() -> None:
    """inventory_count.count_class counts that class only, and names it as itemType."""
    route: dict[str, object] = {"event_type": "inventory_count", "inventory_count": {"count_class": "bottle"}}
    assert _data(_process(route, [_det("bottle", 0.9), _det("cap", 0.9), _det("bottle", 0.8)])) == {
        "itemCount": 2, "itemType": "bottle"}


def test_rules_class_filter_and_percent_scale() -> None:
    """`classes` keeps only listed classes; confidence_scale percent divides by 100 before min_confidence."""
    route: dict[str, object] = {"classes": ["scratch"], "confidence_scale": "percent", "min_confidence": 0.5}
    result = _process(route, [_det("scratch", 87), _det("scratch", 20), _det("dust", 99)])
    [record] = result.records
    assert record.event["customMetadata"] == {"detections": 1, "classes": "scratch"}


def test_rules_debounce_keeps_one_event_per_device_and_class_per_window() -> None:
    """A 30 fps stream of the same class gives one event per debounce_s; a new class or device passes at once."""
    ingestor = _ingestor({"debounce_s": 1.0})
    start = time.time()
    results = [_process({}, [_det("scratch", 0.9, x=10 + i)], start + i / 30, ingestor) for i in range(30)]
    assert sum(len(r.records) for r in results) == 1
    assert sum(r.suppressed for r in results) == 29
    assert all(r.dead_letter is None for r in results)
    assert len(_process({}, [_det("dent", 0.9)], start + 0.5, ingestor).records) == 1
    assert len(_process({}, [_det("scratch", 0.9)], start + 1.01, ingestor).records) == 1
    other = ingestor.process(b"factory/L2/cam2/detections", orjson.dumps({"detections": [_det("scratch", 0.9)]}),
                             start + 1.02)
    assert len(other.records) == 1
    assert len(_process({}, [], start + 1.03, ingestor).records) == 1  # "nothing detected" is a class of its own


def test_rules_config_requires_the_format_sections() -> None:
    """format generic without a mapping, or a Sparkplug metric without one, is a config error with its path."""
    routes = [{"topic": "a/b", "use_case": "u", "format": "generic"},
              {"topic": "c/d", "use_case": "u", "format": "sparkplug", "sparkplug": {"metrics": [{"name": "M"}]}},
              {"topic": "e/f", "use_case": "u", "safety_alert": {"severity": "urgent"}}]
    with pytest.raises(ConfigError) as info:
        parse_config({"api": {"api_key": "k"}, "routes": routes}, env={})
    paths = [path for path, _ in info.value.problems]
    assert paths == ["routes[0]", "routes[1]", "routes[2].safety_alert.severity"], info.value.problems
