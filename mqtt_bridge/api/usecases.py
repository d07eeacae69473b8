"""Use cases: the start-up check that every constant `routes[].use_case` exists in the workspace, and the helpers
behind `mqtt-bridge use-cases list|create`.

Owns: deciding which configured use cases are missing (active ones pass; archived ones pass with a warning; a
templated `use_case` such as `{line}` cannot be checked and is skipped). The check asks the API once with short
timeouts and never retries: when the API is down or refuses the key it says so and the bridge starts anyway (the
buffer keeps everything; the flusher reports not ready).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.model.values import JsonDict

__all__ = ["UseCaseApi", "UseCaseCheck", "check_use_cases"]

log = logging.getLogger(__name__)


class UseCaseApi(Protocol):
    """What the check needs from the API client (`api.VisionEventsClient`)."""

    def list_use_cases(self, status: str = "active") -> list[JsonDict]:
        """Use cases with this status."""


@dataclass(frozen=True, slots=True)
class UseCaseCheck:
    """The outcome: problems as `(key path, message)` for missing ids, and warnings for archived ones."""

    missing: list[tuple[str, str]]
    archived: list[tuple[str, str]]
    skipped_templates: int


def check_use_cases(routes: Sequence[RouteConfig], api: UseCaseApi) -> UseCaseCheck:
    """Compare the routes' constant use cases with the workspace's. Raises ApiError when the API cannot answer."""
    wanted = [(index, route) for index, route in enumerate(routes) if "{" not in route.use_case]
    skipped = len(routes) - len(wanted)
    if not wanted:
        return UseCaseCheck([], [], skipped)
    active = {str(item.get("id")) for item in api.list_use_cases("active")}
    missing: list[tuple[str, str]] = []
    archived: list[tuple[str, str]] = []
    inactive: set[str] | None = None
    for index, route in wanted:
        if route.use_case in active:
            continue
        if inactive is None:
            inactive = {str(item.get("id")) for item in api.list_use_cases("inactive")}
        where = f"routes[{index}].use_case"
        if route.use_case in inactive:
            archived.append((where, f"use case {route.use_case!r} of route {route.label!r} is archived"))
        else:
            missing.append((where, f"use case {route.use_case!r} of route {route.label!r} does not exist in the "
                                   "workspace (create it with `mqtt-bridge use-cases create`, fix the id, or start "
                                   "with --allow-missing-use-cases)"))
    return UseCaseCheck(missing, archived, skipped)
