"""Topic-pattern inference: varying levels become named placeholders, groups stay apart, specific first."""

from __future__ import annotations

from mqtt_bridge.discover.patterns import infer_patterns, placeholder_name
from mqtt_bridge.routing.templates import TopicTemplate


def test_patterns_varying_levels_become_placeholders_named_after_their_values() -> None:
    """line1/line2 and cam1/cam2 vary: factory/{line}/{cam}/detections, with their example values."""
    topics = {t: "canonical" for t in ("factory/line1/cam1/detections", "factory/line1/cam2/detections",
                                       "factory/line2/cam1/detections")}
    [pattern] = infer_patterns(topics)
    assert pattern.template == "factory/{line}/{cam}/detections"
    assert pattern.values == {"line": ["line1", "line2"], "cam": ["cam1", "cam2"]}
    assert pattern.captures("factory/line2/cam1/detections") == {"line": "line2", "cam": "cam1"}
    assert pattern.captures("factory/line2/cam1/other") is None


def test_patterns_group_by_root_level_count_and_kind() -> None:
    """Topics with another first level, depth or kind of content get patterns of their own."""
    topics = {"factory/l1/cam1/detections": "canonical", "factory/l2/cam1/detections": "canonical",
              "safety/dock1/cam1/detections": "canonical", "factory/l1/cam1/image/7": "image",
              "factory/l3/cam1/detections": "roboflow"}
    templates = [p.template for p in infer_patterns(topics)]
    assert templates == ["factory/l1/cam1/image/7", "factory/l3/cam1/detections", "safety/dock1/cam1/detections",
                         "factory/{l}/cam1/detections"]


def test_patterns_the_most_specific_come_first_so_the_router_prefers_them() -> None:
    """A one-topic pattern sorts before a pattern with placeholders."""
    topics = {"a/x1/y": "k1", "a/x2/y": "k1", "a/odd/y": "k2"}
    assert [p.template for p in infer_patterns(topics)] == ["a/odd/y", "a/{x}/y"]


def test_patterns_numbers_are_ids_and_unknown_values_are_numbered_levels() -> None:
    """Digits-only values name the level `id`; mixed values `level<N>`; names stay unique and avoid reserved words."""
    assert placeholder_name(["17", "18"], 3, set()) == "id"
    assert placeholder_name(["alpha", "beta"], 1, set()) == "level2"
    assert placeholder_name(["cam1", "cam2"], 0, {"cam"}) == "cam2"
    assert placeholder_name(["topic1", "topic2"], 0, set()) == "topic_level"


def test_patterns_templates_compile_with_the_router_grammar() -> None:
    """Every inferred template is valid for the router, also for levels holding braces or `$` topics left out."""
    topics = {"plant/{weird}/a": "k", "$SYS/broker/uptime": "k", "plant/x/b": "k2"}
    patterns = infer_patterns(topics)
    assert all(not p.template.startswith("$") for p in patterns)
    for pattern in patterns:
        TopicTemplate(pattern.template, "test")  # raises ConfigError when invalid
    assert sorted(p.template for p in patterns) == ["plant/x/b", "plant/{level2}/a"]
