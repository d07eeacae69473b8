"""`mqtt-bridge run`, `check-config` and `schema`: the bridge itself, and its configuration.

Owns: starting the bridge (the `Supervisor` of its processes, or with `--single-process` the `Service`) on a loaded
config (with glibc's allocator tuned, `cli.malloc`) and mapping what stops it to an exit code; printing the
effective configuration (secrets redacted) or the reference of one key (`--explain`, the text comes from
`config.explain`); the JSON Schemas of the config file and of the canonical message (what `config/schema.json` and
`config/message.schema.json` hold).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys

import yaml

from mqtt_bridge.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    setup_logging,
    with_config,
)
from mqtt_bridge.cli.malloc import tune_malloc
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import redacted

__all__ = ["check_config_command", "config_schema", "message_schema", "run_command", "schema_command"]

log = logging.getLogger("mqtt_bridge")


def run_command(args: argparse.Namespace) -> int:
    """`run`: the bridge until SIGTERM (exit 0), a dead thread or a child process that keeps failing (1), a bad
    config (2), a busy port (3) or an unusable buffer (4). By default a supervisor with a receiver and a worker
    process (`supervise.supervisor`); `--single-process`: everything as threads of this process."""
    from mqtt_bridge.service import Service  # noqa: PLC0415
    from mqtt_bridge.supervise.exits import run_or_exit_code  # noqa: PLC0415
    from mqtt_bridge.supervise.supervisor import Supervisor  # noqa: PLC0415

    def run(config: BridgeConfig) -> int:
        setup_logging(args.log_level or config.logging.level, config.logging.format, config)
        tune_malloc()  # freed payloads and images go back to the system (see cli.malloc)
        # what start-up made (modules, the parsed config) lives as long as the process: moved out of the collector's
        # reach, every collection walks fewer objects (a drain spent 7.5 % of its CPU in gc, about 4 % frozen), and the
        # forked children do not copy those pages when the collector would have touched them
        gc.freeze()
        if args.allow_missing_use_cases:
            log.warning("--allow-missing-use-cases is no longer needed and has no effect: a use case absent from "
                        "the workspace's list only warns")
        # a ConfigError is printed by `with_config`: exit 2
        return run_or_exit_code(Service(config).run if args.single_process else Supervisor(config).run,
                                config.health.port)

    return with_config(args.config, run)


def check_config_command(args: argparse.Namespace) -> int:
    """`check-config FILE`: validate everything `run` would, and print the effective config with secrets redacted.
    `check-config --explain KEY`: print the reference of one key (no file needed)."""
    if args.explain is not None:
        if args.config is not None:
            print("check-config: give a config file or --explain KEY, not both", file=sys.stderr)
            return EXIT_CONFIG
        return _explain(args.explain)
    if args.config is None:
        print("check-config: give a config file (or --explain KEY)", file=sys.stderr)
        return EXIT_CONFIG

    def show(config: BridgeConfig) -> int:
        print(f"# {args.config}: valid. Effective configuration (secrets redacted):")
        print(yaml.safe_dump(redacted(config), sort_keys=False), end="")
        return EXIT_OK

    return with_config(args.config, show)


def _explain(key: str) -> int:
    """Print the reference text of `key`; an unknown key exits 2 with the nearest key paths."""
    from mqtt_bridge.config.explain import explain, nearest_keys  # noqa: PLC0415 - only this command walks the models

    doc = explain(key)
    if doc is not None:
        print(doc.render())
        return EXIT_OK
    nearest = nearest_keys(key)
    print(f"check-config: {key!r} is not a config key" + (f"; did you mean: {', '.join(nearest)}?" if nearest else
          " (see config/reference.yaml for every key)"), file=sys.stderr)
    return EXIT_CONFIG


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


def schema_command(args: argparse.Namespace) -> int:
    """`schema [--message]`: print a JSON Schema."""
    schema = message_schema() if args.message else config_schema()
    print(json.dumps(schema, indent=2, sort_keys=True))
    return EXIT_OK
