"""Operator tools behind `mqtt-bridge status`, `dlq list|show|replay|purge`, `export` and `use-cases`.

Owns: what each tool does and prints, on a buffer the bridge is not using (it holds the buffer's lock while it
runs: stop it first, the broker keeps the new messages meanwhile) or, for `status`, on the running bridge's health
server. Replay: a dead letter from ingest (the raw message) is ingested again with the *current* config, so a
fixed route or a created use case lets it pass; one the API rejected (the buffered record) is queued again as it
was. Raises `UsageError`, `ConfigError`, `BufferError_` or `ApiError`; `cli` maps them to exit codes.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson

from mqtt_bridge.api.bundle import BundleTooLarge, write_bundle
from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.errors import BridgeError, ConfigError
from mqtt_bridge.images.reference_plans import ReplayResolver
from mqtt_bridge.images.references import ImageReferences
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.model.values import JsonDict, JsonValue
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.transform.ingest import Ingestor

__all__ = [
    "API_REASONS",
    "DeadLetterFilter",
    "Progress",
    "ReplayResult",
    "UsageError",
    "dlq_list",
    "dlq_purge",
    "dlq_replay",
    "dlq_show",
    "export_bundles",
    "open_buffer",
    "parse_when",
    "status",
    "use_cases_create",
    "use_cases_list",
]

# reasons whose dead letter holds a buffered Record (replay re-queues it); every other one holds the raw message
API_REASONS = ("api_rejected", "upload_rejected")
_NOT_REPLAYABLE = ("unreadable_record",)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_REPLAY_CHUNK = 200


class UsageError(BridgeError):
    """The command line asks for something that cannot be done as asked (exit code 2)."""


def parse_when(text: str, now_s: float | None = None) -> float:
    """A time filter: ISO 8601 (`2024-05-01T08:00:00Z`), a Unix time, or an age such as `30m`, `2h`, `7d`."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return (time.time() if now_s is None else now_s) - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is not a time: use ISO 8601, a Unix time, or an age like 30m, 2h, 7d") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters a command acts on: all given conditions must hold."""

    reason: str | None = None
    route: str | None = None
    since_s: float | None = None
    until_s: float | None = None
    keys: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when nothing narrows the selection."""
        return not (self.reason or self.route or self.since_s or self.until_s or self.keys)

    def matches(self, key: str, letter: DeadLetter) -> bool:
        """Whether `letter` (stored under `key`) is selected."""
        return ((not self.keys or key in self.keys)
                and (self.reason is None or letter.reason == self.reason)
                and (self.route is None or letter.route == self.route)
                and (self.since_s is None or letter.dead_at_s >= self.since_s)
                and (self.until_s is None or letter.dead_at_s < self.until_s))


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal (logs and pipes stay clean)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self._stream = stream or sys.stderr
        self._width = width
        self.is_enabled = total > 0 and self._stream.isatty()
        self._drawn_at = 0.0

    def advance(self, count: int = 1) -> None:
        """Add `count` and redraw (at most ten times a second)."""
        self.done += count
        now = time.monotonic()
        if self.is_enabled and (now - self._drawn_at >= 0.1 or self.done >= self.total):
            self._drawn_at = now
            filled = int(self._width * min(self.done, self.total) / self.total)
            self._stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self._width - filled)}] "
                               f"{self.done}/{self.total}")
            self._stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.is_enabled:
            self._stream.write("\n")
            self._stream.flush()


def open_buffer(config: BridgeConfig) -> DiskBuffer:
    """Open the configured buffer for a tool (raises BufferLocked while the bridge runs on it)."""
    buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    buffer.open()
    return buffer


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)) if seconds else "-"


def _selected(buffer: DiskBuffer, selection: DeadLetterFilter) -> Iterator[tuple[str, DeadLetter]]:
    for key, letter in buffer.dead_letters():
        if selection.matches(key, letter):
            yield key, letter


# --- dlq ----------------------------------------------------------------------------------------------------------

def dlq_list(buffer: DiskBuffer, selection: DeadLetterFilter, out: TextIO, *, as_json: bool = False) -> int:
    """Print the selected dead letters, oldest first; returns how many."""
    shown = 0
    for key, letter in _selected(buffer, selection):
        shown += 1
        if as_json:
            out.write(orjson.dumps({"key": key, "deadAt": _when(letter.dead_at_s), "reason": letter.reason,
                                    "route": letter.route, "topic": letter.topic, "eventId": letter.event_id,
                                    "bytes": len(letter.payload), "detail": letter.detail[:500]}).decode() + "\n")
        else:
            out.write(f"{key}  {_when(letter.dead_at_s)}  reason={letter.reason}  route={letter.route or '-'}  "
                      f"topic={letter.topic}  bytes={len(letter.payload)}  detail={letter.detail[:160]}\n")
    if not as_json:
        out.write(f"{shown} dead letter(s); {buffer.depth} event(s) waiting for delivery\n")
    return shown


def dlq_show(buffer: DiskBuffer, key: str, out: TextIO, *, payload_to: Path | None = None) -> None:
    """Print one dead letter in full (the payload as a preview; `payload_to` writes its bytes to a file)."""
    letter = buffer.dead_letter(key)
    if letter is None:
        raise UsageError(f"no dead letter {key!r} (see `mqtt-bridge dlq list`)")
    preview = letter.payload[:400].decode("utf-8", errors="replace")
    kind = "buffered record" if letter.reason in API_REASONS else "raw MQTT message"
    lines = [f"key:         {key}", f"reason:      {letter.reason}", f"detail:      {letter.detail}",
             f"route:       {letter.route or '-'}", f"topic:       {letter.topic}",
             f"eventId:     {letter.event_id or '-'}", f"received:    {_when(letter.received_at_s)}",
             f"dead since:  {_when(letter.dead_at_s)}"]
    if letter.api_status is not None or letter.api_body:
        lines += [f"api status:  {letter.api_status}", f"api answer:  {letter.api_body[:2000]}"]
    lines += [f"payload:     {len(letter.payload)} bytes ({kind})", f"preview:     {preview!r}"]
    out.write("\n".join(lines) + "\n")
    if payload_to is not None:
        payload_to.write_bytes(letter.payload)
        out.write(f"payload written to {payload_to}\n")


@dataclass(slots=True)
class ReplayResult:
    """What a replay did."""

    requeued: int = 0
    events: int = 0
    still_failing: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


def _replayed_records(letter: DeadLetter, ingestor: Ingestor,
                      resolve: ReplayResolver | None = None) -> tuple[list[Record], str]:
    """The records a dead letter becomes now, or the reason it still fails (a url/file image is fetched again)."""
    if letter.reason in API_REASONS:
        try:
            return [Record.from_bytes(letter.payload)], ""
        except (ValueError, KeyError, TypeError):
            return [], "unreadable_record"
    attachment = resolve(letter.topic, letter.payload) if resolve is not None else None
    result = ingestor.process(letter.topic.encode(), letter.payload, letter.received_at_s, attachment)
    if result.dead_letter is not None:
        return [], result.dead_letter.reason
    return result.records, ""


def dlq_replay(buffer: DiskBuffer, config: BridgeConfig, selection: DeadLetterFilter,
               progress_stream: TextIO | None = None) -> ReplayResult:
    """Move the selected dead letters back into the queue (chunks of 200, one transaction each)."""
    ingestor = Ingestor(Router(list(config.routes)), config.mqtt.max_payload_bytes)
    resolve = ReplayResolver(list(config.routes)) if ImageReferences.is_needed(list(config.routes)) else None
    selected = list(_selected(buffer, selection))
    result = ReplayResult()
    progress = Progress(len(selected), "replaying", progress_stream)
    chunk: list[tuple[str, list[Record]]] = []
    for key, letter in selected:
        if letter.reason in _NOT_REPLAYABLE:
            result.skipped[letter.reason] += 1
        else:
            records, failure = _replayed_records(letter, ingestor, resolve)
            if failure:
                result.still_failing[failure] += 1
            else:
                chunk.append((key, records))  # a message that now makes no event is requeued as nothing
        if len(chunk) >= _REPLAY_CHUNK:
            _requeue(buffer, chunk, result)
            chunk = []
        progress.advance()
    _requeue(buffer, chunk, result)
    progress.close()
    return result


def _requeue(buffer: DiskBuffer, chunk: list[tuple[str, list[Record]]], result: ReplayResult) -> None:
    if chunk:
        buffer.requeue_dead_letters(chunk)
        result.requeued += len(chunk)
        result.events += sum(len(records) for _, records in chunk)


def dlq_purge(buffer: DiskBuffer, selection: DeadLetterFilter, *, purge_all: bool, confirmed: bool) -> int:
    """Delete the selected dead letters; returns how many. Needs a filter (or `purge_all`) and `confirmed`."""
    if selection.is_empty and not purge_all:
        raise UsageError("purge needs a filter (--reason, --route, --since, --until, a key) or --all")
    keys = [key for key, _ in _selected(buffer, selection)]
    if not confirmed:
        raise UsageError(f"{len(keys)} dead letter(s) match; add --yes to delete them")
    deleted = 0
    for start in range(0, len(keys), 500):
        deleted += buffer.delete_dead_letters(keys[start:start + 500])
    return deleted


# --- export -------------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class ExportResult:
    """What an export wrote."""

    written: int = 0
    too_large: int = 0
    paths: list[Path] = field(default_factory=list)


def export_bundles(buffer: DiskBuffer, directory: Path, *, route: str | None = None, limit: int | None = None,
                   delete: bool = False, progress_stream: TextIO | None = None) -> ExportResult:
    """Write undelivered events as bundles, oldest first. `delete` drops the exported ones from the buffer
    (only with no route filter, so that what is dropped is exactly the exported head of the queue)."""
    if delete and route is not None:
        raise UsageError("--delete exports the head of the queue: it cannot be combined with --route")
    directory.mkdir(parents=True, exist_ok=True)
    total = buffer.depth if limit is None else min(limit, buffer.depth)
    progress = Progress(total, "exporting", progress_stream)
    result = ExportResult()
    taken = 0
    for record in buffer.records():
        if limit is not None and taken >= limit:
            break
        if route is not None and record.route != route:
            continue
        taken += 1
        try:
            result.paths.append(write_bundle(record, directory))
            result.written += 1
        except BundleTooLarge:
            result.too_large += 1
        progress.advance()
    progress.close()
    if delete and taken and not result.too_large:
        buffer.complete(taken)
    return result


# --- status -------------------------------------------------------------------------------------------------------

def _fetch_status(config: BridgeConfig, timeout_s: float = 3.0) -> JsonDict | None:
    """The running bridge's /status.json, or None when no bridge answers."""
    if not config.health.enabled:
        return None
    host = config.health.host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - a bind-all address is reachable locally
    request = urllib.request.Request(f"http://{host}:{config.health.port}/status.json")
    if config.health.token is not None:
        request.add_header("Authorization", f"Bearer {config.health.token.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 - our own health server
            document = orjson.loads(answer.read())
    except (OSError, urllib.error.URLError, orjson.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _yes(value: JsonValue) -> str:
    return "yes" if value else "NO"


def _age(seconds: float) -> str:
    if seconds < 1:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def status(config: BridgeConfig, out: TextIO, *, as_json: bool = False) -> int:
    """Print a one-screen summary from the running bridge, or from the buffer when it is stopped.

    Returns 0 when the bridge is running and ready, or stopped with an empty queue; 1 otherwise.
    """
    live = _fetch_status(config)
    if live is not None:
        if as_json:
            out.write(orjson.dumps(live).decode() + "\n")
        else:
            _print_live(live, out)
        state = live.get("state")
        return 0 if isinstance(state, dict) and state.get("ready") else 1
    buffer = open_buffer(config)
    try:
        oldest = buffer.oldest_received_at_s()
        reasons = Counter(letter.reason for _, letter in buffer.dead_letters())
        summary: JsonDict = {"running": False, "buffer": str(config.buffer.path), "depth": buffer.depth,
                             "bytes": buffer.volume_bytes(), "oldestAgeS": time.time() - oldest if oldest else 0.0,
                             "deadLetters": buffer.dead_letter_count, "deadLettersByReason": dict(reasons)}
    finally:
        buffer.close()
    if as_json:
        out.write(orjson.dumps(summary).decode() + "\n")
    else:
        age = float(summary["oldestAgeS"]) if isinstance(summary["oldestAgeS"], float) else 0.0
        out.write(f"bridge:        stopped (no answer from its health server; read the buffer at "
                  f"{config.buffer.path})\n"
                  f"waiting:       {summary['depth']} event(s), oldest {_age(age)}, {summary['bytes']} bytes\n"
                  f"dead letters:  {summary['deadLetters']}"
                  + (f"  ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})" if reasons else "")
                  + "\n")
    return 0 if buffer.depth == 0 else 1


def _print_live(live: JsonDict, out: TextIO) -> None:
    state = live.get("state") if isinstance(live.get("state"), dict) else {}
    buffer = live.get("buffer") if isinstance(live.get("buffer"), dict) else {}
    totals = live.get("totals") if isinstance(live.get("totals"), dict) else {}
    assert isinstance(state, dict) and isinstance(buffer, dict) and isinstance(totals, dict)
    oldest = buffer.get("oldestAgeS")
    lines = [
        f"bridge:        running v{live.get('version')}, up {_age(float(str(live.get('uptimeS') or 0)))}, "
        f"{'READY' if state.get('ready') else 'NOT READY'}",
        f"mqtt:          connected={_yes(state.get('mqttConnected'))} subscribed={_yes(state.get('mqttSubscribed'))}"
        + (f" protocol={state.get('mqttProtocol')}" if state.get("mqttProtocol") else ""),
        f"api:           key accepted={_yes(state.get('apiReady'))}",
        f"buffer:        {buffer.get('depth')} waiting, oldest {_age(float(str(oldest or 0)))}, "
        f"{buffer.get('bytes')} bytes, writable={_yes(state.get('bufferWritable'))}, "
        f"backpressured={'YES' if state.get('backpressured') else 'no'}",
        f"totals:        received={totals.get('received')} delivered={totals.get('delivered')} "
        f"({totals.get('deliveredPerS')}/s) dead-lettered={totals.get('deadLettered')}",
    ]
    if state.get("mqttProblem"):
        lines.insert(2, f"mqtt problem:  {state.get('mqttProblem')}")
    if not state.get("ready") and state.get("notReadyReason"):
        lines.insert(1, f"not ready:     {state.get('notReadyReason')}")
    routes = live.get("routes")
    for route in routes if isinstance(routes, list) else []:
        if isinstance(route, dict):
            lines.append(f"route:         {route.get('route')}: {route.get('received')} received, "
                         f"{route.get('ratePerS')}/s")
    reasons = live.get("deadLettersByReason")
    if isinstance(reasons, dict) and reasons:
        lines.append("dead letters:  " + ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())))
    if state.get("lastError"):
        lines.append(f"last error:    {state.get('lastError')}")
    out.write("\n".join(lines) + "\n")


# --- use cases ----------------------------------------------------------------------------------------------------

def _client(config: BridgeConfig) -> VisionEventsClient:
    api = config.api
    return VisionEventsClient(api.base_url, api.api_key_value, api.connect_timeout_s, api.read_timeout_s)


def use_cases_list(config: BridgeConfig, out: TextIO, *, status_filter: str = "active") -> int:
    """Print the workspace's use cases, marking those the config's routes use; returns how many."""
    client = _client(config)
    try:
        items = client.list_use_cases(status_filter)
    finally:
        client.close()
    used: dict[str, list[str]] = {}
    for route in config.routes:
        used.setdefault(route.use_case, []).append(route.label)
    for item in items:
        ident = str(item.get("id", ""))
        note = f"  (route {', '.join(used[ident])})" if ident in used else ""
        out.write(f"{ident}  {item.get('name', '')}  {item.get('status', status_filter)}{note}\n")
    out.write(f"{len(items)} {status_filter} use case(s)\n")
    return len(items)


def use_cases_create(config: BridgeConfig, name: str, out: TextIO) -> str:
    """Create a use case and print its id (what `routes[].use_case` needs)."""
    if not 1 <= len(name.strip()) <= 256:
        raise ConfigError([("name", "a use case name has 1 to 256 characters")])
    client = _client(config)
    try:
        created = client.create_use_case(name.strip())
    finally:
        client.close()
    ident = str(created.get("id", ""))
    out.write(f"created use case {ident}  {created.get('name', name)}\nuse it in a route: use_case: {ident}\n")
    return ident
