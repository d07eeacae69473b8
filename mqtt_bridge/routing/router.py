"""Topic routing: topic templates from the config compiled to MQTT filters and matchers, and value templates.

Owns: the `{name}` template syntax. A topic template such as `factory/{line}/{camera}/detections` matches one level
per `{name}` (subscribed as `+`), a last level `{name*}` matches the rest (subscribed as `#`), and bare `+` / `#`
match without a name. Value templates such as `"{line}-{camera}"` or `"{payload.sensor.id}"` are rendered from the
captured levels, `{topic}`, and payload fields. Must not do I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import ConfigError, DeadLetterReason, DecodeError, RouteNotFound
from mqtt_bridge.model.values import JsonValue, lookup_path

__all__ = ["CompiledRoute", "Router", "TopicTemplate", "ValueTemplate", "lookup_path"]

_NAME_RE: Final = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(\*)?\}$")
_PLACEHOLDER_RE: Final = re.compile(r"\{([^{}]*)\}")
_PATH_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_WILDCARD: Final = object()


class TopicTemplate:
    """A compiled topic template: its subscription filter and a matcher that captures named levels."""

    def __init__(self, template: str, where: str) -> None:
        self.template = template
        levels = template.split("/")
        self._levels: list[tuple[str | None, bool, str | None]] = []  # (literal, is_multi, capture name)
        filter_levels = []
        problems = []
        if template.startswith("$"):
            problems.append("topics starting with $ are broker-internal and cannot be routed")
        for index, level in enumerate(levels):
            is_last = index == len(levels) - 1
            match = _NAME_RE.match(level)
            if match:
                multi = match.group(2) == "*"
                if multi and not is_last:
                    problems.append(f"{level} must be the last level")
                self._levels.append((None, multi, match.group(1)))
                filter_levels.append("#" if multi else "+")
            elif level in ("+", "#"):
                if level == "#" and not is_last:
                    problems.append("# must be the last level")
                self._levels.append((None, level == "#", None))
                filter_levels.append(level)
            elif "{" in level or "}" in level or "+" in level or "#" in level or "\x00" in level:
                problems.append(f"level {level!r}: a {{name}} or wildcard must fill a whole topic level")
            else:
                self._levels.append((level, False, None))
                filter_levels.append(level)
        names = [name for _, _, name in self._levels if name]
        if len(names) != len(set(names)):
            problems.append("a level name is used twice")
        if problems:
            raise ConfigError([(where, p) for p in problems])
        self.names = frozenset(names)
        self.subscription = "/".join(filter_levels)

    def match(self, topic_levels: list[str]) -> dict[str, str] | None:
        """Return the captured levels when the topic matches, else None."""
        captures: dict[str, str] = {}
        for index, (literal, multi, name) in enumerate(self._levels):
            if multi:
                # MQTT: `a/#` also matches `a` itself
                if name:
                    captures[name] = "/".join(topic_levels[index:])
                return captures
            if index >= len(topic_levels):
                return None
            level = topic_levels[index]
            if literal is not None:
                if level != literal:
                    return None
            elif name:
                captures[name] = level
        return captures if len(topic_levels) == len(self._levels) else None


class ValueTemplate:
    """A string with `{level}`, `{topic}` or `{payload.path}` placeholders; plain strings render as themselves."""

    def __init__(self, template: str, level_names: frozenset[str], where: str) -> None:
        self.template = template
        self._parts: list[tuple[str, str | None]] = []  # (literal text, placeholder or None)
        position = 0
        problems = []
        for match in _PLACEHOLDER_RE.finditer(template):
            key = match.group(1)
            is_payload_path = key.startswith("payload.") and _PATH_RE.match(key[len("payload."):]) is not None
            if key != "topic" and key not in level_names and not is_payload_path:
                known = ", ".join(sorted(level_names)) or "none"
                problems.append(
                    f"unknown placeholder {{{key}}} (topic levels: {known}; or topic, payload.<path>)")
            self._parts.append((template[position:match.start()], key))
            position = match.end()
        self._parts.append((template[position:], None))
        if problems:
            raise ConfigError([(where, p) for p in problems])
        self.is_constant = len(self._parts) == 1

    def render(self, captures: dict[str, str], topic: str, payload: JsonValue) -> str:
        """Fill the placeholders. Raises DecodeError when a payload field is missing or not a scalar."""
        if self.is_constant:
            return self.template
        out = []
        for text, key in self._parts:
            out.append(text)
            if key is None:
                continue
            if key == "topic":
                out.append(topic)
            elif key in captures:
                out.append(captures[key])
            else:
                value = lookup_path(payload, key[len("payload."):])
                if value is None or isinstance(value, dict | list):
                    raise DecodeError(DeadLetterReason.TEMPLATE_FIELD_MISSING,
                                      f"{{{key}}} in {self.template!r} has no scalar value in the payload")
                out.append(str(value).lower() if isinstance(value, bool) else str(value))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route from the config with its templates compiled."""

    index: int
    config: RouteConfig
    topic: TopicTemplate
    use_case: ValueTemplate
    device_id: ValueTemplate | None
    stream_id: ValueTemplate | None
    event_data: dict[str, ValueTemplate | str | int | float | bool]
    metadata: dict[str, ValueTemplate | str | int | float | bool]

    @property
    def label(self) -> str:
        """Route name for logs, metrics and dead letters."""
        return self.config.label


def _compile_fields(values: dict[str, str | int | float | bool], names: frozenset[str], where: str,
                    problems: list[tuple[str, str]]) -> dict[str, ValueTemplate | str | int | float | bool]:
    out: dict[str, ValueTemplate | str | int | float | bool] = {}
    for key, value in values.items():
        if isinstance(value, str):
            try:
                out[key] = ValueTemplate(value, names, f"{where}.{key}")
            except ConfigError as exc:
                problems.extend(exc.problems)
        else:
            out[key] = value
    return out


def _compile(index: int, route: RouteConfig, problems: list[tuple[str, str]]) -> CompiledRoute | None:
    where = f"routes[{index}]"
    try:
        topic = TopicTemplate(route.topic, f"{where}.topic")
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None
    names = topic.names

    def value(template: str | None, key: str) -> ValueTemplate | None:
        if template is None:
            return None
        try:
            return ValueTemplate(template, names, f"{where}.{key}")
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None

    use_case = value(route.use_case, "use_case")
    compiled = CompiledRoute(
        index=index, config=route, topic=topic,
        use_case=use_case or ValueTemplate("", names, where),
        device_id=value(route.device_id, "device_id"), stream_id=value(route.stream_id, "stream_id"),
        event_data=_compile_fields(route.event_data, names, f"{where}.event_data", problems),
        metadata=_compile_fields(route.metadata, names, f"{where}.metadata", problems),
    )
    return compiled if use_case is not None else None


class Router:
    """Finds the first route whose topic template matches a topic."""

    def __init__(self, routes: list[RouteConfig]) -> None:
        problems: list[tuple[str, str]] = []
        compiled = [_compile(i, r, problems) for i, r in enumerate(routes)]
        if problems:
            raise ConfigError(problems)
        self.routes = [r for r in compiled if r is not None]
        self._cache: dict[str, tuple[CompiledRoute, dict[str, str]] | None] = {}

    def subscriptions(self) -> list[str]:
        """The MQTT filters to subscribe to, in route order, without duplicates."""
        return list(dict.fromkeys(route.topic.subscription for route in self.routes))

    def match(self, topic: str) -> tuple[CompiledRoute, dict[str, str]]:
        """Return the first matching route and its captured levels. Raises RouteNotFound."""
        hit = self._cache.get(topic)
        if hit is None and topic not in self._cache:
            levels = topic.split("/")
            for route in self.routes:
                captures = route.topic.match(levels)
                if captures is not None:
                    hit = (route, captures)
                    break
            if len(self._cache) < 10_000:  # bounded: topics may carry ids
                self._cache[topic] = hit
        if hit is None:
            raise RouteNotFound(DeadLetterReason.NO_ROUTE, f"no route matches topic {topic[:200]!r}")
        return hit
