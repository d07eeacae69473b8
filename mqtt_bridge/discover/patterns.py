"""Topic-pattern inference: from the topics heard to route templates such as `factory/{line}/{cam}/detections`.

Owns: grouping topics that belong together (same first level, same number of levels, same kind of content as the
caller's `kind` says), the levels that vary within a group (each becomes a `{name}` placeholder, named after its
values: `line1`, `line2` → `line`; numbers → `id`), and the order of the patterns (the most specific first, so a
route for one odd topic wins over the general one). Pure string work: no I/O, nothing of paho or the config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["TopicPattern", "infer_patterns", "placeholder_name"]

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STEM_RE = re.compile(r"[\d_.-]+$")
_RESERVED = frozenset({"topic", "payload"})  # value templates read {topic} and {payload.x} themselves
_MAX_VALUES = 20  # example values kept per varying level


@dataclass(slots=True)
class TopicPattern:
    """One inferred pattern: each level a literal, or a placeholder name (`is_varying`)."""

    levels: list[str]
    is_varying: list[bool]
    kind: str
    topics: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)  # placeholder name -> example values

    @property
    def template(self) -> str:
        """The route template: literals, and `{name}` for the varying levels."""
        return "/".join(f"{{{level}}}" if varying else level for level, varying in zip(self.levels, self.is_varying,
                                                                                        strict=True))

    @property
    def names(self) -> list[str]:
        """The placeholder names, in topic order."""
        return [level for level, varying in zip(self.levels, self.is_varying, strict=True) if varying]

    def captures(self, topic: str) -> dict[str, str] | None:
        """The varying levels of `topic` by name, or None when the topic is not of this pattern."""
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        out: dict[str, str] = {}
        for part, level, varying in zip(parts, self.levels, self.is_varying, strict=True):
            if varying:
                out[level] = part
            elif part != level:
                return None
        return out

    def rename(self, old: str, new: str) -> None:
        """Give a placeholder another name (e.g. after the payload field that carries the same value)."""
        if old == new or new in self.names or not _IDENTIFIER_RE.match(new) or new in _RESERVED:
            return
        self.levels = [new if varying and level == old else level
                       for level, varying in zip(self.levels, self.is_varying, strict=True)]
        if old in self.values:
            self.values[new] = self.values.pop(old)


def _is_literal_safe(level: str) -> bool:
    """A level a topic template can hold as a literal (the grammar reserves braces and wildcards)."""
    return not any(char in level for char in "{}+#\x00")


def placeholder_name(values: list[str], position: int, taken: set[str]) -> str:
    """A name for a varying level from its values: their common stem (`cam1`, `cam2` → `cam`), `id` for numbers,
    else `level<N>` (N counted from 1); unique among `taken`, never `topic` or `payload`."""
    stems = {_STEM_RE.sub("", value).lower() for value in values}
    if len(stems) == 1 and (stem := stems.pop()) and _IDENTIFIER_RE.match(stem):
        name = stem
    elif values and all(value.isdigit() for value in values):
        name = "id"
    else:
        name = f"level{position + 1}"
    if name in _RESERVED:
        name += "_level"
    unique, suffix = name, 2
    while unique in taken:
        unique, suffix = f"{name}{suffix}", suffix + 1
    return unique


def _pattern(topics: list[str], kind: str) -> TopicPattern:
    split = [topic.split("/") for topic in topics]
    levels: list[str] = []
    varying: list[bool] = []
    values: dict[str, list[str]] = {}
    taken: set[str] = set()
    for position in range(len(split[0])):
        seen = list(dict.fromkeys(parts[position] for parts in split))
        if len(seen) == 1 and _is_literal_safe(seen[0]):
            levels.append(seen[0])
            varying.append(False)
            continue
        name = placeholder_name(seen, position, taken)
        taken.add(name)
        levels.append(name)
        varying.append(True)
        values[name] = seen[:_MAX_VALUES]
    return TopicPattern(levels, varying, kind, sorted(topics), values)


def infer_patterns(topic_kinds: Mapping[str, str]) -> list[TopicPattern]:
    """Group `topic -> kind` into patterns, the most specific (fewest placeholders) first.

    Topics are grouped by first level, level count and kind; within a group, a level with one value stays a
    literal and a level with several becomes a placeholder. Topics starting with `$` are broker-internal and left
    out (a route cannot take them).
    """
    groups: dict[tuple[str, int, str], list[str]] = {}
    for topic, kind in topic_kinds.items():
        if topic.startswith("$"):
            continue
        parts = topic.split("/")
        groups.setdefault((parts[0], len(parts), kind), []).append(topic)
    patterns = [_pattern(topics, kind) for (_, _, kind), topics in groups.items()]
    patterns.sort(key=lambda pattern: (sum(pattern.is_varying), pattern.template))
    return patterns
