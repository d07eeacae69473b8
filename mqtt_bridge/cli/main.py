"""The `mqtt-bridge` command: argument parsing, logging set-up, and named exit codes.

Owns: every command's flags (run, check-config, schema, decode, dlq, reprocess, status, export, use-cases,
verify, discover, capture; the dev tools demo, broker, emulator, bench, publish) and which family module runs it
(`COMMANDS`). A family module is imported only when its command runs (`command_function`), so `--version` and
`schema` stay light and no dev tool is loaded for `run`. What each command does lives in its family: `cli.run`,
`cli.decode`, `cli.dlq`, `cli.export`, `cli.status`, `cli.use_cases`, `cli.verify`, `cli.discover`, `cli.dev`;
what they share (exit codes, loading the config, error mapping) in `cli.common`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

from mqtt_bridge import __version__
from mqtt_bridge.cli.common import EXIT_BUFFER, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, setup_logging

__all__ = ["COMMANDS", "EXIT_BUFFER", "EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "EXIT_UNAVAILABLE", "command_function",
           "main"]
Command = Callable[[argparse.Namespace], int]


# command -> (family module in mqtt_bridge.cli, its function); the module is imported when the command runs
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run_command"),
    "check-config": ("run", "check_config_command"),
    "schema": ("run", "schema_command"),
    "broker": ("dev", "broker_command"),
    "emulator": ("dev", "emulator_command"),
    "demo": ("dev", "demo_command"),
    "publish": ("dev", "publish_command"),
    "bench": ("dev", "bench_command"),
    "dlq": ("dlq", "dlq_command"),
    "reprocess": ("dlq", "reprocess_command"),
    "status": ("status", "status_command"),
    "export": ("export", "export_command"),
    "use-cases": ("use_cases", "use_cases_command"),
    "verify": ("verify", "verify_command"),
    "decode": ("decode", "decode_command"),
    "discover": ("discover", "discover_command"),
    "capture": ("discover", "capture_command"),
}


def command_function(command: str) -> Command:
    """The function that runs `command` (its family module is imported now)."""
    family, name = COMMANDS[command]
    function: Command = getattr(importlib.import_module(f"mqtt_bridge.cli.{family}"), name)
    return function


def _listen_flags(parser: argparse.ArgumentParser, default_seconds: float) -> None:
    """The broker and listening flags discover and capture share."""
    parser.add_argument("--host", default="localhost", help="broker host (default localhost)")
    parser.add_argument("--port", type=int, help="broker port (default 1883, 8883 with --tls)")
    parser.add_argument("--config", "-c", help="take the broker settings from this config's mqtt section instead")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (the broker certificate is verified)")
    parser.add_argument("--ca-file", help="CA that signed the broker certificate (default: the system store)")
    parser.add_argument("--cert-file", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--key-file", help="private key (PEM) of the client certificate")
    parser.add_argument("--username", help="user name, if the broker requires one")
    parser.add_argument("--password-file", help="file holding the password (never on the command line)")
    parser.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1", help="MQTT version (default 3.1.1)")
    parser.add_argument("--filter", action="append", metavar="FILTER",
                        help="topic filter to listen to (repeatable; default '#')")
    parser.add_argument("--seconds", type=float, default=default_seconds,
                        help=f"how long to listen (default {default_seconds:g}; Ctrl-C ends it early)")
    parser.add_argument("--force", action="store_true", help="overwrite the output files if they exist")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mqtt-bridge", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"mqtt-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the bridge")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override logging.level")
    p.add_argument("--allow-missing-use-cases", action="store_true",
                   help="deprecated, no effect: a use case absent from the list only warns")
    p.add_argument("--single-process", action="store_true",
                   help="run receiver, processor and flusher as threads of one process (one core; for debugging "
                        "and small boxes) instead of a supervisor with a receiver and a worker process")
    p.set_defaults(runs="run")

    p = sub.add_parser("check-config", help="validate a config and print it with secrets redacted, or explain a key")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("--explain", metavar="KEY", help="print the reference of one config key (e.g. mqtt.protocol, "
                                                    "routes[].image.url.timeout_s); needs no config file")
    p.set_defaults(runs="check-config")

    p = sub.add_parser("schema", help="print the JSON Schema of the config (or of the canonical message)")
    p.add_argument("--message", action="store_true", help="the canonical detection message instead")
    p.set_defaults(runs="schema")

    p = sub.add_parser("broker", help="run the embedded MQTT 3.1.1 broker (amqtt)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.set_defaults(runs="broker")

    p = sub.add_parser("emulator", help="run the local Vision Events API emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", default="demo-key")
    p.add_argument("--use-case", action="append", help="use case id to create (repeatable)")
    p.add_argument("--auto-create-use-cases", action="store_true", help="accept any useCaseId")
    p.add_argument("--list-unused-use-cases", action="store_true",
                   help="list every use case, not only those that have recorded events (the documented list)")
    p.set_defaults(runs="emulator")

    p = sub.add_parser("demo", help="broker + emulator + bridge + simulated line, in one process")
    p.add_argument("--config", help="config file (default: the demo config inside the package)")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--api-port", type=int, default=8080)
    p.add_argument("--interval-s", type=float, default=1.0, help="seconds between frames per camera")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(runs="demo")

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
    p.add_argument("--protocol", choices=["auto", "5", "3.1.1"], default="auto",
                   help="MQTT version, as mqtt.protocol: auto tries 5 and falls back to 3.1.1 (default: auto)")
    p.set_defaults(runs="publish")

    p = sub.add_parser("bench", help="benchmark the bridge against side-by-side baselines (needs Mosquitto)")
    p.add_argument("--out", default="bench-results", help="folder for the JSON and PNG results")
    p.add_argument("--count", type=int, default=20_000, help="messages per drain/max run")
    p.add_argument("--rate", type=float, default=500.0, help="messages per second in rate mode")
    p.add_argument("--rate-seconds", type=float, default=10.0)
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--modes", default="drain,max,rate", help="comma-separated subset of drain,max,rate")
    p.add_argument("--max-wait-s", type=float, default=0.5, help="the bridge's flush.max_wait_s")
    p.add_argument("--systems", default="bridge,bridge-1proc,naive,naive-mqtt5,receive-only,receive-only-mqtt5",
                   help="comma-separated subset of bridge,bridge-1proc (the bridge with --single-process),naive,"
                        "naive-mqtt5,receive-only,receive-only-mqtt5")
    p.set_defaults(runs="bench")

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
    p.set_defaults(runs="dlq")

    p = sub.add_parser("reprocess", help="run dead letters through the current config and decoders again "
                                         "(after a fix; bridge stopped)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--reason", help="only dead letters with this reason")
    p.add_argument("--route", help="only this route (its name, or its topic when unnamed)")
    p.set_defaults(runs="reprocess")

    p = sub.add_parser("status", help="one-screen summary from the running bridge, or from its buffer")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.set_defaults(runs="status")

    p = sub.add_parser("export", help="write undelivered events as Vision Events bundles (.tar.gz, bridge stopped)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--out", "-o", required=True, help="directory for event_*.tar.gz")
    p.add_argument("--route", help="only this route")
    p.add_argument("--limit", type=int, help="at most this many events (oldest first)")
    p.add_argument("--delete", action="store_true", help="remove the exported events from the buffer")
    p.set_defaults(runs="export")

    p = sub.add_parser("use-cases", help="list or create use cases in the workspace, or check the routes' ones")
    p.add_argument("action", choices=["list", "create", "check"])
    p.add_argument("name", nargs="?", help="create: the new use case's name")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--status", choices=["active", "inactive"], default="active", help="list: which ones")
    p.set_defaults(runs="use-cases")

    p = sub.add_parser("verify", help="proof of delivery: ask the API for every recently delivered event (exit 1 when "
                                      "any is missing)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--since", help="only events delivered at or after: an age like 1h, 7d, ISO 8601 or Unix time "
                                   "(default: the whole ledger)")
    p.set_defaults(runs="verify")

    p = sub.add_parser("decode", aliases=["dry-run"],
                       help="print the Vision Events a message would become, sending nothing (no broker, buffer, API)")
    p.add_argument("--config", "-c", required=True, help="YAML config file (its routes decide)")
    p.add_argument("--topic", "-t", action="append",
                   help="topic of the message; repeat it with --file for a sequence on several topics")
    p.add_argument("--file", "-f", action="append",
                   help="payload file (default: stdin); repeat for a sequence decoded in order, state kept")
    p.add_argument("--received-at", help="pretend the messages arrived at this ISO 8601 / Unix time (also the "
                                         "'now' of the API's one-year timestamp window)")
    p.add_argument("--capture", help="replay a capture file (mqtt-bridge capture): one JSON outcome per line, in "
                                     "order, with companion pairing and debounce as in a real run")
    p.add_argument("--fetch-images", action="store_true",
                   help="--capture: fetch url and read file image references, as the bridge would")
    p.set_defaults(runs="decode")

    p = sub.add_parser("discover", help="listen read-only to a broker; print what each topic pattern carries and "
                                        "write a starter config")
    _listen_flags(p, default_seconds=30.0)
    p.add_argument("--out", "-o", help="write the starter config here (default: print it)")
    p.add_argument("--record", help="also write the traffic heard to this capture file")
    p.set_defaults(runs="discover")

    p = sub.add_parser("capture", help="write the live traffic to a file (one JSON line per message) for "
                                       "`decode --capture`")
    _listen_flags(p, default_seconds=60.0)
    p.add_argument("--out", "-o", required=True, help="the capture file to write")
    p.set_defaults(runs="capture")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mqtt-bridge`; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command not in ("run",):
        setup_logging("INFO")
    return command_function(args.runs)(args)  # `runs` is the command's name, also when an alias was typed
