"""`mqtt-bridge dlq list|show|replay|purge` and `mqtt-bridge reprocess`: the dead letters, on a stopped bridge's buffer.

Owns: selecting dead letters (`DeadLetterFilter`), printing them, replaying and purging them. The tools hold the
buffer's lock while they run: stop the bridge first (the broker keeps the new messages meanwhile). Replay (also
reached as `reprocess`, issue 14 item 3: one implementation): a dead letter from ingest (the raw message) is
ingested again with the *current* config and decoders, so a fixed route or decoder lets it pass; one the API
rejected (the buffered record) is queued again as it was. What passes is buffered for delivery; what still fails
stays dead-lettered, under the reason (and detail, route) it fails with now. Raises `UsageError`, `ConfigError`,
`StorageError`; `cli.common.operator_errors` maps them to exit codes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import orjson

from mqtt_bridge.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    Progress,
    UsageError,
    open_buffer,
    operator_errors,
    parse_when,
    with_config,
)
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.errors import DeadLetterReason
from mqtt_bridge.images.reference_plans import ReplayResolver
from mqtt_bridge.images.references import ImageReferences
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.transform.ingest import Ingestor

__all__ = [
    "API_REASONS",
    "DeadLetterFilter",
    "ReplayResult",
    "dlq_command",
    "dlq_list",
    "dlq_purge",
    "dlq_replay",
    "dlq_show",
    "reprocess_command",
]

# reasons whose dead letter holds a buffered Record (replay re-queues it); every other one holds the raw message
API_REASONS = (DeadLetterReason.API_REJECTED, DeadLetterReason.UPLOAD_REJECTED, DeadLetterReason.NOT_CONFIRMED)
_NOT_REPLAYABLE = (DeadLetterReason.UNREADABLE_RECORD,)
_REPLAY_CHUNK = 200


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


def dlq_command(args: argparse.Namespace) -> int:
    """`dlq ACTION`: exit 0, or 1 when a replay left some dead letters failing."""

    def action(config: BridgeConfig) -> int:
        selection = DeadLetterFilter(reason=args.reason, route=args.route,
                                     since_s=parse_when(args.since) if args.since else None,
                                     until_s=parse_when(args.until) if args.until else None,
                                     keys=tuple(args.keys or ()))
        if args.action == "show" and len(selection.keys) != 1:
            raise UsageError("dlq show needs exactly one key (see `mqtt-bridge dlq list`)")
        buffer = open_buffer(config)
        try:
            if args.action == "list":
                dlq_list(buffer, selection, sys.stdout, as_json=args.json)
            elif args.action == "show":
                dlq_show(buffer, selection.keys[0], sys.stdout,
                         payload_to=Path(args.payload_out) if args.payload_out else None)
            elif args.action == "replay":
                return _replay_and_report(buffer, config, selection)
            else:
                deleted = dlq_purge(buffer, selection, purge_all=args.all, confirmed=args.yes)
                print(f"purged {deleted} dead letter(s)")
        finally:
            buffer.close()
        return EXIT_OK

    return with_config(args.config, operator_errors(action))


def reprocess_command(args: argparse.Namespace) -> int:
    """`reprocess`: dead letters through the current config and decoders again; exit 0, or 1 if some still fail."""

    def action(config: BridgeConfig) -> int:
        buffer = open_buffer(config)
        try:
            return _replay_and_report(buffer, config, DeadLetterFilter(reason=args.reason, route=args.route))
        finally:
            buffer.close()

    return with_config(args.config, operator_errors(action))


def _replay_and_report(buffer: DiskBuffer, config: BridgeConfig, selection: DeadLetterFilter) -> int:
    result = dlq_replay(buffer, config, selection)
    failing = ", ".join(f"{k}: {v}" for k, v in sorted(result.still_failing.items())) or "none"
    print(f"replayed {result.requeued} dead letter(s) as {result.events} event(s); "
          f"still failing (kept): {failing}" +
          (f" ({result.relabelled} now under a new reason)" if result.relabelled else "") +
          (f"; not replayable: {dict(result.skipped)}" if result.skipped else ""))
    return EXIT_OK if not result.still_failing else EXIT_FAILURE


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)) if seconds else "-"


def _selected(buffer: DiskBuffer, selection: DeadLetterFilter) -> Iterator[tuple[str, DeadLetter]]:
    for key, letter in buffer.dead_letters():
        if selection.matches(key, letter):
            yield key, letter


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
    still_failing: Counter[str] = field(default_factory=Counter)  # by the reason they fail with now
    relabelled: int = 0  # of those, how many fail for another reason (or detail, or route) than before
    skipped: Counter[str] = field(default_factory=Counter)


def _replayed_records(letter: DeadLetter, ingestor: Ingestor,
                      resolve: ReplayResolver | None = None) -> tuple[list[Record], DeadLetter | None]:
    """The records a dead letter becomes now, or the dead letter it is now (a url/file image is fetched again)."""
    if letter.reason in API_REASONS:
        try:
            return [Record.from_bytes(letter.payload)], None
        except (ValueError, KeyError, TypeError):
            return [], dataclasses.replace(letter, reason=DeadLetterReason.UNREADABLE_RECORD,
                                           detail="the buffered record cannot be read back", dead_at_s=time.time())
    attachment = resolve(letter.topic, letter.payload) if resolve is not None else None
    result = ingestor.process(letter.topic.encode(), letter.payload, letter.received_at_s, attachment)
    if result.dead_letter is not None:
        return [], dataclasses.replace(result.dead_letter, dead_at_s=time.time())
    return result.records, None


def _is_relabelled(old: DeadLetter, new: DeadLetter) -> bool:
    return (old.reason, old.detail, old.route) != (new.reason, new.detail, new.route)


def dlq_replay(buffer: DiskBuffer, config: BridgeConfig, selection: DeadLetterFilter,
               progress_stream: TextIO | None = None) -> ReplayResult:
    """Re-ingest the selected dead letters: requeue what passes (chunks of 200, one transaction each), relabel the rest.

    A letter that still fails for the same reason, detail and route is left as it was; one that fails otherwise
    now is stored again under its new reason (with the time of this replay) and the old one deleted after: a crash
    in between leaves both, never neither.
    """
    ingestor = Ingestor(Router(list(config.routes)), config.mqtt.max_payload_bytes)
    resolve = ReplayResolver(list(config.routes)) if ImageReferences.is_needed(list(config.routes)) else None
    selected = list(_selected(buffer, selection))
    result = ReplayResult()
    progress = Progress(len(selected), "reprocessing", progress_stream)
    chunk: list[tuple[str, list[Record]]] = []
    relabelled: list[tuple[str, DeadLetter]] = []
    for key, letter in selected:
        if letter.reason in _NOT_REPLAYABLE:
            result.skipped[letter.reason] += 1
        else:
            records, failure = _replayed_records(letter, ingestor, resolve)
            if failure is not None:
                result.still_failing[failure.reason] += 1
                if _is_relabelled(letter, failure):
                    relabelled.append((key, failure))
            else:
                chunk.append((key, records))  # a message that now makes no event is requeued as nothing
        if len(chunk) >= _REPLAY_CHUNK:
            _requeue(buffer, chunk, result)
            chunk = []
        if len(relabelled) >= _REPLAY_CHUNK:
            _relabel(buffer, relabelled, result)
            relabelled = []
        progress.advance()
    _requeue(buffer, chunk, result)
    _relabel(buffer, relabelled, result)
    progress.close()
    return result


def _relabel(buffer: DiskBuffer, letters: list[tuple[str, DeadLetter]], result: ReplayResult) -> None:
    if letters:
        buffer.append([], [letter for _, letter in letters])  # the new one is durable before the old one goes
        buffer.delete_dead_letters([key for key, _ in letters])
        result.relabelled += len(letters)


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
