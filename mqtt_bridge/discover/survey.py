"""The survey: what discover heard, per topic pattern (rate, size, format, images, the levels that vary).

Owns: taking every heard message (`add`, bounded: at most `max_topics` topics are told apart, the first `_INSPECTED`
messages of each inspected, a few samples kept), and turning them into `Finding`s: the inferred patterns of
`patterns`, with their traffic figures, the format and image kind most of their messages had, the URL hosts and file
folders their images come from, and the companion link of a raw-image pattern to the detection pattern it belongs to
(the longest shared topic prefix; the key is the payload field whose values are the image topic's varying level). No
I/O.
"""

from __future__ import annotations

import posixpath
from collections import Counter, deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mqtt_bridge.discover.patterns import TopicPattern, infer_patterns
from mqtt_bridge.discover.traits import RAW_IMAGE, ImageKind, Traits, inspect_message
from mqtt_bridge.model.capture import CapturedMessage

__all__ = ["CompanionLink", "Finding", "Survey"]

_SAMPLES = 30  # field samples kept per topic (companion keys)
_INSPECTED = 50  # messages per topic whose format and image are inspected (the rest are only counted: a busy topic
# must not make discover decode every image it carries)
_KEY_MATCH_SHARE = 0.5  # share of detection samples whose field value must be an observed image level value


@dataclass(slots=True)
class _TopicStats:
    messages: int = 0
    total_bytes: int = 0
    max_bytes: int = 0
    retained: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Traits] = field(default_factory=dict)
    samples: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    references: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class CompanionLink:
    """How a detection pattern finds its image on a companion topic (the route's `image.companion`)."""

    topic: str  # the image topic template (the detection pattern's names for the shared levels)
    key: str | None  # the detection's key template, None for the default (the shared levels)
    image_key: str | None


@dataclass(slots=True)
class Finding:
    """One topic pattern and what its messages carried."""

    pattern: TopicPattern
    messages: int
    rate_per_s: float
    avg_bytes: float
    max_bytes: int
    format: str | None
    image: ImageKind
    image_field: str | None = None
    url_hosts: list[str] = field(default_factory=list)  # host[:port] of the image URLs seen
    file_roots: list[str] = field(default_factory=list)  # the folders of the image files seen
    companion: CompanionLink | None = None
    retained: int = 0
    companion_of: str | None = None  # for a raw-image pattern: the detection pattern it was linked to


class Survey:
    """Everything heard so far, per topic."""

    def __init__(self, max_topics: int = 5_000) -> None:
        self._max_topics = max_topics
        self._topics: dict[str, _TopicStats] = {}
        self.messages = 0
        self.untracked = 0  # messages on topics past `max_topics`

    def add(self, message: CapturedMessage) -> None:
        """Take one heard message into account."""
        self.messages += 1
        topic = message.topic_text
        stats = self._topics.get(topic)
        if stats is None:
            if len(self._topics) >= self._max_topics:
                self.untracked += 1
                return
            stats = self._topics[topic] = _TopicStats()
        stats.messages += 1
        stats.total_bytes += len(message.payload)
        stats.max_bytes = max(stats.max_bytes, len(message.payload))
        stats.retained += message.retain
        if stats.messages > _INSPECTED:
            return
        traits = inspect_message(topic, message.payload)
        stats.kinds[traits.kind] += 1
        stats.by_kind.setdefault(traits.kind, traits)
        if traits.fields:
            stats.samples.append(traits.fields)
        if traits.image_reference is not None and len(stats.references) < _SAMPLES:
            stats.references.add(traits.image_reference)

    @property
    def topic_count(self) -> int:
        """How many topics were told apart."""
        return len(self._topics)

    def findings(self, duration_s: float) -> list[Finding]:
        """The patterns heard, most specific first, with companion images linked to their detections."""
        kinds = {topic: stats.kinds.most_common(1)[0][0] for topic, stats in self._topics.items()}
        findings = [self._finding(pattern, duration_s) for pattern in infer_patterns(kinds)]
        for image in [f for f in findings if f.format == RAW_IMAGE]:
            self._link_companion(image, findings)
        return findings

    def _finding(self, pattern: TopicPattern, duration_s: float) -> Finding:
        stats = [self._topics[topic] for topic in pattern.topics]
        messages = sum(s.messages for s in stats)
        traits = stats[0].by_kind[pattern.kind]
        references = sorted({ref for s in stats for ref in s.references})
        finding = Finding(pattern, messages, messages / max(duration_s, 1e-9),
                          sum(s.total_bytes for s in stats) / max(messages, 1), max(s.max_bytes for s in stats),
                          traits.format, traits.image, traits.image_field, retained=sum(s.retained for s in stats))
        if traits.image == ImageKind.URL:
            finding.url_hosts = sorted({urlsplit(ref).netloc for ref in references if urlsplit(ref).netloc})
        elif traits.image == ImageKind.FILE:
            finding.file_roots = _common_folders(references)
        return finding

    def _link_companion(self, image: Finding, findings: list[Finding]) -> None:
        """Link a raw-image pattern to the detection pattern whose topics share the longest prefix with it."""
        best: tuple[int, Finding] | None = None
        image_levels = image.pattern.topics[0].split("/")
        for candidate in findings:
            if candidate.format in (None, RAW_IMAGE) or candidate.image != ImageKind.NONE:
                continue
            levels = candidate.pattern.topics[0].split("/")
            shared = _shared_prefix(levels, image_levels, candidate.pattern)
            # the detection's own levels, all but its last, must lead the image topic (station/1/cam/detections
            # and station/1/cam/image/17)
            if shared >= max(1, len(levels) - 1) and (best is None or shared > best[0]):
                best = (shared, candidate)
        if best is None:
            return
        shared, detections = best
        self._companion_templates(image, detections, shared)

    def _companion_templates(self, image: Finding, detections: Finding, shared: int) -> None:
        det, img = detections.pattern, image.pattern
        prefix = [f"{{{level}}}" if varying else level
                  for level, varying in zip(det.levels[:shared], det.is_varying[:shared], strict=True)]
        prefix_keys = [level for level in prefix if level.startswith("{")]
        rest_levels = img.levels[shared:]
        rest_varying = img.is_varying[shared:]
        extra = [level for level, varying in zip(rest_levels, rest_varying, strict=True) if varying]
        field_path = self._key_field(detections, image, extra[0]) if len(extra) == 1 else None
        if field_path is not None:
            name = field_path.rsplit(".", 1)[-1]
            name = name if name.isidentifier() and name not in det.names and name not in ("topic", "payload") \
                else extra[0]
            rest = [f"{{{name}}}" if varying else level
                    for level, varying in zip(rest_levels, rest_varying, strict=True)]
            key = "/".join([*prefix_keys, f"{{payload.{field_path}}}"])
            image_key = "/".join([*prefix_keys, f"{{{name}}}"])
            link = CompanionLink("/".join(prefix + rest), key, image_key)
        else:  # pair by the shared levels only (and arrival order): the extra levels match anything
            rest = ["+" if varying else level for level, varying in zip(rest_levels, rest_varying, strict=True)]
            link = CompanionLink("/".join(prefix + rest), None, None)
        detections.companion = link
        detections.image = ImageKind.COMPANION
        image.companion_of = det.template

    def _key_field(self, detections: Finding, image: Finding, level: str) -> str | None:
        """The detection field whose values are the image topics' `level` values (e.g. metadata.frame)."""
        seen = {captures[level] for topic in image.pattern.topics
                if (captures := image.pattern.captures(topic)) is not None}
        samples = [sample for topic in detections.pattern.topics for sample in self._topics[topic].samples]
        if not samples or not seen:
            return None
        votes: Counter[str] = Counter(path for sample in samples for path, value in sample.items() if value in seen)
        for path, count in votes.most_common():
            if count >= _KEY_MATCH_SHARE * len(samples):
                return path
        return None


def _shared_prefix(levels: list[str], other: list[str], pattern: TopicPattern) -> int:
    """How many leading levels of `other` fit the pattern's levels (a varying level fits anything)."""
    count = 0
    for position, (level, theirs) in enumerate(zip(levels, other, strict=False)):
        if not pattern.is_varying[position] and level != theirs:
            break
        count += 1
    return count


def _common_folders(paths: list[str]) -> list[str]:
    """The folders the image files lie in, merged to their common parent when there are several."""
    folders = sorted({posixpath.dirname(path) for path in paths if path.startswith("/")})
    if len(folders) > 1:
        common = posixpath.commonpath(folders)
        return [common] if common not in ("", "/") else folders[:10]
    return folders
