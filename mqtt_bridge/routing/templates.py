"""The template grammar: topic templates and value templates, the one implementation of their placeholders.

Owns: the `{name}` syntax that routes, receipts, companion images and image references share. A topic template such
as `factory/{line}/{camera}/detections` matches one level per `{name}` (subscribed as `+`), a last level `{name*}`
matches the rest (subscribed as `#`), and bare `+` / `#` match without a name. A value template such as
`"{line}-{camera}"`, `"{topic}"` or `"{payload.sensor.id}"` is rendered from the captured levels, the topic and
payload fields; an `escape` function (URL percent-encoding, path safety) may be applied to every inserted value.
Imports nothing of `config/` (the config checks use it). Must not do I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from mqtt_bridge.errors import ConfigError, DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonValue, lookup_path

__all__ = ["TopicTemplate", "ValueTemplate", "has_placeholder"]

_NAME_RE: Final = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(\*)?\}$")
_PLACEHOLDER_RE: Final = re.compile(r"\{([^{}]*)\}")
_PATH_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_PAYLOAD: Final = "payload."


def has_placeholder(text: str) -> bool:
    """Whether `text` holds at least one `{...}` placeholder (a template without one renders the same every time)."""
    return _PLACEHOLDER_RE.search(text) is not None


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
        self.level_names: tuple[str, ...] = tuple(names)  # in topic order
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
    """A string with `{level}`, `{topic}` or `{payload.path}` placeholders; plain strings render as themselves.

    `escape`, when given, is applied to every inserted value (never to the template's own text); it may raise
    DecodeError to refuse a value.
    """

    def __init__(self, template: str, level_names: frozenset[str], where: str,
                 escape: Callable[[str], str] | None = None) -> None:
        self.template = template
        self._escape = escape
        self._parts: list[tuple[str, str | None]] = []  # (literal text, placeholder or None)
        position = 0
        problems = []
        for match in _PLACEHOLDER_RE.finditer(template):
            key = match.group(1)
            is_payload_path = key.startswith(_PAYLOAD) and _PATH_RE.match(key[len(_PAYLOAD):]) is not None
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
        """Fill the placeholders. Raises DecodeError when a payload field is missing or not a scalar (or when
        `escape` refuses a value)."""
        rendered, missing = self._fill(captures, topic, payload)
        if missing is not None:
            raise DecodeError(DeadLetterReason.TEMPLATE_FIELD_MISSING,
                              f"{{{missing}}} in {self.template!r} has no scalar value in the payload")
        return rendered

    def render_or_none(self, captures: dict[str, str], topic: str, payload: JsonValue) -> str | None:
        """Fill the placeholders; None when a payload field is missing or not a scalar. Every value is still
        passed to `escape`, so a refused value raises its DecodeError even when another field is missing."""
        rendered, missing = self._fill(captures, topic, payload)
        return None if missing is not None else rendered

    def _fill(self, captures: dict[str, str], topic: str, payload: JsonValue) -> tuple[str, str | None]:
        """The filled text and the first placeholder that had no scalar value (None when all had one)."""
        if self.is_constant:
            return self.template, None
        escape = self._escape
        missing: str | None = None
        out = []
        for text, key in self._parts:
            out.append(text)
            if key is None:
                continue
            if key == "topic":
                value = topic
            elif key in captures:
                value = captures[key]
            else:
                found = lookup_path(payload, key[len(_PAYLOAD):])
                if found is None or isinstance(found, dict | list):
                    missing = missing or key
                    continue
                value = str(found).lower() if isinstance(found, bool) else str(found)
            out.append(escape(value) if escape is not None else value)
        return "".join(out), missing
