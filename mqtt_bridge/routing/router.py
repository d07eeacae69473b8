"""Topic routing: the routes of the config compiled with their templates, and the first route matching a topic.

Owns: compiling each route's topic and value templates (their grammar is `routing.templates`), collecting every
route's problems into one ConfigError, the subscription filters, and the match of a topic to its route (cached in
a `ByteLRU` of `ROUTE_CACHE_BYTES`, evictions counted as `cache="route"`: a cache only, so an eviction never changes
a result, the match is computed again). Must not do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import ConfigError, DeadLetterReason, RouteNotFound
from mqtt_bridge.model.bounded import ByteLRU, text_bytes
from mqtt_bridge.model.event import EVENT_DATA_STRING_FIELDS, FEEDBACK_VALUES
from mqtt_bridge.routing.templates import TopicTemplate, ValueTemplate

__all__ = ["ROUTE_CACHE_BYTES", "CompiledRoute", "Router"]

ROUTE_CACHE_BYTES = 8 * 2**20  # topic -> route cache; topics may carry ids and be up to 64 KiB long
_ROUTE_CACHE_ENTRIES = 10_000
_CAPTURE_OVERHEAD = 100

_Hit = tuple["CompiledRoute", dict[str, str]] | None


def _hit_bytes(topic: str, cached: tuple[_Hit]) -> int:
    hit = cached[0]
    captured = sum(text_bytes(k, v) + _CAPTURE_OVERHEAD for k, v in hit[1].items()) if hit is not None else 0
    return text_bytes(topic) + captured


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
    # operator_feedback: eventData.relatedEventId / eventData.feedback / the top-level comment, by their API names
    feedback: dict[str, ValueTemplate]
    label: str = field(init=False)  # route name for logs, metrics and dead letters (read a few times per message)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", self.config.label)


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


def _check_event_data_types(route: RouteConfig, where: str, problems: list[tuple[str, str]]) -> None:
    """A constant `event_data` value that must be a string at the API (per the route's event type; every type's
    when the payload decides) is a config error: the API would refuse the whole batch."""
    types = [route.event_type] if route.event_type else list(EVENT_DATA_STRING_FIELDS)
    string_fields = {key for event_type in types for key in EVENT_DATA_STRING_FIELDS[event_type]}
    for key, constant in route.event_data.items():
        if key in string_fields and not isinstance(constant, str):
            problems.append((f"{where}.event_data.{key}", f"eventData.{key} must be a string at the API (quote it: "
                             f"'{constant}')"))


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
    _check_event_data_types(route, where, problems)
    feedback: dict[str, ValueTemplate] = {}
    if route.event_type == "operator_feedback" and "relatedEventId" not in route.event_data and (
            route.operator_feedback is None or route.operator_feedback.related_event_id is None):
        problems.append((f"{where}.operator_feedback.related_event_id", "an operator_feedback route must say which "
                         "event the feedback is about (a template such as '{payload.event_id}')"))
    rule = route.operator_feedback
    if rule is not None:
        for api_name, key, template in (("relatedEventId", "related_event_id", rule.related_event_id),
                                        ("feedback", "feedback", rule.feedback), ("comment", "comment", rule.comment)):
            compiled_value = value(template, f"operator_feedback.{key}")
            if compiled_value is not None:
                feedback[api_name] = compiled_value
        if rule.feedback is not None and "{" not in rule.feedback and rule.feedback not in FEEDBACK_VALUES:
            problems.append((f"{where}.operator_feedback.feedback",
                             f"must be one of {', '.join(FEEDBACK_VALUES)} (or a template)"))
    compiled = CompiledRoute(
        index=index, config=route, topic=topic,
        use_case=use_case or ValueTemplate("", names, where),
        device_id=value(route.device_id, "device_id"), stream_id=value(route.stream_id, "stream_id"),
        event_data=_compile_fields(route.event_data, names, f"{where}.event_data", problems),
        metadata=_compile_fields(route.metadata, names, f"{where}.metadata", problems),
        feedback=feedback,
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
        self._cache: ByteLRU[str, tuple[_Hit]] = ByteLRU("route", ROUTE_CACHE_BYTES, _hit_bytes, _ROUTE_CACHE_ENTRIES)

    def subscriptions(self) -> list[str]:
        """The MQTT filters to subscribe to, in route order, without duplicates."""
        return list(dict.fromkeys(route.topic.subscription for route in self.routes))

    def match(self, topic: str) -> tuple[CompiledRoute, dict[str, str]]:
        """Return the first matching route and its captured levels. Raises RouteNotFound."""
        cached = self._cache.get(topic)  # (hit,) or (None,) for "no route"; None when not cached
        if cached is None:
            hit: _Hit = None
            levels = topic.split("/")
            for route in self.routes:
                captures = route.topic.match(levels)
                if captures is not None:
                    hit = (route, captures)
                    break
            self._cache.put(topic, (hit,))  # bounded in bytes: topics may carry ids
        else:
            hit = cached[0]
        if hit is None:
            raise RouteNotFound(DeadLetterReason.NO_ROUTE, f"no route matches topic {topic[:200]!r}")
        return hit
