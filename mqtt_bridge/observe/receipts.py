"""Delivery receipts: after an event is delivered or dead-lettered, publish `{eventId, status, reason, sourceTopic}`
on the route's `receipt_topic`, so that the software that sent the detection can confirm it reached the cloud.

Owns: compiling `routes[].receipt_topic` templates, sending the receipt message (`model.receipt`; the eventId of
a message dead-lettered at ingest comes from `transform.identity`), and a bounded hand-off queue so that receipts
never block or break delivery: the hooks only `put_nowait` (a full queue drops the receipt and counts it), the
thread body renders and hands the receipt to a non-blocking MQTT client (its own connection, see
`mqtt.publisher.MqttPublisher.start_background`) that keeps a bounded backlog while the broker is away. Receipts are
best effort: a lost receipt is counted in `receipts_lost{reason}`, never retried from disk. A receipt topic that
the bridge itself subscribes to is refused (it would feed its own receipts back as messages).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import orjson

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import ConfigError, DecodeError
from mqtt_bridge.model.receipt import Receipt
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.model.values import JsonValue, format_timestamp
from mqtt_bridge.observe.hooks import Outcome, OutcomeHook
from mqtt_bridge.observe.redact import redact
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.routing.router import CompiledRoute, Router
from mqtt_bridge.routing.templates import ValueTemplate
from mqtt_bridge.transform.identity import format_reads_own_id, message_event_id

__all__ = ["ReceiptClient", "Receipts", "compile_receipt_topics"]

log = logging.getLogger(__name__)

_PARSE_LIMIT = 1 << 20  # look for an event_id only in payloads up to 1 MiB
_REASON_CHARS = 500


class ReceiptClient(Protocol):
    """What receipts need from MQTT (`subscriber.MqttPublisher`)."""

    def publish_nowait(self, topic: str, payload: bytes) -> str:
        """Queue a QoS 1 publish; "" when accepted, else the reason it was not."""

    def flush(self, timeout_s: float) -> bool:
        """Wait for the last publish to be acknowledged."""


def compile_receipt_topics(routes: Sequence[RouteConfig]) -> dict[str, ValueTemplate]:
    """Receipt topic templates by route label. Raises ConfigError on unknown placeholders or payload fields."""
    router = Router(list(routes))
    out: dict[str, ValueTemplate] = {}
    problems: list[tuple[str, str]] = []
    for compiled in router.routes:
        template = compiled.config.receipt_topic
        if template is None:
            continue
        where = f"routes[{compiled.index}].receipt_topic"
        if "{payload." in template:
            problems.append((where, "receipt topics may use topic levels and {topic}, not payload fields"))
            continue
        try:
            out[compiled.label] = ValueTemplate(template, compiled.topic.names, where)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return out


def _is_publishable(topic: str) -> bool:
    return bool(topic) and not topic.startswith("$") and not any(c in topic for c in "+#\x00") and \
        len(topic.encode()) <= 65535


def _event_id_of_message(route: CompiledRoute, topic: str, payload: bytes) -> str:
    """The eventId ingest would have given a message that it dead-lettered (the sender waits for this id)."""
    document: JsonValue = None
    if len(payload) <= _PARSE_LIMIT:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            document = None
    return message_event_id(route.label, topic, payload, document, id_field=route.config.event_id_field,
                            reads_own_id=format_reads_own_id(route.config.format), raw_ids=route.config.event_id_raw)


class Receipts(OutcomeHook):
    """Receipts for the routes that ask for them. Hooks are cheap and never raise; `run` is the thread body."""

    def __init__(self, routes: Sequence[RouteConfig], client: ReceiptClient, stats: Stats,
                 max_pending: int = 10_000) -> None:
        self._templates = compile_receipt_topics(routes)
        self._router = Router(list(routes))  # its own instance: the router caches per thread of use
        self._by_label = {route.label: route for route in self._router.routes}
        self._client = client
        self._stats = stats
        self._queue: queue.Queue[tuple[str, str, str, str, bytes, str]] = queue.Queue(maxsize=max_pending)
        self._warned_loop: set[str] = set()

    # --- outcome hooks (called through `OutcomeHooks`; cheap, never raise) --------------------------------------

    def on_delivered(self, record: Record) -> None:
        """The flusher delivered `record`."""
        if record.route in self._templates:
            self._put((record.route, record.topic, record.event_id, Outcome.DELIVERED.value, b"", ""))

    def on_dead_lettered(self, record: Record, reason: str) -> None:
        """The flusher dead-lettered `record`."""
        if record.route in self._templates:
            self._put((record.route, record.topic, record.event_id, Outcome.DEAD_LETTERED.value, b"", reason))

    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        """Ingest dead-lettered these messages: a receipt for each one whose route is known."""
        for letter in dead_letters:
            if letter.route in self._templates:
                self._put((letter.route, letter.topic, letter.event_id, Outcome.DEAD_LETTERED.value, letter.payload,
                           f"{letter.reason}: {letter.detail}"))

    def _put(self, item: tuple[str, str, str, str, bytes, str]) -> None:
        item = (*item[:5], redact(item[5]))  # the reason text: the one redaction step (a second line)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._stats.add("receipts_lost", label="queue_full")
        except Exception:  # a receipt must never break delivery
            log.exception("receipt hand-off failed")
            self._stats.add("receipts_lost", label="error")

    # --- thread body --------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, drain_s: float = 2.0) -> None:
        """Publish receipts until `stop`; then publish what is queued for at most `drain_s`."""
        log.info("receipts started routes=%d", len(self._templates))
        deadline: float | None = None
        while True:
            if stop.is_set() and deadline is None:
                deadline = time.monotonic() + drain_s
            if deadline is not None and (self._queue.empty() or time.monotonic() > deadline):
                break
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._publish(*item)
            except Exception:  # no exception escapes a thread loop
                log.exception("receipt failed")
                self._stats.add("receipts_lost", label="error")
        lost = self._queue.qsize()
        if lost:
            self._stats.add("receipts_lost", lost, label="shutdown")
        self._client.flush(max(0.1, (deadline or time.monotonic()) - time.monotonic()))
        log.info("receipts stopped not_sent=%d", lost)

    def _publish(self, route_label: str, topic: str, event_id: str, status: str, payload: bytes,
                 reason: str) -> None:
        route = self._by_label.get(route_label)
        template = self._templates.get(route_label)
        if route is None or template is None:
            return
        captures = route.topic.match(topic.split("/")) or {}
        try:
            receipt_topic = template.render(captures, topic, None)
        except DecodeError:
            self._stats.add("receipts_lost", label="bad_topic")
            return
        if not _is_publishable(receipt_topic):
            self._stats.add("receipts_lost", label="bad_topic")
            return
        if self._is_subscribed(receipt_topic):
            self._stats.add("receipts_lost", label="loop")
            if route_label not in self._warned_loop:
                self._warned_loop.add(route_label)
                log.warning("receipt not sent route=%s reason=loop: the bridge subscribes to the receipt topic",
                            route_label)
            return
        if not event_id:
            event_id = _event_id_of_message(route, topic, payload)
        receipt = Receipt(event_id=event_id, status=status, reason=reason[:_REASON_CHARS], source_topic=topic,
                          route=route_label, timestamp=format_timestamp(datetime.now(tz=UTC)))
        refused = self._client.publish_nowait(receipt_topic, receipt.to_bytes())
        if refused:
            self._stats.add("receipts_lost", label=refused.split(":", 1)[0])
            log.debug("receipt not sent event_id=%s reason=%s", event_id, refused)
        else:
            self._stats.add("receipts_published")

    def _is_subscribed(self, topic: str) -> bool:
        try:
            self._router.match(topic)
        except DecodeError:
            return False
        return True
