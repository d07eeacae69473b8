"""`mqtt-bridge discover` and `mqtt-bridge capture`: listen to a broker read-only; describe it or write it down.

Owns: the broker settings from the flags (`cli.main` declares them) or a config's `mqtt` section, the listening
loop (a deadline, Ctrl-C ends it early, a progress line on a terminal), discover's table (per topic pattern:
messages, rate, size, format, images, the levels that vary) and its starter config (`--out`, or printed), and the
capture file (`capture --out`, `discover --record`: the line format of `model.capture`, written 0600: payloads are
plant data). The listener is `mqtt.listener` (clean session, QoS 0, random client id: it never acks into
anyone's session).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import queue
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from mqtt_bridge.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, Progress, with_config
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.dump import dump_yaml
from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.discover.starter import USE_CASE_PLACEHOLDER, build_starter
from mqtt_bridge.discover.survey import Finding, Survey
from mqtt_bridge.errors import ConfigError
from mqtt_bridge.model.capture import CapturedMessage
from mqtt_bridge.mqtt.listener import ListenError, ReadOnlyListener

__all__ = ["capture_command", "discover_command"]

_TICK_S = 0.1


def _mqtt_from_flags(args: argparse.Namespace) -> MqttConfig:
    tls: dict[str, object] = {"enabled": bool(args.tls or args.ca_file or args.cert_file)}
    for key in ("ca_file", "cert_file", "key_file"):
        if getattr(args, key):
            tls[key] = getattr(args, key)
    section: dict[str, object] = {"host": args.host, "port": args.port or (8883 if tls["enabled"] else 1883),
                                  "protocol": args.protocol, "tls": tls}
    if args.username:
        section["username"] = args.username
    if args.password_file:
        section["password_file"] = args.password_file
    try:
        return MqttConfig.model_validate(section)
    except ValidationError as exc:
        raise ConfigError([(f"--{'-'.join(str(p) for p in err['loc'] if p != 'tls').replace('_', '-')}",
                            err["msg"]) for err in exc.errors()]) from None


def _with_mqtt(args: argparse.Namespace, action: Callable[[MqttConfig], int]) -> int:
    """Run `action` with the broker settings of `--config`, or of the flags (a bad one is exit code 2)."""
    if args.config:
        def from_config(config: BridgeConfig) -> int:
            mqtt = config.mqtt
            if mqtt.protocol == "auto":  # the listener needs one version; 3.1.1 is spoken by every broker
                mqtt = mqtt.model_copy(update={"protocol": "3.1.1"})
            return action(mqtt)

        return with_config(args.config, from_config)
    try:
        mqtt = _mqtt_from_flags(args)
    except ConfigError as exc:
        for key, message in exc.problems:
            print(f"{key}: {message}", file=sys.stderr)
        return EXIT_CONFIG
    return action(mqtt)


def _open_new(path: str, force: bool) -> BinaryIO:
    """Open `path` for writing, private to the user (0600); refuses an existing file unless `force`."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    return os.fdopen(os.open(path, flags, 0o600), "wb")


def _listen(mqtt: MqttConfig, filters: list[str], seconds: float, on_message: Callable[[CapturedMessage], None],
            progress_label: Callable[[], str]) -> tuple[float, str | None]:
    """Listen for `seconds` (or until Ctrl-C), handing every message to `on_message` on this thread.

    Returns how long it listened and, when it could not connect, why."""
    heard: queue.SimpleQueue[CapturedMessage] = queue.SimpleQueue()
    listener = ReadOnlyListener(mqtt, filters, heard.put)
    try:
        listener.start()
    except ListenError as exc:
        return 0.0, str(exc)
    started = time.monotonic()
    progress = Progress(max(1, math.ceil(seconds)), "listening")
    shown = 0
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            with contextlib.suppress(queue.Empty):
                on_message(heard.get(timeout=_TICK_S))
            if int(elapsed) > shown:
                progress.label = progress_label()
                progress.advance(int(elapsed) - shown)
                shown = int(elapsed)
        progress.label = progress_label()
        progress.advance(progress.total - progress.done)  # the full bar: the time is up
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
        progress.close()
    while not heard.empty():  # what arrived before the disconnect
        on_message(heard.get_nowait())
    return time.monotonic() - started, None


def _nothing_heard(mqtt: MqttConfig, filters: list[str], seconds: float) -> int:
    print(f"heard nothing on {', '.join(filters)} from {mqtt.host}:{mqtt.port} in {seconds:.0f} s. Check that the "
          "devices publish now, the topic filter (--filter), and the broker's ACL for this user: a user may be "
          "allowed to connect yet to read nothing. Try a longer --seconds for rare messages.", file=sys.stderr)
    return EXIT_FAILURE


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024 or unit == "MiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} MiB"


def _describe(finding: Finding) -> list[str]:
    """The lines of one pattern in discover's table."""
    image = finding.image.value
    if finding.image_field:
        image += f" ({finding.image_field})"
    if finding.companion is not None:
        image += f" on {finding.companion.topic}"
    if finding.companion_of:
        image = f"raw image, companion of {finding.companion_of}"
    lines = [finding.pattern.template,
             f"    {len(finding.pattern.topics)} topic(s), {finding.messages} message(s), "
             f"{finding.rate_per_s:.2f} msg/s, payload {_size(finding.avg_bytes)} avg / {_size(finding.max_bytes)} "
             f"max, format {finding.format or 'unknown'}, images {image}"]
    for name, values in finding.pattern.values.items():
        more = "" if len(values) < 20 else ", ..."
        lines.append(f"    varies: {{{name}}} = {', '.join(values[:8])}{', ...' if len(values) > 8 else more}")
    return lines


def discover_command(args: argparse.Namespace) -> int:
    """`discover`: listen, print what each topic pattern carries, and write a starter config."""
    return _with_mqtt(args, lambda mqtt: _discover(args, mqtt))


def _discover(args: argparse.Namespace, mqtt: MqttConfig) -> int:
    filters: list[str] = args.filter or ["#"]
    survey = Survey()
    record = None
    if args.record:
        try:
            record = _open_new(args.record, args.force)
        except OSError as exc:
            print(f"cannot write {args.record}: {exc.strerror} (--force overwrites)", file=sys.stderr)
            return EXIT_CONFIG
    if args.out and Path(args.out).exists() and not args.force:
        print(f"{args.out} exists; give --force to overwrite it", file=sys.stderr)
        return EXIT_CONFIG

    def on_message(message: CapturedMessage) -> None:
        survey.add(message)
        if record is not None:
            record.write(message.to_line())

    try:
        listened_s, failure = _listen(mqtt, filters, args.seconds, on_message,
                                      lambda: f"listening ({survey.messages} messages, {survey.topic_count} topics)")
    finally:
        if record is not None:
            record.close()
    if failure is not None:
        print(failure, file=sys.stderr)
        return EXIT_UNAVAILABLE
    if survey.messages == 0:
        return _nothing_heard(mqtt, filters, listened_s)
    findings = survey.findings(listened_s)
    print(f"heard {survey.messages} message(s) on {survey.topic_count} topic(s) in {listened_s:.0f} s, "
          f"{len(findings)} pattern(s):")
    for finding in findings:
        print("\n".join(_describe(finding)))
    if survey.untracked:
        print(f"({survey.untracked} message(s) on further topics were counted but not told apart)")
    starter = build_starter(findings, mqtt)
    routes = starter.document.get("routes")
    if not routes:
        print("\nno pattern can become a route as it is; see above (a `generic` mapping may be needed)",
              file=sys.stderr)
        for note in starter.notes:
            print(f"  {note}", file=sys.stderr)
        return EXIT_FAILURE
    header = [f"Starter config written by `mqtt-bridge discover` on {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC",
              f"from {survey.messages} message(s) heard on {mqtt.host}:{mqtt.port} in {listened_s:.0f} s.",
              f"Before `mqtt-bridge run`: set every use_case ({USE_CASE_PLACEHOLDER}) and ROBOFLOW_API_KEY, check",
              "device_id/stream_id, and run `mqtt-bridge check-config` and `mqtt-bridge decode`.",
              *(["", "Notes:"] + [f"- {note}" for note in starter.notes] if starter.notes else [])]
    text = dump_yaml(starter.document, header)
    if args.out:
        with _open_new(args.out, args.force) as out:
            out.write(text.encode("utf-8"))
        print(f"\nwrote the starter config {args.out} ({len(routes) if isinstance(routes, list) else 0} "
              f"route(s)); fill in use_case: {USE_CASE_PLACEHOLDER}")
    else:
        print("\n" + text)
    if args.record:
        print(f"wrote the capture {args.record}")
    return EXIT_OK


def capture_command(args: argparse.Namespace) -> int:
    """`capture`: write the live traffic to a file, one JSON line per message."""
    return _with_mqtt(args, lambda mqtt: _capture(args, mqtt))


def _capture(args: argparse.Namespace, mqtt: MqttConfig) -> int:
    filters: list[str] = args.filter or ["#"]
    try:
        out = _open_new(args.out, args.force)
    except OSError as exc:
        print(f"cannot write {args.out}: {exc.strerror} (--force overwrites)", file=sys.stderr)
        return EXIT_CONFIG
    count = 0
    topics: set[bytes] = set()

    def on_message(message: CapturedMessage) -> None:
        nonlocal count
        out.write(message.to_line())
        count += 1
        if len(topics) < 100_000:
            topics.add(message.topic)

    with out:
        listened_s, failure = _listen(mqtt, filters, args.seconds, on_message,
                                      lambda: f"capturing ({count} messages)")
    if failure is not None:
        print(failure, file=sys.stderr)
        Path(args.out).unlink(missing_ok=True)
        return EXIT_UNAVAILABLE
    if count == 0:
        return _nothing_heard(mqtt, filters, listened_s)
    print(f"captured {count} message(s) on {len(topics)} topic(s) in {listened_s:.0f} s to {args.out}")
    return EXIT_OK
