"""`mqtt-bridge decode` (alias `dry-run`): the Vision Events a message would become, sending nothing.

Owns: reading the payloads (files or stdin), the `--received-at` clock, and printing the dry run's outcome as JSON.
No broker, buffer or API is touched; the routes of the loaded config decide.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from mqtt_bridge.cli.common import EXIT_CONFIG, EXIT_OK, with_config
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.model.values import JsonDict, parse_timestamp
from mqtt_bridge.transform.dryrun import DryRun

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
