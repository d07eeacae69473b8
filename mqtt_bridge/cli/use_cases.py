"""`mqtt-bridge use-cases list|create|check`: the workspace's use cases, through the Vision Events API.

Owns: listing the use cases (marking those the config's routes use), creating one (printing the id that
`routes[].use_case` needs), and `check`: the start-up check's table on demand (route, use case, listed / not listed yet
/ inactive; a use case is listed only after its first event, so "not listed yet" is not an error). Raises `UsageError`,
`ConfigError` or `ApiError`; `cli.common` maps them to exit codes.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.api.usecases import UseCaseCheck, check_use_cases
from mqtt_bridge.cli.common import EXIT_OK, UsageError, operator_errors, with_config
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.errors import ConfigError

__all__ = ["use_cases_check", "use_cases_command", "use_cases_create", "use_cases_list"]


def use_cases_command(args: argparse.Namespace) -> int:
    """`use-cases list [--status]`, `use-cases create NAME` or `use-cases check`."""

    def action(config: BridgeConfig) -> int:
        if args.action == "check":
            use_cases_check(config, sys.stdout)
        elif args.action == "list":
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


def use_cases_check(config: BridgeConfig, out: TextIO) -> UseCaseCheck:
    """Print the start-up check's table: each route, its use case and whether the workspace's list has it."""
    client = _client(config)
    try:
        result = check_use_cases(config.routes, client)
    finally:
        client.close()
    out.write(result.table())
    if result.not_listed:
        out.write(f"{len(result.not_listed)} use case(s) not listed yet: a new use case appears in the list only "
                  "after its first event; if the API refuses its events, they are dead-lettered with its answer\n")
    return result
