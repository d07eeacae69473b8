"""The image reference stage: inside the processor, the messages whose image needs I/O or waiting.

Owns: for the routes whose `routes[].image` names a `url`, a `file` or a `companion` topic (their plans are
`images.reference_plans`), getting the image *before* the message is buffered (issue 4: the bytes are buffered with
their event, so a URL or file that changes later does not matter), without holding up other messages. This runs
after the broker's ack (issue 14): every message here is in the raw log on disk (`storage.raw_log`) until what it
became is committed, so nothing waits un-acked at the broker and a restart processes it again.

- `url` and `file` messages go to a small pool of fetch workers (`FETCH_WORKERS` threads) through one waiting
  list per route, taken round-robin, with at most `_ROUTE_WORKERS` fetches of one route at a time: a route whose
  image server is slow (every fetch runs to its deadline) backs off alone and cannot take every worker. `offer`
  waits at most `_ROOM_WAIT_S` for room on a full list (the processor reads bursts from the raw log); a route whose
  `_ROUTE_QUEUE` fetches stay waiting longer is backed off: its next messages go on at once with an
  `image_fetch_failed` attachment (dead-lettered, replayable with `dlq replay`) until its list is half empty, so
  the other routes go on (issue 16);
- `companion` image messages (matched on their own topic before any route) and the route's detections are joined
  by `companion.CompanionJoin`; the subscription to the image topics is derived from the config here.

The message then goes on (`forward`, the processor's `offer`) as `Inbound.with_image(...)`: with an `Attachment`
(the image, or the dead-letter reason of a refused or failed reference, or why it is missing) and, for a pair, the
image message as its companion, finished together with it by the processor's commit (`Inbound.ack`). An image no
detection claimed (and a parked message a redelivered copy replaced) is acked here, through itself: its raw entry
is finished and nothing is buffered for it. Routes without such references pass straight through (the service
does not even build this stage when no route has one). No exception escapes `offer` or the thread bodies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import DeadLetterReason, DecodeError, RouteNotFound
from mqtt_bridge.images.companion import JoinOutcome
from mqtt_bridge.images.reference_plans import ReferencePlan, build_plans, companion_subscriptions, has_reference
from mqtt_bridge.model.attachment import Attachment, ReferenceKind
from mqtt_bridge.model.bounded import ByteLRU, text_bytes
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.routing.router import Router

__all__ = ["FETCH_WORKERS", "NOT_IMAGE_TOPICS_BYTES", "ImageReferences"]

log = logging.getLogger(__name__)

FETCH_WORKERS = 4
_ROUTE_QUEUE = 64  # fetches of one route waiting before its next messages are backed off
_ROUTE_WORKERS = max(1, FETCH_WORKERS // 2)  # fetches of one route at a time: the others keep a worker
_ROOM_WAIT_S = 0.25  # how long the processor waits for room on a full list before it backs the route off
_Job = tuple[ReferencePlan, Inbound, str, dict[str, str]]
_TICK_S = 0.05
_MISSING_LOG_EVERY_S = 60.0
NOT_IMAGE_TOPICS_BYTES = 4 * 2**20  # the topics known not to be companion image topics (cache="image_topics")


class ImageReferences:
    """The stage in the processor for routes with url/file/companion images.

    `offer` is called by the processor thread; `run_timer` (companion windows) and `run_fetcher` (one per worker)
    are thread bodies the service starts. `forward` hands a message to the processor's commit (it never blocks).
    A message dropped here without being buffered (an image no detection claimed) is acked through itself.
    """

    def __init__(self, router: Router, forward: Callable[[Inbound], None], stats: Stats, stop: threading.Event,
                 max_payload_bytes: int) -> None:
        self._router = router
        self._forward = forward
        self._stats = stats
        self._stop = stop
        self._max_payload_bytes = max_payload_bytes
        self._plans = build_plans(router, stats)
        self._companions = [plan for plan in self._plans.values() if plan.kind == ReferenceKind.COMPANION]
        self.has_fetches = any(plan.kind != ReferenceKind.COMPANION for plan in self._plans.values())
        self._lock = threading.Lock()
        self._not_image_topics: ByteLRU[str, bool] = ByteLRU(
            "image_topics", NOT_IMAGE_TOPICS_BYTES, lambda topic, _: text_bytes(topic), 10_000)  # processor thread only
        jobs_lock = threading.Lock()
        self._jobs = threading.Condition(jobs_lock)  # guards the four below; workers wait on it for a job
        self._room = threading.Condition(jobs_lock)  # the processor waits on it for room on a route's list
        self._slow: set[int] = set()  # routes backed off (their list stayed full) until it is half empty again
        self._waiting: dict[int, deque[_Job]] = {}  # route index -> its fetches waiting, oldest first
        self._busy: dict[int, int] = {}  # route index -> its fetches running
        self._turn = 0  # round-robin position over the routes

    @staticmethod
    def is_needed(routes: list[RouteConfig]) -> bool:
        """Whether any route has a url, file or companion image (else the stage is not built at all)."""
        return any(has_reference(route) for route in routes)

    def subscriptions(self) -> list[str]:
        """The companion image topics to subscribe to, besides the routes' own filters."""
        return companion_subscriptions(self._router)

    @property
    def parked(self) -> int:
        """Messages waiting here: companion detections and images, and url/file messages being fetched."""
        with self._lock:
            parked = sum(plan.join.parked for plan in self._companions if plan.join is not None)
        with self._jobs:
            return parked + sum(len(w) for w in self._waiting.values()) + sum(self._busy.values())

    # --- the processor thread ---------------------------------------------------------------------------------------

    def offer(self, message: Inbound) -> None:
        """Take one message from the processor: park it, queue its fetch, or pass it on. Never raises."""
        try:
            if not self._dispatch(message):
                self._forward(message)
        except Exception:  # the processor's hand-off: log, count, and let ingest deal with the message as it is
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
                message.ack()
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
            self._queue_fetch(plan, message, topic, captures)
            return True
        try:
            detection_key = plan.detection_key(message.payload, topic, captures)
        except DecodeError:
            self._stats.add("companion_images_missing", label=plan.label)
            self._forward(message.with_image(Attachment(ReferenceKind.COMPANION, missing="no_key")))
            return True
        if detection_key is None:
            return False
        self._settle(plan, message, detection_key, is_image=False)
        return True

    def _queue_fetch(self, plan: ReferencePlan, message: Inbound, topic: str, captures: dict[str, str]) -> None:
        """Queue the fetch on its route's waiting list. On a full list, wait up to `_ROOM_WAIT_S` for room (a burst
        for a healthy server, or a backlog read from the raw log, is fetched, not backed off); a list that stays
        full marks the route slow, and its messages are backed off at once until the list is half empty."""
        index = plan.route.index
        with self._jobs:
            waiting = self._waiting.setdefault(index, deque())
            if index not in self._slow and len(waiting) >= _ROUTE_QUEUE:
                self._room.wait_for(lambda: len(waiting) < _ROUTE_QUEUE or self._stop.is_set(), _ROOM_WAIT_S)
                if len(waiting) >= _ROUTE_QUEUE:
                    self._slow.add(index)
            backed_off = index in self._slow
            if not backed_off:
                waiting.append((plan, message, topic, captures))
                self._jobs.notify()
        if backed_off:
            self._stats.add("image_fetches_backed_off", label=plan.label)
            reason = (DeadLetterReason.IMAGE_FETCH_FAILED if plan.kind == ReferenceKind.URL
                      else DeadLetterReason.IMAGE_READ_FAILED)
            self._forward(message.with_image(Attachment(plan.kind, problem=(
                reason, f"backed off: {_ROUTE_QUEUE} fetches of route {plan.label} already waiting "
                        "(a slow image server); replay it with `mqtt-bridge dlq replay`"))))

    def _next_job(self, timeout_s: float) -> _Job | None:
        """The oldest waiting fetch of the next route (round-robin) that has fewer than `_ROUTE_WORKERS` running."""
        with self._jobs:
            ends = time.monotonic() + timeout_s
            while True:
                routes = [index for index, waiting in self._waiting.items()
                          if waiting and self._busy.get(index, 0) < _ROUTE_WORKERS]
                if routes:
                    routes.sort()
                    index = next((i for i in routes if i >= self._turn), routes[0])
                    self._turn = index + 1
                    self._busy[index] = self._busy.get(index, 0) + 1
                    job = self._waiting[index].popleft()
                    if len(self._waiting[index]) <= _ROUTE_QUEUE // 2:
                        self._slow.discard(index)
                    self._room.notify_all()
                    return job
                remaining = ends - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._jobs.wait(remaining)

    def _job_done(self, plan: ReferencePlan) -> None:
        with self._jobs:
            self._busy[plan.route.index] -= 1
            self._jobs.notify()

    def _image_topic(self, topic: str) -> tuple[ReferencePlan, dict[str, str]] | None:
        """The companion route whose image topic `topic` is, with its levels (cached for the other topics, which
        repeat, so that the routes' own messages pay one dict lookup here)."""
        if topic in self._not_image_topics:
            return None
        levels = topic.split("/")
        for companion in self._companions:
            captures = companion.image_topic.match(levels)
            if captures is not None:
                return companion, captures
        self._not_image_topics.put(topic, True)  # bounded in bytes: topics may carry ids
        return None

    def _settle(self, plan: ReferencePlan, message: Inbound, key: str, *, is_image: bool) -> None:
        join = plan.join
        assert join is not None
        with self._lock:
            now = time.monotonic()
            outcome = (join.add_image(message, key, now, len(message.payload)) if is_image
                       else join.add_detection(message, key, now))
        self._hand_on(plan, outcome)

    def _hand_on(self, plan: ReferencePlan, outcome: JoinOutcome[Inbound]) -> None:
        """Forward what a join step released (outside the lock)."""
        for detection, image in outcome.paired:
            self._stats.add("companion_images_paired", label=plan.label)
            self._forward(detection.with_image(Attachment(ReferenceKind.COMPANION, image.payload), (image,)))
        for detection, why in outcome.unpaired:
            self._stats.add("companion_images_missing", label=plan.label)
            plan.missing_since_log += 1
            now = time.monotonic()
            if now - plan.last_missing_log >= _MISSING_LOG_EVERY_S:  # at most one line a minute per route
                log.warning("companion images missing route=%s count=%d last_reason=%s last_topic=%s", plan.label,
                            plan.missing_since_log, why, detection.topic[:200].decode("utf-8", "replace"))
                plan.last_missing_log, plan.missing_since_log = now, 0
            self._forward(detection.with_image(Attachment(ReferenceKind.COMPANION, missing=why)))
        for image in outcome.dropped:
            self._stats.add("companion_images_dropped", label=plan.label)
            image.ack()  # deliberately not buffered: no detection claimed it in time (README)
        for message in outcome.superseded:
            message.ack()  # a redelivered copy took its place: its raw entry is done, nothing to buffer

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
            except Exception:  # a thread loop: log, count, go on (parked messages stay in the raw log, never lost)
                log.exception("image reference timer error")
                self._stats.add("intake_errors")
        log.info("image reference timer stopped parked=%d (in the raw log: processed again after a restart)",
                 self.parked)

    def run_fetcher(self) -> None:
        """Fetch or read queued url/file references and pass the messages on, until stopped. Thread body."""
        while not self._stop.is_set():
            try:
                job = self._next_job(0.2)
            except Exception:  # a thread loop: log, count, go on
                log.exception("image fetch worker error")
                self._stats.add("intake_errors")
                continue
            if job is None:
                continue
            plan, message, topic, captures = job
            try:
                self._forward(message.with_image(plan.resolve(message.payload, topic, captures)))
            except Exception:  # a thread loop: the message stays in the raw log and comes back after a restart
                log.exception("image fetch worker error route=%s", plan.label)
                self._stats.add("intake_errors")
            finally:
                self._job_done(plan)
