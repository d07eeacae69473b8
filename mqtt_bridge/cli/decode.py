"""`mqtt-bridge decode` (alias `dry-run`): the Vision Events a message would become, sending nothing.

Owns: reading the payloads (files or stdin), the `--received-at` clock, and printing the dry run's outcome as JSON;
with `--capture FILE`, reading a capture (`model.capture`, written by `mqtt-bridge capture`) and printing, one JSON
line per outcome in the order the bridge would buffer them, what the replay (`transform.replay`: companion
pairing, debounce, decoder state, the capture's times) makes of it, with a summary on stderr. No broker, buffer
or API is touched (url/file images only with `--fetch-images`); the routes of the loaded config decide.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson

from mqtt_bridge.cli.common import EXIT_CONFIG, EXIT_OK, with_config
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.model.capture import CapturedMessage, CaptureFormatError
from mqtt_bridge.model.values import JsonDict, parse_timestamp
from mqtt_bridge.transform.dryrun import DryRun
from mqtt_bridge.transform.replay import CaptureReplay

__all__ = ["decode_command"]


def decode_command(args: argparse.Namespace) -> int:
    """`decode`: one outcome per payload, in order (the decoders' state is kept across a sequence)."""
    return with_config(args.config, lambda config: _decode(args, config))


def _decode(args: argparse.Namespace, config: BridgeConfig) -> int:
    now: datetime | None = None
    if args.received_at:
        now = parse_timestamp(args.received_at)
        if now is None:
            print(f"--received-at {args.received_at!r} is neither ISO 8601 nor a Unix time", file=sys.stderr)
            return EXIT_CONFIG
    if args.capture:
        if args.topic or args.file:
            print("--capture replays a capture file: give it without --topic/--file", file=sys.stderr)
            return EXIT_CONFIG
        return _replay(args.capture, config, now, resolve=args.fetch_images)
    if not args.topic:
        print("give --topic (with --file or stdin), or --capture FILE", file=sys.stderr)
        return EXIT_CONFIG
    files: list[str] = args.file or ["-"]
    topics: list[str] = args.topic
    if len(topics) not in (1, len(files)):
        print("give one --topic, or one --topic per --file", file=sys.stderr)
        return EXIT_CONFIG
    dry_run = DryRun(list(config.routes), config.mqtt.max_payload_bytes, now=now)
    outcomes: list[JsonDict] = []
    for index, name in enumerate(files):
        try:
            payload = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            print(f"cannot read {name}: {exc.strerror}", file=sys.stderr)
            return EXIT_CONFIG
        outcomes.append(dry_run.run(topics[index] if len(topics) > 1 else topics[0], payload))
    print(json.dumps(outcomes[0] if len(outcomes) == 1 else outcomes, indent=2, ensure_ascii=False))
    return EXIT_OK


class _BadCapture(Exception):
    """A capture line that cannot be read (the message names the line)."""


def _read_capture(path: str) -> Iterator[CapturedMessage]:
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                message = CapturedMessage.from_line(line)
            except CaptureFormatError as exc:
                raise _BadCapture(f"{path} line {number}: {exc}") from None
            if message is not None:
                yield message


def _replay(path: str, config: BridgeConfig, now: datetime | None, *, resolve: bool) -> int:
    """Print the outcome of every captured message, one JSON line each, and a summary on stderr."""
    replay = CaptureReplay(list(config.routes), config.mqtt.max_payload_bytes, resolve_references=resolve, now=now)
    out = sys.stdout.buffer
    try:
        for outcome in replay.replay(_read_capture(path)):
            out.write(orjson.dumps(outcome) + b"\n")
    except BrokenPipeError:  # `| head`: the reader has seen enough; keep the exit's flush from failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    except _BadCapture as exc:
        out.flush()
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    out.flush()
    counts = replay.counts
    print(f"{counts.messages} message(s): {counts.events} event(s), {counts.dead_letters} dead letter(s), "
          f"{counts.suppressed} debounced; companion images {counts.paired} paired, {counts.unpaired} missing, "
          f"{counts.images_dropped} unclaimed; {counts.not_resolved} url/file image(s) not fetched"
          + (" (--fetch-images fetches them)" if counts.not_resolved else ""), file=sys.stderr)
    return EXIT_OK
