"""The `mqtt-bridge` command: argument parsing, logging set-up, and named exit codes.

Owns: the user-facing commands (run, check-config, schema, broker, emulator, demo, publish, dlq, status) and the
mapping from errors to exit codes. Business logic lives in the modules it calls.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import yaml

from mqtt_bridge import __version__
from mqtt_bridge.config import BridgeConfig, load_config, redacted
from mqtt_bridge.errors import BufferError_, BufferLocked, ConfigError

__all__ = ["EXIT_BUFFER", "EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "EXIT_UNAVAILABLE", "main"]

EXIT_OK = 0           # clean exit (including after SIGTERM with the batch in flight delivered)
EXIT_FAILURE = 1      # a thread died or a fatal runtime error; the buffer keeps everything, restart me
EXIT_CONFIG = 2       # usage or configuration error: every problem is printed with its key path
EXIT_UNAVAILABLE = 3  # a broker or API the command needs could not be reached
EXIT_BUFFER = 4       # the buffer directory is unusable, locked by another instance, or corrupt

log = logging.getLogger("mqtt_bridge")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("amqtt", "transitions", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_config_errors(path: str, exc: ConfigError) -> None:
    print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
    for key, message in exc.problems:
        print(f"  {key}: {message}", file=sys.stderr)


def _load(path: str) -> BridgeConfig:
    from mqtt_bridge.routing import Router  # noqa: PLC0415 - keeps `--version` and `schema` light

    config = load_config(Path(path))
    Router(list(config.routes))  # template errors are config errors too
    return config


def _cmd_run(args: argparse.Namespace) -> int:
    from mqtt_bridge.service import Service  # noqa: PLC0415

    try:
        config = _load(args.config)
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    _setup_logging(args.log_level or config.logging.level, config.logging.format)
    try:
        return Service(config).run()
    except BufferError_ as exc:
        log.error("buffer unusable: %s", exc)
        return EXIT_BUFFER
    except OSError as exc:
        log.error("cannot start: %s (is health.port %d already in use?)", exc, config.health.port)
        return EXIT_UNAVAILABLE


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = _load(args.config)
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    print(f"# {args.config}: valid. Effective configuration (secrets redacted):")
    print(yaml.safe_dump(redacted(config), sort_keys=False), end="")
    return EXIT_OK


def config_schema() -> dict[str, object]:
    """The JSON Schema of the config file (what `config/schema.json` holds)."""
    schema = BridgeConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mqtt-vision-bridge configuration"
    return schema


def message_schema() -> dict[str, object]:
    """The JSON Schema of the canonical detection message (what `config/message.schema.json` holds)."""
    from mqtt_bridge.decode.canonical import CanonicalMessage  # noqa: PLC0415

    schema = CanonicalMessage.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "mqtt-vision-bridge/message/v1"
    return schema


def _cmd_schema(args: argparse.Namespace) -> int:
    schema = message_schema() if args.message else config_schema()
    print(json.dumps(schema, indent=2, sort_keys=True))
    return EXIT_OK


def _cmd_broker(args: argparse.Namespace) -> int:
    from mqtt_bridge.broker import serve  # noqa: PLC0415

    serve(args.host, args.port)
    return EXIT_OK


def _cmd_emulator(args: argparse.Namespace) -> int:
    from mqtt_bridge.emulator import ALL_SCOPES, Emulator  # noqa: PLC0415

    emulator = Emulator(args.host, args.port, api_keys={args.api_key: ALL_SCOPES},
                        auto_create_use_cases=args.auto_create_use_cases)
    for use_case in args.use_case or []:
        emulator.add_use_case(f"Use case {use_case}", use_case)
    emulator.start()
    print(f"Vision Events emulator on {emulator.url}/ (API key {args.api_key!r}); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from mqtt_bridge.demo import DemoSettings, run_demo  # noqa: PLC0415

    return run_demo(DemoSettings(config_path=Path(args.config), mqtt_port=args.mqtt_port, api_port=args.api_port,
                                 interval_s=args.interval_s, duration_s=args.duration_s))


def _cmd_publish(args: argparse.Namespace) -> int:
    from mqtt_bridge.publish import Publisher  # noqa: PLC0415
    from mqtt_bridge.subscriber import PublishError  # noqa: PLC0415

    if args.file:
        payload = Path(args.file).read_bytes()
    elif args.message:
        payload = args.message.encode()
    else:
        payload = sys.stdin.buffer.read()
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        print(f"the message is not JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.image:
        import base64  # noqa: PLC0415

        if not isinstance(document, dict):
            print("--image needs a JSON object message", file=sys.stderr)
            return EXIT_CONFIG
        document["image"] = {"data": base64.b64encode(Path(args.image).read_bytes()).decode(),
                             "name": Path(args.image).name}
        payload = orjson.dumps(document)
    try:
        with Publisher(args.host, args.port, client_id=args.client_id, username=args.username,
                       protocol=args.protocol) as publisher:
            for _ in range(args.count):
                publisher.publish_raw(args.topic, payload)
    except PublishError as exc:
        print(f"publish failed: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"published {args.count} message(s) to {args.topic}")
    return EXIT_OK


def _cmd_dlq(args: argparse.Namespace) -> int:
    from mqtt_bridge.buffer import DiskBuffer  # noqa: PLC0415

    try:
        config = _load(args.config)
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    try:
        buffer.open()
    except BufferLocked:
        print("the bridge is running on this buffer; stop it to inspect the dead letters", file=sys.stderr)
        return EXIT_BUFFER
    except BufferError_ as exc:
        print(f"buffer unusable: {exc}", file=sys.stderr)
        return EXIT_BUFFER
    try:
        shown = 0
        for key, letter in buffer.dead_letters():
            if args.reason and letter.reason != args.reason:
                continue
            shown += 1
            print(f"{key}  {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(letter.dead_at_s))}Z  "
                  f"reason={letter.reason}  route={letter.route or '-'}  topic={letter.topic}  "
                  f"bytes={len(letter.payload)}  detail={letter.detail[:160]}")
        print(f"{shown} dead letter(s); {buffer.depth} event(s) waiting for delivery")
    finally:
        buffer.close()
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mqtt-bridge", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"mqtt-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the bridge")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override logging.level")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check-config", help="validate a config; print it with secrets redacted")
    p.add_argument("config", help="YAML config file")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("schema", help="print the JSON Schema of the config (or of the canonical message)")
    p.add_argument("--message", action="store_true", help="the canonical detection message instead")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("broker", help="run the embedded MQTT 3.1.1 broker (amqtt)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.set_defaults(func=_cmd_broker)

    p = sub.add_parser("emulator", help="run the local Vision Events API emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", default="demo-key")
    p.add_argument("--use-case", action="append", help="use case id to create (repeatable)")
    p.add_argument("--auto-create-use-cases", action="store_true", help="accept any useCaseId")
    p.set_defaults(func=_cmd_emulator)

    p = sub.add_parser("demo", help="broker + emulator + bridge + simulated line, in one process")
    p.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "config" / "demo.yaml"))
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--api-port", type=int, default=8080)
    p.add_argument("--interval-s", type=float, default=1.0, help="seconds between frames per camera")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("publish", help="publish a detection message (canonical JSON) with QoS 1")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--topic", "-t", required=True)
    p.add_argument("--message", "-m", help="the JSON message (default: read stdin)")
    p.add_argument("--file", "-f", help="read the JSON message from a file")
    p.add_argument("--image", help="attach this image file inline (canonical messages)")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--client-id", default="mqtt-bridge-publish")
    p.add_argument("--username")
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="3.1.1")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser("dlq", help="list dead letters in the buffer (bridge stopped)")
    p.add_argument("action", choices=["list"])
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--reason", help="only this reason")
    p.set_defaults(func=_cmd_dlq)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mqtt-bridge`; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command not in ("run",):
        _setup_logging("INFO")
    code: int = args.func(args)
    return code
