"""`mqtt-bridge demo`, `broker`, `emulator`, `bench` and `publish`: the development and test tools.

Owns: starting the dev tools from the command line, and the one rule that keeps them out of the product: this is the
only module outside `devtools/` that imports it, and only inside the command functions, so that `run` and the
operator tools never load the embedded broker, the emulator or the simulator. The embedded broker (amqtt) is an
optional extra: without it `demo` and `broker` exit 2 and say how to install it. `publish` is here too: it sends
test messages with the publisher SDK.
"""

from __future__ import annotations

import argparse
import base64
import signal
import sys
import threading
from pathlib import Path

import orjson

from mqtt_bridge.cli.common import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, on_config_error

__all__ = ["DEMO_EXTRA", "bench_command", "broker_command", "demo_command", "emulator_command", "publish_command"]

DEMO_EXTRA = "pip install 'mqtt-vision-bridge[demo]'"


def _embedded_broker_missing(what: str) -> bool:
    """True, with the reason on stderr, when the optional embedded broker (amqtt) is not installed."""
    try:
        import mqtt_bridge.devtools.broker  # noqa: F401, PLC0415 - amqtt is an optional extra
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "amqtt":
            raise
        print(f"{what} needs the embedded broker: {DEMO_EXTRA}", file=sys.stderr)
        return True
    return False


def demo_command(args: argparse.Namespace) -> int:
    """`demo`: broker + emulator + bridge + simulated line in one process, on the demo config in the package."""
    if _embedded_broker_missing("the demo"):
        return EXIT_CONFIG
    from mqtt_bridge.devtools.demo import DemoSettings, run_demo  # noqa: PLC0415

    config_path = Path(args.config) if args.config else None
    if config_path is not None and not config_path.is_file():
        print(f"demo config {args.config} not found: pass an existing --config FILE, or none for the demo's own",
              file=sys.stderr)
        return EXIT_CONFIG
    settings = DemoSettings(config_path=config_path, mqtt_port=args.mqtt_port, api_port=args.api_port,
                            interval_s=args.interval_s, duration_s=args.duration_s)
    return on_config_error(args.config or "demo config", lambda: run_demo(settings))


def broker_command(args: argparse.Namespace) -> int:
    """`broker`: the embedded MQTT 3.1.1 broker in the foreground."""
    if _embedded_broker_missing("`mqtt-bridge broker`"):
        return EXIT_CONFIG
    from mqtt_bridge.devtools.broker import serve  # noqa: PLC0415

    serve(args.host, args.port)
    return EXIT_OK


def emulator_command(args: argparse.Namespace) -> int:
    """`emulator`: the local Vision Events API emulator until Ctrl-C or SIGTERM."""
    from mqtt_bridge.devtools.emulator.server import ALL_SCOPES, Emulator  # noqa: PLC0415

    emulator = Emulator(args.host, args.port, api_keys={args.api_key: ALL_SCOPES},
                        auto_create_use_cases=args.auto_create_use_cases,
                        list_unused_use_cases=args.list_unused_use_cases)
    for use_case in args.use_case or []:
        emulator.add_use_case(f"Use case {use_case}", use_case)
    stop = threading.Event()
    # SIGTERM ends it as Ctrl-C does: a container engine stops PID 1 with SIGTERM, which Python ignores by default there
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    emulator.start()
    print(f"Vision Events emulator on {emulator.url}/ (API key {args.api_key!r}); Ctrl-C or SIGTERM stops", flush=True)
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def bench_command(args: argparse.Namespace) -> int:
    """`bench`: the bridge against side-by-side baselines (needs Mosquitto)."""
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


def publish_command(args: argparse.Namespace) -> int:
    """`publish`: a detection message (from --message, --file or stdin), QoS 1, `--count` times."""
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
