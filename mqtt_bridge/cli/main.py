"""The `mqtt-bridge` command: argument parsing, logging set-up, and named exit codes.

Owns: the user-facing commands (run, check-config, schema, broker, emulator, demo, publish, dlq, status, decode) and
the mapping from errors to exit codes. Business logic lives in the modules it calls.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import yaml

from mqtt_bridge import __version__
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import load_config, redacted
from mqtt_bridge.errors import BufferLocked, ConfigError, StorageError

__all__ = ["EXIT_BUFFER", "EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "EXIT_UNAVAILABLE", "main"]

EXIT_OK = 0           # clean exit (including after SIGTERM with the batch in flight delivered)
EXIT_FAILURE = 1      # a thread died or a fatal runtime error; the buffer keeps everything, restart me
EXIT_CONFIG = 2       # usage or configuration error: every problem is printed with its key path
EXIT_UNAVAILABLE = 3  # a broker or API the command needs could not be reached
EXIT_BUFFER = 4       # the buffer directory is unusable, locked by another instance, or corrupt

log = logging.getLogger("mqtt_bridge")


def _setup_logging(level: str, fmt: str = "text", config: BridgeConfig | None = None) -> None:
    from mqtt_bridge.observe.logs import configure_logging  # noqa: PLC0415

    configure_logging(level, fmt, _secrets(config) if config is not None else ())


def _secrets(config: BridgeConfig) -> list[str]:
    """The secret values of a config, for the log redaction filter (a missing secret file is skipped)."""
    values = [config.health.token.get_secret_value() if config.health.token else ""]
    for read in (config.api.api_key_value, config.mqtt.password_value):
        try:
            values.append(read() or "")
        except ConfigError:
            continue
    return values


def _print_config_errors(path: str, exc: ConfigError) -> None:
    print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
    for key, message in exc.problems:
        print(f"  {key}: {message}", file=sys.stderr)


def _load(path: str) -> BridgeConfig:
    from mqtt_bridge.images.reference_plans import compile_image_references  # noqa: PLC0415
    from mqtt_bridge.observe.receipts import compile_receipt_topics  # noqa: PLC0415 - keeps `--version` and `schema` light
    from mqtt_bridge.routing.router import Router  # noqa: PLC0415

    config = load_config(Path(path))
    Router(list(config.routes))  # template errors are config errors too
    compile_receipt_topics(config.routes)
    compile_image_references(list(config.routes))
    return config


def _cmd_run(args: argparse.Namespace) -> int:
    from mqtt_bridge.service import Service  # noqa: PLC0415

    try:
        config = _load(args.config)
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    _setup_logging(args.log_level or config.logging.level, config.logging.format, config)
    try:
        return Service(config, allow_missing_use_cases=args.allow_missing_use_cases).run()
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    except StorageError as exc:
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
    from mqtt_bridge.devtools.broker import serve  # noqa: PLC0415

    serve(args.host, args.port)
    return EXIT_OK


def _cmd_emulator(args: argparse.Namespace) -> int:
    from mqtt_bridge.devtools.emulator.server import ALL_SCOPES, Emulator  # noqa: PLC0415

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
    from mqtt_bridge.devtools.demo import DemoSettings, run_demo  # noqa: PLC0415

    if not Path(args.config).is_file():
        # config/ ships with the source tree (make demo), not inside the wheel
        print(f"demo config {args.config} not found: run the demo from a source checkout (`make demo`) or pass "
              "--config FILE", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return run_demo(DemoSettings(config_path=Path(args.config), mqtt_port=args.mqtt_port,
                                     api_port=args.api_port, interval_s=args.interval_s, duration_s=args.duration_s))
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG


def _cmd_publish(args: argparse.Namespace) -> int:
    from mqtt_bridge.mqtt.client import PublishError  # noqa: PLC0415
    from mqtt_bridge.sdk.publisher import Publisher  # noqa: PLC0415

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


def _ops(args: argparse.Namespace, action: Callable[[BridgeConfig], int]) -> int:
    """Load the config, run a tool, and map its errors to exit codes."""
    from mqtt_bridge.cli.tools import UsageError  # noqa: PLC0415
    from mqtt_bridge.errors import ApiError, AuthApiError  # noqa: PLC0415

    try:
        config = _load(args.config)
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    try:
        return action(config)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    except BufferLocked:
        print("the bridge is running on this buffer; stop it first (the broker keeps new messages meanwhile)",
              file=sys.stderr)
        return EXIT_BUFFER
    except StorageError as exc:
        print(f"buffer unusable: {exc}", file=sys.stderr)
        return EXIT_BUFFER
    except AuthApiError as exc:
        print(f"the API refused the key: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ApiError as exc:
        print(f"the API did not answer as expected: {exc} {exc.body[:300]}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _selection(args: argparse.Namespace) -> object:
    from mqtt_bridge.cli.tools import DeadLetterFilter, parse_when  # noqa: PLC0415

    return DeadLetterFilter(reason=args.reason, route=args.route,
                            since_s=parse_when(args.since) if args.since else None,
                            until_s=parse_when(args.until) if args.until else None, keys=tuple(args.keys or ()))


def _cmd_dlq(args: argparse.Namespace) -> int:
    from mqtt_bridge.cli import tools  # noqa: PLC0415

    def action(config: BridgeConfig) -> int:
        selection = _selection(args)
        assert isinstance(selection, tools.DeadLetterFilter)
        if args.action == "show" and len(selection.keys) != 1:
            raise tools.UsageError("dlq show needs exactly one key (see `mqtt-bridge dlq list`)")
        buffer = tools.open_buffer(config)
        try:
            if args.action == "list":
                tools.dlq_list(buffer, selection, sys.stdout, as_json=args.json)
            elif args.action == "show":
                tools.dlq_show(buffer, selection.keys[0], sys.stdout,
                               payload_to=Path(args.payload_out) if args.payload_out else None)
            elif args.action == "replay":
                result = tools.dlq_replay(buffer, config, selection)
                failing = ", ".join(f"{k}: {v}" for k, v in sorted(result.still_failing.items())) or "none"
                print(f"replayed {result.requeued} dead letter(s) as {result.events} event(s); "
                      f"still failing (kept): {failing}" +
                      (f"; not replayable: {dict(result.skipped)}" if result.skipped else ""))
                return EXIT_OK if not result.still_failing else EXIT_FAILURE
            else:
                deleted = tools.dlq_purge(buffer, selection, purge_all=args.all, confirmed=args.yes)
                print(f"purged {deleted} dead letter(s)")
        finally:
            buffer.close()
        return EXIT_OK

    return _ops(args, action)


def _cmd_status(args: argparse.Namespace) -> int:
    from mqtt_bridge.cli import tools  # noqa: PLC0415

    return _ops(args, lambda config: tools.status(config, sys.stdout, as_json=args.json))


def _cmd_export(args: argparse.Namespace) -> int:
    from mqtt_bridge.cli import tools  # noqa: PLC0415

    def action(config: BridgeConfig) -> int:
        buffer = tools.open_buffer(config)
        try:
            result = tools.export_bundles(buffer, Path(args.out), route=args.route, limit=args.limit,
                                          delete=args.delete)
        finally:
            buffer.close()
        print(f"wrote {result.written} bundle(s) to {args.out}" +
              (f"; {result.too_large} over 25 MiB skipped (nothing deleted)" if result.too_large else "") +
              ("; exported events removed from the buffer" if args.delete and not result.too_large else ""))
        return EXIT_OK if not result.too_large else EXIT_FAILURE

    return _ops(args, action)


def _cmd_use_cases(args: argparse.Namespace) -> int:
    from mqtt_bridge.cli import tools  # noqa: PLC0415

    def action(config: BridgeConfig) -> int:
        if args.action == "list":
            tools.use_cases_list(config, sys.stdout, status_filter=args.status)
        else:
            if not args.name:
                raise tools.UsageError("use-cases create needs a NAME")
            tools.use_cases_create(config, args.name, sys.stdout)
        return EXIT_OK

    return _ops(args, action)


def _cmd_bench(args: argparse.Namespace) -> int:
    from mqtt_bridge.devtools.bench.runner import MODES, SYSTEMS, BenchSettings, run_bench  # noqa: PLC0415

    modes = tuple(args.modes.split(","))
    systems = tuple(args.systems.split(","))
    unknown = sorted((set(modes) - set(MODES)) | (set(systems) - set(SYSTEMS)))
    if unknown:
        print(f"unknown mode or system: {', '.join(unknown)} (modes: {', '.join(MODES)}; systems: "
              f"{', '.join(SYSTEMS)})", file=sys.stderr)
        return EXIT_CONFIG
    try:
        run_bench(BenchSettings(out_dir=Path(args.out), count=args.count, rate=args.rate,
                                rate_seconds=args.rate_seconds, repetitions=args.repetitions, modes=modes,
                                max_wait_s=args.max_wait_s, systems=systems))
    except RuntimeError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return EXIT_OK


def _cmd_decode(args: argparse.Namespace) -> int:
    from datetime import datetime  # noqa: PLC0415

    from mqtt_bridge.model.values import parse_timestamp  # noqa: PLC0415
    from mqtt_bridge.transform.dryrun import DryRun  # noqa: PLC0415

    try:
        config = _load(args.config)
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
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
    outcomes = []
    for index, name in enumerate(files):
        try:
            payload = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            print(f"cannot read {name}: {exc.strerror}", file=sys.stderr)
            return EXIT_CONFIG
        outcomes.append(dry_run.run(topics[index] if len(topics) > 1 else topics[0], payload))
    print(json.dumps(outcomes[0] if len(outcomes) == 1 else outcomes, indent=2, ensure_ascii=False))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mqtt-bridge", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"mqtt-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the bridge")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override logging.level")
    p.add_argument("--allow-missing-use-cases", action="store_true",
                   help="start even when a configured use case does not exist (warn instead of exit 2)")
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
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[2] / "config" / "demo.yaml"))
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

    p = sub.add_parser("bench", help="benchmark the bridge against side-by-side baselines (needs Mosquitto)")
    p.add_argument("--out", default="bench-results", help="folder for the JSON and PNG results")
    p.add_argument("--count", type=int, default=20_000, help="messages per drain/max run")
    p.add_argument("--rate", type=float, default=500.0, help="messages per second in rate mode")
    p.add_argument("--rate-seconds", type=float, default=10.0)
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--modes", default="drain,max,rate", help="comma-separated subset of drain,max,rate")
    p.add_argument("--max-wait-s", type=float, default=0.5, help="the bridge's flush.max_wait_s")
    p.add_argument("--systems", default="bridge,naive,receive-only",
                   help="comma-separated subset of bridge,naive,receive-only")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("dlq", help="list, show, replay or purge dead letters (bridge stopped)")
    p.add_argument("action", choices=["list", "show", "replay", "purge"])
    p.add_argument("keys", nargs="*", metavar="KEY", help="dead letter keys (dlq-…); show takes exactly one")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--reason", help="only this reason")
    p.add_argument("--route", help="only this route (its name, or its topic when unnamed)")
    p.add_argument("--since", help="dead-lettered at or after: ISO 8601, Unix time, or an age like 2h, 7d")
    p.add_argument("--until", help="dead-lettered before: ISO 8601, Unix time, or an age like 30m")
    p.add_argument("--json", action="store_true", help="list: one JSON object per line")
    p.add_argument("--payload-out", help="show: write the raw payload to this file")
    p.add_argument("--all", action="store_true", help="purge: every dead letter (no filter)")
    p.add_argument("--yes", action="store_true", help="purge: really delete")
    p.set_defaults(func=_cmd_dlq)

    p = sub.add_parser("status", help="one-screen summary from the running bridge, or from its buffer")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("export", help="write undelivered events as Vision Events bundles (.tar.gz, bridge stopped)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--out", "-o", required=True, help="directory for event_*.tar.gz")
    p.add_argument("--route", help="only this route")
    p.add_argument("--limit", type=int, help="at most this many events (oldest first)")
    p.add_argument("--delete", action="store_true", help="remove the exported events from the buffer")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("use-cases", help="list or create use cases in the workspace")
    p.add_argument("action", choices=["list", "create"])
    p.add_argument("name", nargs="?", help="create: the new use case's name")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--status", choices=["active", "inactive"], default="active", help="list: which ones")
    p.set_defaults(func=_cmd_use_cases)

    p = sub.add_parser("decode", aliases=["dry-run"],
                       help="print the Vision Events a message would become, sending nothing (no broker, buffer, API)")
    p.add_argument("--config", "-c", required=True, help="YAML config file (its routes decide)")
    p.add_argument("--topic", "-t", action="append", required=True,
                   help="topic of the message; repeat it with --file for a sequence on several topics")
    p.add_argument("--file", "-f", action="append",
                   help="payload file (default: stdin); repeat for a sequence decoded in order, state kept")
    p.add_argument("--received-at", help="pretend the messages arrived at this ISO 8601 / Unix time (also the "
                                         "'now' of the API's one-year timestamp window)")
    p.set_defaults(func=_cmd_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mqtt-bridge`; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command not in ("run",):
        _setup_logging("INFO")
    code: int = args.func(args)
    return code
