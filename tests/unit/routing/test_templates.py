"""The one template grammar: topic templates (levels, wildcards, filters) and value templates (placeholders, escape)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from mqtt_bridge.errors import ConfigError, DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonValue
from mqtt_bridge.routing.templates import TopicTemplate, ValueTemplate, has_placeholder

_LEVELS = frozenset({"line", "camera"})


def _refuse_dots(value: str) -> str:
    if value in (".", ".."):
        raise DecodeError(DeadLetterReason.IMAGE_PATH_REFUSED, f"{value!r} is not a plain name")
    return value


def test_templates_topic_named_levels_subscribe_as_plus_and_capture_in_order() -> None:
    """{name} fills one level (subscribed as +); the names are kept in topic order."""
    template = TopicTemplate("factory/{line}/{camera}/detections", "t")
    assert template.subscription == "factory/+/+/detections"
    assert template.level_names == ("line", "camera")
    assert template.names == frozenset({"line", "camera"})
    assert template.match(["factory", "L1", "cam2", "detections"]) == {"line": "L1", "camera": "cam2"}
    assert template.match(["factory", "L1", "cam2", "other"]) is None
    assert template.match(["factory", "L1", "cam2"]) is None
    assert template.match(["factory", "L1", "cam2", "detections", "x"]) is None


def test_templates_topic_last_star_level_captures_the_rest_and_the_parent() -> None:
    """{name*} as the last level subscribes as # and captures the remaining levels ('' for the parent itself)."""
    template = TopicTemplate("vision/{site}/{rest*}", "t")
    assert template.subscription == "vision/+/#"
    assert template.match(["vision", "hh", "a", "b", "c"]) == {"site": "hh", "rest": "a/b/c"}
    assert template.match(["vision", "hh"]) == {"site": "hh", "rest": ""}


def test_templates_topic_bare_wildcards_match_without_capturing() -> None:
    """+ and # match like MQTT filters and capture nothing."""
    template = TopicTemplate("a/+/b/#", "t")
    assert template.subscription == "a/+/b/#"
    assert template.names == frozenset()
    assert template.match(["a", "1", "b", "x", "y"]) == {}
    assert template.match(["a", "1", "c", "x"]) is None


@pytest.mark.parametrize(("topic", "fragment"), [
    ("a/{rest*}/b", "must be the last level"),
    ("a/#/b", "# must be the last level"),
    ("a/x{y}", "must fill a whole topic level"),
    ("a/b+", "must fill a whole topic level"),
    ("a/{x}/{x}", "used twice"),
    ("$SYS/{x}", "broker-internal"),
])
def test_templates_topic_bad_templates_are_config_errors_at_their_key(topic: str, fragment: str) -> None:
    """Every problem of a topic template is a ConfigError naming the config key."""
    with pytest.raises(ConfigError) as info:
        TopicTemplate(topic, "routes[0].topic")
    assert [path for path, _ in info.value.problems] == ["routes[0].topic"]
    assert fragment in info.value.problems[0][1]


def test_templates_value_renders_levels_topic_and_payload_scalars() -> None:
    """Levels, {topic} and {payload.path} are filled; booleans render in JSON spelling; list indexes work."""
    template = ValueTemplate("{line}-{camera}@{topic}#{payload.a.0.b}:{payload.ok}", _LEVELS, "t")
    assert not template.is_constant
    rendered = template.render({"line": "L1", "camera": "c2"}, "f/L1/c2", {"a": [{"b": 7}], "ok": True})
    assert rendered == "L1-c2@f/L1/c2#7:true"


def test_templates_value_without_placeholders_is_constant() -> None:
    """A plain string renders as itself, whatever the message."""
    template = ValueTemplate("line-one", _LEVELS, "t")
    assert template.is_constant
    assert template.render({}, "x", None) == "line-one"


@pytest.mark.parametrize("payload", [{}, {"id": None}, {"id": {"x": 1}}, {"id": [1]}, None])
def test_templates_value_missing_or_non_scalar_field_raises_or_gives_none(payload: JsonValue) -> None:
    """A payload field that is missing or not a scalar: render raises DecodeError naming it, render_or_none None."""
    template = ValueTemplate("x/{payload.id}", _LEVELS, "t")
    with pytest.raises(DecodeError) as info:
        template.render({}, "t", payload)
    assert info.value.reason == "template_field_missing"
    assert "payload.id" in info.value.detail
    assert template.render_or_none({}, "t", payload) is None


def test_templates_value_unknown_placeholders_are_all_reported_with_the_known_levels() -> None:
    """Each unknown placeholder is one problem at the key; the message lists the route's levels."""
    with pytest.raises(ConfigError) as info:
        ValueTemplate("{nope}/{payload.}/{payload.a..b}/{line}", _LEVELS, "routes[0].use_case")
    problems = info.value.problems
    assert [path for path, _ in problems] == ["routes[0].use_case"] * 3
    assert problems[0][1] == "unknown placeholder {nope} (topic levels: camera, line; or topic, payload.<path>)"
    with pytest.raises(ConfigError) as none_known:
        ValueTemplate("{x}", frozenset(), "k")
    assert "(topic levels: none;" in none_known.value.problems[0][1]


def test_templates_escape_applies_to_every_inserted_value_not_to_the_text() -> None:
    """The escape hook (here URL percent-encoding) sees levels, the topic and payload values; literal text stays."""
    template = ValueTemplate("http://cam/{camera}/{payload.id}?t={topic}", _LEVELS, "t",
                             escape=lambda value: quote(value, safe=""))
    rendered = template.render_or_none({"camera": "a b"}, "f/x", {"id": "1/2"})
    assert rendered == "http://cam/a%20b/1%2F2?t=f%2Fx"


def test_templates_escape_refusal_raises_even_when_another_field_is_missing() -> None:
    """A value the escape refuses raises its DecodeError; render_or_none does not hide it behind a missing field."""
    template = ValueTemplate("{payload.missing}/{camera}.jpg", _LEVELS, "t", escape=_refuse_dots)
    with pytest.raises(DecodeError) as info:
        template.render_or_none({"camera": ".."}, "t", {})
    assert info.value.reason == "image_path_refused"
    assert template.render_or_none({"camera": "c1"}, "t", {}) is None
    assert template.render_or_none({"camera": "c1"}, "t", {"missing": "m"}) == "m/c1.jpg"


def test_templates_has_placeholder_finds_any_braced_name() -> None:
    """has_placeholder is what config uses to refuse an image template that names the same image every time."""
    assert has_placeholder("http://cam/{payload.id}.jpg")
    assert has_placeholder("{x}")
    assert not has_placeholder("http://cam/latest.jpg")
