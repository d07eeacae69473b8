"""Topic templates, subscriptions and value templates."""

from __future__ import annotations

import pytest

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import ConfigError, DecodeError, RouteNotFound
from mqtt_bridge.routing.router import Router


def _router(*routes: dict[str, object]) -> Router:
    return Router([RouteConfig.model_validate(r) for r in routes])


def test_routing_captures_named_levels() -> None:
    """{name} captures one level and renders into value templates."""
    router = _router({"topic": "factory/{line}/{camera}/detections", "use_case": "uc",
                      "device_id": "{line}-{camera}"})
    route, captures = router.match("factory/L1/cam2/detections")
    assert captures == {"line": "L1", "camera": "cam2"}
    assert route.device_id is not None
    assert route.device_id.render(captures, "t", None) == "L1-cam2"


def test_routing_first_match_wins_and_subscriptions_are_deduplicated() -> None:
    """Routes are tried in order; identical filters are subscribed once."""
    router = _router({"topic": "a/{x}/b", "use_case": "first", "name": "first"},
                     {"topic": "a/{y}/b", "use_case": "second", "name": "second"},
                     {"topic": "a/#", "use_case": "rest", "name": "rest"})
    assert router.subscriptions() == ["a/+/b", "a/#"]
    assert router.match("a/1/b")[0].label == "first"
    assert router.match("a/1/c")[0].label == "rest"


def test_routing_multi_level_capture() -> None:
    """{name*} as the last level captures the remaining levels."""
    router = _router({"topic": "vision/{site}/{rest*}", "use_case": "uc"})
    assert router.subscriptions() == ["vision/+/#"]
    assert router.match("vision/hh/a/b/c")[1] == {"site": "hh", "rest": "a/b/c"}


def test_routing_unmatched_topic_raises_route_not_found() -> None:
    """A topic no route matches is a RouteNotFound (dead-lettered by ingest)."""
    router = _router({"topic": "a/{x}", "use_case": "uc"})
    with pytest.raises(RouteNotFound):
        router.match("a/1/2")
    with pytest.raises(RouteNotFound):
        router.match("b/1")


def test_routing_payload_placeholders_render_and_fail_clearly() -> None:
    """{payload.path} reads the payload; a missing field is a DecodeError naming it."""
    router = _router({"topic": "a/{x}", "use_case": "uc-{payload.meta.line}"})
    route, captures = router.match("a/1")
    assert route.use_case.render(captures, "a/1", {"meta": {"line": 7}}) == "uc-7"
    with pytest.raises(DecodeError) as info:
        route.use_case.render(captures, "a/1", {"meta": {}})
    assert "payload.meta.line" in str(info.value)


@pytest.mark.parametrize(("topic", "use_case", "fragment"), [
    ("a/{x}y/b", "uc", "whole topic level"),
    ("a/#/b", "uc", "# must be the last level"),
    ("a/{x*}/b", "uc", "must be the last level"),
    ("a/{x}/{x}", "uc", "used twice"),
    ("$SYS/a", "uc", "broker-internal"),
    ("a/{x}", "{nope}", "unknown placeholder"),
])
def test_routing_bad_templates_are_config_errors(topic: str, use_case: str, fragment: str) -> None:
    """Template mistakes are reported as config errors with the route's key path."""
    with pytest.raises(ConfigError) as info:
        _router({"topic": topic, "use_case": use_case})
    assert any(path.startswith("routes[0].") and fragment in msg for path, msg in info.value.problems)


def test_routing_operator_feedback_route_without_related_event_id_is_a_config_error_with_its_key_path() -> None:
    """An operator_feedback route must say which event the feedback is about; a constant feedback must be one of
    the documented values; every problem is reported with its key path."""
    with pytest.raises(ConfigError) as info:
        _router({"topic": "fb/{line}", "use_case": "uc", "event_type": "operator_feedback"},
                {"topic": "fb2/{line}", "use_case": "uc", "event_type": "operator_feedback",
                 "operator_feedback": {"related_event_id": "{payload.ref}", "feedback": "wrong"}})
    assert [path for path, _ in info.value.problems] == ["routes[0].operator_feedback.related_event_id",
                                                         "routes[1].operator_feedback.feedback"]
    assert "correct, incorrect, inconclusive" in info.value.problems[1][1]
    route = _router({"topic": "fb/{line}", "use_case": "uc", "event_type": "operator_feedback",
                     "operator_feedback": {"related_event_id": "{payload.ref}", "feedback": "{payload.verdict}",
                                           "comment": "line {line}"}}).routes[0]
    assert sorted(route.feedback) == ["comment", "feedback", "relatedEventId"]


def test_routing_constant_event_data_that_must_be_a_string_is_a_config_error() -> None:
    """`event_data: {value: 42}` would get the whole batch refused at the API: a config error (per event type;
    every type's string fields when the payload decides the type). Counts and strings are fine."""
    with pytest.raises(ConfigError) as info:
        _router({"topic": "c/{x}", "use_case": "uc", "event_type": "custom", "event_data": {"value": 42}},
                {"topic": "d/{x}", "use_case": "uc", "event_data": {"itemType": True}},
                {"topic": "e/{x}", "use_case": "uc", "event_type": "inventory_count",
                 "event_data": {"itemCount": 3, "location": "dock {x}"}})
    assert [path for path, _ in info.value.problems] == ["routes[0].event_data.value", "routes[1].event_data.itemType"]
