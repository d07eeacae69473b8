"""`mqtt-bridge use-cases list|create`: the workspace's use cases, through the Vision Events API.

Owns: listing the use cases (marking those the config's routes use) and creating one, printing the id that
`routes[].use_case` needs. Raises `UsageError`, `ConfigError` or `ApiError`; `cli.common` maps them to exit codes.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.cli.common import EXIT_OK, UsageError, operator_errors, with_config
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.errors import ConfigError

__all__ = ["use_cases_command", "use_cases_create", "use_cases_list"]


def use_cases_command(args: argparse.Namespace) -> int:
    """`use-cases list [--status]` or `use-cases create NAME`."""

    def action(config: BridgeConfig) -> int:
        if args.action == "list":
            use_cases_list(config, sys.stdout, status_filter=args.status)
        else:
            if not args.name:
                raise UsageError("use-cases create needs a NAME")
            use_cases_create(config, args.name, sys.stdout)
        return EXIT_OK

    return with_config(args.config, operator_errors(action))


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
