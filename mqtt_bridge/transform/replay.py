"""Replaying a capture: what each captured message would become, with the state of a real run (issue 13 item 6).

Owns: one pass over captured messages in their order, with the capture's times as the clock, through the same
stages as the bridge: companion images joined to their detections by the routes' `CompanionJoin` (windows
measured in capture time; a retained image dropped, as `images.references` does), url/file references resolved
through their `ReferencePlan` when asked (`resolve_references`; else the message goes on without its image and
the outcome says `image_not_resolved`), and then `DryRun` (the real `Ingestor`: decoder state such as Sparkplug
births, debounce, eventIds). Outcomes come out in the order the bridge would buffer them: a parked detection
when its image comes or its window ends (`finish` ends every window). No broker, buffer or API; the only I/O is
the url/file reads `resolve_references` asks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import DecodeError, RouteNotFound
from mqtt_bridge.images.companion import CompanionJoin, JoinOutcome
from mqtt_bridge.images.reference_plans import build_plans
from mqtt_bridge.model.attachment import Attachment, ReferenceKind
from mqtt_bridge.model.capture import CapturedMessage
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.dryrun import DryRun

__all__ = ["CaptureReplay", "ReplayCounts"]


class ReplayCounts:
    """What a replay did, for its summary line."""

    def __init__(self) -> None:
        self.messages = 0
        self.events = 0
        self.dead_letters = 0
        self.paired = 0
        self.unpaired = 0
        self.images_dropped = 0
        self.suppressed = 0
        self.not_resolved = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by name."""
        return dict(vars(self))


class CaptureReplay:
    """Feeds captured messages, in order, through the companion joins, the references and a `DryRun`."""

    def __init__(self, routes: list[RouteConfig], max_payload_bytes: int, *, resolve_references: bool = False,
                 now: datetime | None = None) -> None:
        """`now` pins the clock of the API's timestamp window (the receive times are the capture's)."""
        self._router = Router(routes)
        self._plans = build_plans(self._router, None)
        # the replay's own joins (the plans' joins hold live `Inbound`s): the same window and bound per route
        self._joins: dict[int, CompanionJoin[CapturedMessage]] = {}
        for index, plan in self._plans.items():
            companion = plan.route.config.image.companion
            if plan.kind == ReferenceKind.COMPANION and companion is not None:
                self._joins[index] = CompanionJoin(companion.window_s, companion.max_parked)
        self._companions = [self._plans[index] for index in self._joins]
        self._resolve = resolve_references
        self._max_payload_bytes = max_payload_bytes
        self._dry_run = DryRun(routes, max_payload_bytes, now=now)
        self.counts = ReplayCounts()

    def replay(self, messages: Iterable[CapturedMessage]) -> Iterator[JsonDict]:
        """Every outcome of `messages`, then of what was still parked at the end."""
        for message in messages:
            yield from self.feed(message)
        yield from self.finish()

    def feed(self, message: CapturedMessage) -> list[JsonDict]:
        """One captured message: the outcomes it releases (none while it waits for its companion)."""
        self.counts.messages += 1
        outcomes = self._expire(message.received_at_s)
        taken = self._dispatch(message, outcomes)
        if not taken:
            outcomes.append(self._run(message, None))
        return outcomes

    def finish(self) -> list[JsonDict]:
        """End every companion window: detections still waiting go on without their image."""
        return self._expire(float("inf"))

    # --- the stages --------------------------------------------------------------------------------------------------

    def _dispatch(self, message: CapturedMessage, outcomes: list[JsonDict]) -> bool:
        """True when the message was taken by a companion join or resolved here (the outcomes are appended)."""
        try:
            topic = message.topic.decode("utf-8")
        except UnicodeDecodeError:
            return False
        levels = topic.split("/")
        for plan in self._companions:
            captures = plan.image_topic.match(levels)
            if captures is not None:
                if message.retain:  # an old picture replayed on subscribe: never paired (images.references)
                    self.counts.images_dropped += 1
                    return True
                key = plan.image_key.render(captures, topic, None)
                join = self._joins[plan.route.index]
                self._hand_on(join.add_image(message, key, message.received_at_s, len(message.payload)), outcomes)
                return True
        if len(message.payload) > self._max_payload_bytes:
            return False
        try:
            route, captures = self._router.match(topic)
        except RouteNotFound:
            return False
        route_plan = self._plans.get(route.index)
        if route_plan is None:
            return False
        plan = route_plan
        if plan.kind != ReferenceKind.COMPANION:
            if self._resolve:
                outcomes.append(self._run(message, plan.resolve(message.payload, topic, captures)))
            else:
                self.counts.not_resolved += 1
                outcome = self._run(message, None)
                outcome["image_not_resolved"] = f"{plan.kind.value} (give --fetch-images to fetch or read it)"
                outcomes.append(outcome)
            return True
        try:
            detection_key = plan.detection_key(message.payload, topic, captures)
        except DecodeError:
            self.counts.unpaired += 1
            outcomes.append(self._run(message, Attachment(ReferenceKind.COMPANION, missing="no_key")))
            return True
        if detection_key is None:
            return False
        self._hand_on(self._joins[route.index].add_detection(message, detection_key, message.received_at_s),
                      outcomes)
        return True

    def _expire(self, now_s: float) -> list[JsonDict]:
        outcomes: list[JsonDict] = []
        for join in self._joins.values():
            deadline = join.next_deadline()
            if deadline is not None and deadline <= now_s:
                self._hand_on(join.expire(now_s), outcomes)
        return outcomes

    def _hand_on(self, outcome: JoinOutcome[CapturedMessage], out: list[JsonDict]) -> None:
        for detection, image in outcome.paired:
            self.counts.paired += 1
            out.append(self._run(detection, Attachment(ReferenceKind.COMPANION, image.payload),
                                 companion=image.topic_text))
        for detection, why in outcome.unpaired:
            self.counts.unpaired += 1
            out.append(self._run(detection, Attachment(ReferenceKind.COMPANION, missing=why)))
        self.counts.images_dropped += len(outcome.dropped)

    def _run(self, message: CapturedMessage, attachment: Attachment | None, companion: str = "") -> JsonDict:
        outcome = self._dry_run.run_bytes(message.topic, message.payload, message.received_at_s, attachment)
        outcome["t"] = message.received_at_s
        if companion:
            outcome["companion_image_topic"] = companion
        events = outcome.get("events")
        self.counts.events += len(events) if isinstance(events, list) else 0
        self.counts.dead_letters += "dead_letter" in outcome
        suppressed = outcome.get("suppressed")
        self.counts.suppressed += suppressed if isinstance(suppressed, int) else 0
        return outcome
