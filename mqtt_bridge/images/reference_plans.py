"""Image reference plans: what each route with a `url`, `file` or `companion` image needs, compiled from the config.

Owns: compiling `routes[].image` references into one `ReferencePlan` per route (URL/path templates, companion
image topic and keys, the fetcher with its SSRF policy, the companion join), resolving a url/file reference
(`ReferencePlan.resolve`: fetch through `images.fetch`, read through `images.files`), the start-up check of every
template (`compile_image_references`) and the synchronous resolver of `mqtt-bridge dlq replay` (`ReplayResolver`).
No threads and no queues here: the stage that runs the plans between MQTT and the receiver is `images.references`.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, unquote, urlsplit

import orjson

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import ConfigError, DeadLetterReason, DecodeError, RouteNotFound
from mqtt_bridge.images.companion import CompanionJoin
from mqtt_bridge.images.fetch import UrlFetcher, UrlPolicy
from mqtt_bridge.images.files import read_under_roots
from mqtt_bridge.model.attachment import Attachment, ReferenceKind
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.model.values import JsonValue, lookup_path
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.routing.router import CompiledRoute, Router
from mqtt_bridge.routing.templates import TopicTemplate, ValueTemplate

__all__ = ["ReferencePlan", "ReplayResolver", "build_plans", "companion_subscriptions", "compile_image_references",
           "has_reference"]

log = logging.getLogger(__name__)

_PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")


def _url_value(value: str) -> str:
    """A template value, percent-encoded whole: `/` too, and a `.` or `..` value (a dot segment: it would climb)."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def _path_value(value: str) -> str:
    if not _PLAIN_NAME_RE.match(value) or value in (".", ".."):
        raise DecodeError(DeadLetterReason.IMAGE_PATH_REFUSED, f"{value[:60]!r} is not a plain file or directory name")
    return value


def _file_name(text: str) -> str:
    """A safe image name from the last segment of a URL path or file path ('' when it is not a plain name)."""
    name = unquote(text.rstrip("/").rsplit("/", 1)[-1])[:100]
    return name if _PLAIN_NAME_RE.match(name) and name not in (".", "..") else ""


class ReferencePlan:
    """What one route with a url, file or companion reference needs at run time: its kind, its template or
    field, its fetcher (url), its companion topic, keys and join (companion)."""

    def __init__(self, route: CompiledRoute, stats: Stats | None) -> None:
        self.route = route
        options = route.config.image
        where = f"routes[{route.index}].image"
        names = route.topic.names
        self.field: str | None = None
        self.template: ValueTemplate | None = None
        self.fetcher: UrlFetcher | None = None
        self.join: CompanionJoin[Inbound] | None = None
        self.max_bytes = options.max_bytes
        self.roots = options.file.roots if options.file is not None else []
        if options.url is not None:
            self.kind = ReferenceKind.URL
            self.field = options.url.field
            if options.url.template is not None:
                self.template = ValueTemplate(options.url.template, names, f"{where}.url.template",
                                              escape=_url_value)
            try:
                policy = UrlPolicy(
                    allow_hosts=tuple(options.url.allow_hosts),
                    allow_networks=tuple(options.url.allow_private_networks), timeout_s=options.url.timeout_s,
                    max_bytes=options.max_bytes, max_redirects=options.url.max_redirects, ca_file=options.url.ca_file)
            except ValueError as exc:
                raise ConfigError([(f"{where}.url.allow_hosts", str(exc))]) from None
            self.fetcher = UrlFetcher(policy)
        elif options.file is not None:
            self.kind = ReferenceKind.FILE
            self.field = options.file.field
            if options.file.template is not None:
                self.template = ValueTemplate(options.file.template, names, f"{where}.file.template",
                                              escape=_path_value)
        else:
            companion = options.companion
            assert companion is not None
            self.kind = ReferenceKind.COMPANION
            self.image_topic = TopicTemplate(companion.topic, f"{where}.companion.topic")
            levels = self.image_topic.level_names
            key_text = companion.key if companion.key is not None else "/".join(f"{{{n}}}" for n in levels)
            self.key = ValueTemplate(key_text, names, f"{where}.companion.key")
            image_key_text = companion.image_key if companion.image_key is not None else key_text
            if "{payload." in image_key_text:
                raise ConfigError([(f"{where}.companion.image_key",
                                    "an image message is raw bytes: its key can use only its topic levels; "
                                    "give image_key when key reads the payload")])
            self.image_key = ValueTemplate(image_key_text, self.image_topic.names, f"{where}.companion.image_key")
            self.key_reads_payload = "{payload." in key_text
            self.join = CompanionJoin(companion.window_s, companion.max_parked, supersedes=_is_redelivery)
        self._stats = stats
        self.last_missing_log = float("-inf")  # rate limit of the stage's "images missing" line
        self.missing_since_log = 0

    @property
    def label(self) -> str:
        """The route's name in logs and metrics."""
        return self.route.label

    def detection_key(self, payload: bytes, topic: str, captures: dict[str, str]) -> str | None:
        """The companion key of a detection message; None when the key reads a payload that is not JSON (ingest
        dead-letters it as it is). Raises DecodeError when the key cannot be rendered (a field is missing)."""
        document: JsonValue = None
        if self.key_reads_payload:
            try:
                document = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
        return self.key.render(captures, topic, document)

    def resolve(self, payload: bytes, topic: str, captures: dict[str, str]) -> Attachment | None:
        """Fetch or read a url/file reference now (a worker thread, or a replay). Never raises."""
        try:
            document: JsonValue = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None  # ingest dead-letters it as invalid_json
        try:
            if self.field is not None:
                value = lookup_path(document, self.field)
                if value is None:
                    return None  # the message names no image: it is sent without one
                if not isinstance(value, str):
                    raise DecodeError(DeadLetterReason.IMAGE_URL_REFUSED if self.kind == ReferenceKind.URL
                                      else DeadLetterReason.IMAGE_PATH_REFUSED, f"{self.field} must be a string")
                reference = value
            else:
                assert self.template is not None
                rendered = self.template.render_or_none(captures, topic, document)
                if rendered is None:
                    return None
                reference = rendered
            if self.kind == ReferenceKind.URL:
                assert self.fetcher is not None
                fetched = self.fetcher.fetch(reference)
                attachment = Attachment(ReferenceKind.URL, fetched.data, _file_name(urlsplit(fetched.url).path))
            else:
                data = read_under_roots(reference, self.roots, self.max_bytes)
                attachment = Attachment(ReferenceKind.FILE, data, _file_name(reference))
        except DecodeError as exc:  # the intake logs and counts the dead letter
            return Attachment(self.kind, problem=(exc.reason, exc.detail))
        except Exception as exc:  # a fetch must never take the worker down: the message is dead-lettered instead
            log.exception("image reference failed route=%s topic=%s", self.label, topic[:200])
            return Attachment(self.kind, problem=(DeadLetterReason.IMAGE_FETCH_FAILED if self.kind == ReferenceKind.URL
                                                  else DeadLetterReason.IMAGE_READ_FAILED,
                                                  f"{type(exc).__name__}: {exc}"[:300]))
        if self._stats is not None:
            self._stats.add("image_references_resolved", label=self.label)
        return attachment


def _is_redelivery(new: Inbound, old: Inbound) -> bool:
    return new.generation != old.generation and new.topic == old.topic and new.payload == old.payload


def build_plans(router: Router, stats: Stats | None) -> dict[int, ReferencePlan]:
    problems: list[tuple[str, str]] = []
    plans: dict[int, ReferencePlan] = {}
    for route in router.routes:
        if has_reference(route.config):
            try:
                plans[route.index] = ReferencePlan(route, stats)
            except ConfigError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return plans


def companion_subscriptions(router: Router) -> list[str]:
    """The companion image topics to subscribe to, besides the routes' own filters (their topic templates only: no
    plan, fetcher or join is built, so the receiver process can ask without the image stage)."""
    return list(dict.fromkeys(
        TopicTemplate(route.config.image.companion.topic, f"routes[{route.index}].image.companion.topic").subscription
        for route in router.routes if route.config.image.companion is not None))


def compile_image_references(routes: list[RouteConfig]) -> None:
    """Check the templates of every route's image reference. Raises ConfigError naming each bad key."""
    build_plans(Router(routes), None)


class ReplayResolver:
    """Resolves url/file references synchronously, for `mqtt-bridge dlq replay` (the bridge is stopped then):
    a replayed message fetches its image again, under the current config."""

    def __init__(self, routes: list[RouteConfig]) -> None:
        self._router = Router(routes)
        self._plans = build_plans(self._router, None)

    def __call__(self, topic: str, payload: bytes) -> Attachment | None:
        """The message's url/file image (or why not); None for routes without one, and for companion routes."""
        try:
            route, captures = self._router.match(topic)
        except RouteNotFound:
            return None
        plan = self._plans.get(route.index)
        if plan is None or plan.kind == ReferenceKind.COMPANION:
            return None
        return plan.resolve(payload, topic, captures)


def has_reference(route: RouteConfig) -> bool:
    image = route.image
    return image.url is not None or image.file is not None or image.companion is not None
