"""Image references that need I/O or waiting, resolved between the MQTT thread and the intake: URL, file, companion.

Owns: for the routes whose `routes[].image` names a `url`, a `file` or a `companion` topic, getting the image
*before* the message is buffered (issue 4: the bytes are buffered with their event, so a URL or file that changes
later does not matter), without holding up other messages:

- `url` and `file` messages go to a small pool of fetch workers (`FETCH_WORKERS` threads, at most
  `_FETCH_QUEUE` waiting; past that the MQTT thread waits, which is backpressure on the socket) that fetch through
  `fetch` (SSRF rules) or read through `localfiles` (path rules);
- `companion` image messages (matched on their own topic before any route) and the route's detections are joined
  by `companion.CompanionJoin` (see its docstring for why detections wait un-acked rather than in the buffer);
  the subscription to the image topics is derived from the config here.

The message then goes to the intake as `Resolved`, with an `Attachment`: the image, or the dead-letter reason of a
refused or failed reference, or why it is missing. Until then it is not acked; the image message of a pair is acked
together with its detection, after the commit (the service's ack does it). Nothing is acked before it is durable.
Routes without such references pass straight through (the service does not even build this stage when no route
has one). No exception escapes `offer` (a paho callback) or the thread bodies.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import orjson

from mqtt_bridge.config.image_options import ReferenceKind
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.fields import lookup
from mqtt_bridge.errors import ConfigError, DeadLetterReason, DecodeError, RouteNotFound
from mqtt_bridge.images.attach import Attachment
from mqtt_bridge.images.companion import CompanionJoin, JoinOutcome
from mqtt_bridge.images.fetch import UrlFetcher, UrlPolicy
from mqtt_bridge.images.files import read_under_roots
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.model.values import JsonValue
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.routing.router import CompiledRoute, Router, TopicTemplate, ValueTemplate

__all__ = ["FETCH_WORKERS", "ImageReferences", "ReplayResolver", "Resolved", "compile_image_references"]

log = logging.getLogger(__name__)

FETCH_WORKERS = 4
_FETCH_QUEUE = 16
_TICK_S = 0.05
_MISSING_LOG_EVERY_S = 60.0
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_LEVEL_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\*?\}$")
_PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True, slots=True)
class Resolved(Inbound):
    """A message whose image reference was resolved: the intake ingests it with `attachment`; `companions` are
    the image messages acked together with it."""

    attachment: Attachment | None = None
    companions: tuple[Inbound, ...] = ()


def _resolved(message: Inbound, attachment: Attachment | None, companions: tuple[Inbound, ...] = ()) -> Resolved:
    return Resolved(message.topic, message.payload, message.mid, message.qos, message.generation,
                    message.received_at_s, message.retain, attachment, companions)


class _Template:
    """A URL or path template: `{level}`, `{topic}`, `{payload.path}`; every inserted value passes `clean`."""

    def __init__(self, template: str, names: frozenset[str], where: str) -> None:
        self.template = template
        problems = [f"unknown placeholder {{{key}}} (topic levels: {', '.join(sorted(names)) or 'none'}; "
                    "or topic, payload.<path>)"
                    for key in _PLACEHOLDER_RE.findall(template)
                    if key != "topic" and key not in names
                    and not (key.startswith("payload.") and _PATH_RE.match(key[len("payload."):]))]
        if problems:
            raise ConfigError([(where, p) for p in problems])

    def render(self, captures: dict[str, str], topic: str, document: JsonValue,
               clean: Callable[[str], str]) -> str | None:
        """The filled template; None when a payload field is missing."""
        missing = False

        def fill(match: re.Match[str]) -> str:
            nonlocal missing
            key = match.group(1)
            if key == "topic":
                return clean(topic)
            if key in captures:
                return clean(captures[key])
            value = lookup(document, key[len("payload."):])
            if value is None or isinstance(value, dict | list):
                missing = True
                return ""
            return clean(str(value).lower() if isinstance(value, bool) else str(value))

        rendered = _PLACEHOLDER_RE.sub(fill, self.template)
        return None if missing else rendered


def _url_value(value: str) -> str:
    return quote(value, safe="")


def _path_value(value: str) -> str:
    if not _PLAIN_NAME_RE.match(value) or value in (".", ".."):
        raise DecodeError(DeadLetterReason.IMAGE_PATH_REFUSED,
                          f"{value[:60]!r} is not a plain file or directory name")
    return value


def _file_name(text: str) -> str:
    """A safe image name from the last segment of a URL path or file path ('' when it is not a plain name)."""
    name = unquote(text.rstrip("/").rsplit("/", 1)[-1])[:100]
    return name if _PLAIN_NAME_RE.match(name) and name not in (".", "..") else ""


class _Plan:
    """What one route with a url, file or companion reference needs at run time."""

    def __init__(self, route: CompiledRoute, stats: Stats | None) -> None:
        self.route = route
        options = route.config.image
        where = f"routes[{route.index}].image"
        names = route.topic.names
        self.field: str | None = None
        self.template: _Template | None = None
        self.fetcher: UrlFetcher | None = None
        self.join: CompanionJoin[Inbound] | None = None
        self.max_bytes = options.max_bytes
        self.roots = options.file.roots if options.file is not None else []
        if options.url is not None:
            self.kind = ReferenceKind.URL
            self.field = options.url.field
            if options.url.template is not None:
                self.template = _Template(options.url.template, names, f"{where}.url.template")
            self.fetcher = UrlFetcher(UrlPolicy(
                allow_hosts=tuple(options.url.allow_hosts), allow_networks=tuple(options.url.allow_private_networks),
                timeout_s=options.url.timeout_s, max_bytes=options.max_bytes,
                max_redirects=options.url.max_redirects, ca_file=options.url.ca_file))
        elif options.file is not None:
            self.kind = ReferenceKind.FILE
            self.field = options.file.field
            if options.file.template is not None:
                self.template = _Template(options.file.template, names, f"{where}.file.template")
        else:
            companion = options.companion
            assert companion is not None
            self.kind = ReferenceKind.COMPANION
            self.image_topic = TopicTemplate(companion.topic, f"{where}.companion.topic")
            levels = [m.group(1) for level in companion.topic.split("/") if (m := _LEVEL_RE.match(level))]
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
        self.last_missing_log = -_MISSING_LOG_EVERY_S
        self.missing_since_log = 0

    @property
    def label(self) -> str:
        """The route's name in logs and metrics."""
        return self.route.label

    def resolve(self, payload: bytes, topic: str, captures: dict[str, str]) -> Attachment | None:
        """Fetch or read a url/file reference now (a worker thread, or a replay). Never raises."""
        try:
            document: JsonValue = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None  # ingest dead-letters it as invalid_json
        try:
            if self.field is not None:
                value = lookup(document, self.field)
                if value is None:
                    return None  # the message names no image: it is sent without one
                if not isinstance(value, str):
                    raise DecodeError(DeadLetterReason.IMAGE_URL_REFUSED if self.kind == ReferenceKind.URL
                                      else DeadLetterReason.IMAGE_PATH_REFUSED,
                                      f"{self.field} must be a string")
                reference = value
            else:
                assert self.template is not None
                rendered = self.template.render(captures, topic, document,
                                                _url_value if self.kind == ReferenceKind.URL else _path_value)
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
            failed = (DeadLetterReason.IMAGE_FETCH_FAILED if self.kind == ReferenceKind.URL
                      else DeadLetterReason.IMAGE_READ_FAILED)
            return Attachment(self.kind, problem=(failed, f"{type(exc).__name__}: {exc}"[:300]))
        if self._stats is not None:
            self._stats.add("image_references_resolved", label=self.label)
        return attachment


def _is_redelivery(new: Inbound, old: Inbound) -> bool:
    return new.generation != old.generation and new.topic == old.topic and new.payload == old.payload


def _build_plans(router: Router, stats: Stats | None) -> dict[int, _Plan]:
    problems: list[tuple[str, str]] = []
    plans: dict[int, _Plan] = {}
    for route in router.routes:
        if _has_reference(route.config):
            try:
                plans[route.index] = _Plan(route, stats)
            except ConfigError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return plans


def compile_image_references(routes: list[RouteConfig]) -> None:
    """Check the templates of every route's image reference. Raises ConfigError naming each bad key."""
    _build_plans(Router(routes), None)


class ReplayResolver:
    """Resolves url/file references synchronously, for `mqtt-bridge dlq replay` (the bridge is stopped then):
    a replayed message fetches its image again, under the current config."""

    def __init__(self, routes: list[RouteConfig]) -> None:
        self._router = Router(routes)
        self._plans = _build_plans(self._router, None)

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


def _has_reference(route: RouteConfig) -> bool:
    image = route.image
    return image.url is not None or image.file is not None or image.companion is not None


class ImageReferences:
    """The stage between MQTT and the intake for routes with url/file/companion images.

    `offer` is called by paho; `run_timer` (companion windows) and `run_fetcher` (one per worker) are thread
    bodies the service starts. `forward` hands a message to the intake (it blocks while the intake is full);
    `ack` acknowledges a message that is dropped without being buffered (an image no detection claimed).
    """

    def __init__(self, router: Router, forward: Callable[[Inbound], None], ack: Callable[[Inbound], bool],
                 stats: Stats, stop: threading.Event, max_payload_bytes: int) -> None:
        self._router = router
        self._forward = forward
        self._ack = ack
        self._stats = stats
        self._stop = stop
        self._max_payload_bytes = max_payload_bytes
        self._plans = _build_plans(router, stats)
        self._companions = [plan for plan in self._plans.values() if plan.kind == ReferenceKind.COMPANION]
        self.has_fetches = any(plan.kind != ReferenceKind.COMPANION for plan in self._plans.values())
        self._lock = threading.Lock()
        self._not_image_topics: set[str] = set()  # paho thread only
        self._jobs: queue.Queue[tuple[_Plan, Inbound, str, dict[str, str]]] = queue.Queue(maxsize=_FETCH_QUEUE)

    @staticmethod
    def is_needed(routes: list[RouteConfig]) -> bool:
        """Whether any route has a url, file or companion image (else the stage is not built at all)."""
        return any(_has_reference(route) for route in routes)

    def subscriptions(self) -> list[str]:
        """The companion image topics to subscribe to, besides the routes' own filters."""
        return list(dict.fromkeys(plan.image_topic.subscription for plan in self._companions))

    @property
    def parked(self) -> int:
        """Messages held un-acked here: companion detections and images, and url/file messages being fetched."""
        with self._lock:
            parked = sum(plan.join.parked for plan in self._companions if plan.join is not None)
        return parked + self._jobs.qsize()

    # --- the MQTT thread ------------------------------------------------------------------------------------------

    def offer(self, message: Inbound) -> None:
        """Take one message from paho: park it, queue its fetch, or pass it on. Never raises."""
        try:
            if not self._dispatch(message):
                self._forward(message)
        except Exception:  # a paho callback: log, count, and let ingest deal with the message as it is
            log.exception("image reference stage failed; passing the message on without it")
            self._stats.add("intake_errors")
            self._forward(message)

    def _dispatch(self, message: Inbound) -> bool:
        """True when the message was taken here (parked or queued for a fetch)."""
        try:
            topic = message.topic.decode("utf-8")
        except UnicodeDecodeError:
            return False
        image_topic = self._image_topic(topic)
        if image_topic is not None:  # joined whatever its size: the image checks at ingest judge it
            companion, image_captures = image_topic
            if message.retain:
                # a retained image (e.g. a "latest snapshot" topic) is replayed by the broker on every subscribe:
                # it is an old picture and must not pair with the next fresh detection of its key
                self._stats.add("companion_images_dropped", label=companion.label)
                self._ack(message)
                return True
            key = companion.image_key.render(image_captures, topic, None)
            self._settle(companion, message, key, is_image=True)
            return True
        if len(message.payload) > self._max_payload_bytes:
            return False  # ingest dead-letters it unparsed
        try:
            route, captures = self._router.match(topic)
        except RouteNotFound:
            return False
        plan = self._plans.get(route.index)
        if plan is None:
            return False
        if plan.kind != ReferenceKind.COMPANION:
            while not self._stop.is_set():
                try:
                    self._jobs.put((plan, message, topic, captures), timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return True  # stopping: not acked, the broker redelivers it
        document: JsonValue = None
        if plan.key_reads_payload:
            try:
                document = orjson.loads(message.payload)
            except orjson.JSONDecodeError:
                return False
        try:
            key = plan.key.render(captures, topic, document)
        except DecodeError:
            self._stats.add("companion_images_missing", label=plan.label)
            self._forward(_resolved(message, Attachment(ReferenceKind.COMPANION, missing="no_key")))
            return True
        self._settle(plan, message, key, is_image=False)
        return True

    def _image_topic(self, topic: str) -> tuple[_Plan, dict[str, str]] | None:
        """The companion route whose image topic `topic` is, with its levels (cached for the other topics, which
        repeat, so that the routes' own messages pay one dict lookup here)."""
        if topic in self._not_image_topics:
            return None
        levels = topic.split("/")
        for companion in self._companions:
            captures = companion.image_topic.match(levels)
            if captures is not None:
                return companion, captures
        if len(self._not_image_topics) < 10_000:  # bounded: topics may carry ids
            self._not_image_topics.add(topic)
        return None

    def _settle(self, plan: _Plan, message: Inbound, key: str, *, is_image: bool) -> None:
        join = plan.join
        assert join is not None
        with self._lock:
            now = time.monotonic()
            outcome = (join.add_image(message, key, now, len(message.payload)) if is_image
                       else join.add_detection(message, key, now))
        self._hand_on(plan, outcome)

    def _hand_on(self, plan: _Plan, outcome: JoinOutcome[Inbound]) -> None:
        """Forward what a join step released (outside the lock: forwarding may wait for the intake)."""
        for detection, image in outcome.paired:
            self._stats.add("companion_images_paired", label=plan.label)
            self._forward(_resolved(detection, Attachment(ReferenceKind.COMPANION, image.payload), (image,)))
        for detection, why in outcome.unpaired:
            self._stats.add("companion_images_missing", label=plan.label)
            plan.missing_since_log += 1
            now = time.monotonic()
            if now - plan.last_missing_log >= _MISSING_LOG_EVERY_S:  # at most one line a minute per route
                log.warning("companion images missing route=%s count=%d last_reason=%s last_topic=%s", plan.label,
                            plan.missing_since_log, why, detection.topic[:200].decode("utf-8", "replace"))
                plan.last_missing_log, plan.missing_since_log = now, 0
            self._forward(_resolved(detection, Attachment(ReferenceKind.COMPANION, missing=why)))
        for image in outcome.dropped:
            self._stats.add("companion_images_dropped", label=plan.label)
            self._ack(image)  # deliberately not buffered: no detection claimed it in time (README)

    # --- threads --------------------------------------------------------------------------------------------------

    def run_timer(self) -> None:
        """Release detections and images whose window ended, until stopped. Thread body."""
        log.info("image reference timer started companion_routes=%d", len(self._companions))
        while not self._stop.wait(_TICK_S):
            try:
                now = time.monotonic()
                released = []
                with self._lock:
                    for plan in self._companions:
                        assert plan.join is not None
                        next_deadline = plan.join.next_deadline()
                        if next_deadline is not None and next_deadline <= now:
                            released.append((plan, plan.join.expire(now)))
                for plan, outcome in released:
                    self._hand_on(plan, outcome)
                self._stats.set("images_parked", self.parked)
            except Exception:  # a thread loop: log, count, go on (parked messages stay un-acked, never lost)
                log.exception("image reference timer error")
                self._stats.add("intake_errors")
        log.info("image reference timer stopped parked=%d (un-acked: the broker redelivers them)", self.parked)

    def run_fetcher(self) -> None:
        """Fetch or read queued url/file references and pass the messages on, until stopped. Thread body."""
        while not self._stop.is_set():
            try:
                plan, message, topic, captures = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._forward(_resolved(message, plan.resolve(message.payload, topic, captures)))
            except Exception:  # a thread loop: the message stays un-acked and comes back after a restart
                log.exception("image fetch worker error route=%s", plan.label)
                self._stats.add("intake_errors")
