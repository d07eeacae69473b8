"""Use cases: the start-up check of every constant `routes[].use_case` against the workspace's list, and the table
behind `mqtt-bridge use-cases check`.

Owns: the status of each route's use case in the list (`listed`, `not listed yet`, `inactive`, or `template` for a
`use_case` such as `{line}` that cannot be checked) and the warnings the bridge logs about them. The list endpoint
documents that it lists the use cases *that have recorded vision events* (spec §6), so a use case that has not had
its first event yet is absent although it exists: absence is never a reason to refuse to start, only a warning. A
use case the API really does not know is found when events are sent: they are dead-lettered with the API's answer
(and replayed with `mqtt-bridge dlq replay` once it is fixed). The check asks the API once with short timeouts and
never retries: when the API is down or refuses the key it says so and the bridge starts anyway (the buffer keeps
everything; the flusher reports not ready).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.model.values import JsonDict

__all__ = ["INACTIVE", "LISTED", "NOT_LISTED_YET", "TEMPLATE", "UseCaseApi", "UseCaseCheck", "UseCaseRow",
           "check_use_cases", "log_use_case_check"]

log = logging.getLogger(__name__)

LISTED: Final = "listed"
NOT_LISTED_YET: Final = "not listed yet"
INACTIVE: Final = "inactive"
TEMPLATE: Final = "template (not checked)"


class UseCaseApi(Protocol):
    """What the check needs from the API client (`api.VisionEventsClient`)."""

    def list_use_cases(self, status: str = "active") -> list[JsonDict]:
        """Use cases with this status."""


@dataclass(frozen=True, slots=True)
class UseCaseRow:
    """One route's use case and what the list says about it."""

    key: str        # the key path, e.g. `routes[1].use_case`
    route: str      # the route's label
    use_case: str
    status: str     # LISTED, NOT_LISTED_YET, INACTIVE or TEMPLATE

    @property
    def warning(self) -> str | None:
        """The warning this row deserves at start-up, or None."""
        if self.status == NOT_LISTED_YET:
            return (f"use case {self.use_case!r} of route {self.route!r} is not in the workspace's list yet; a new "
                    "use case appears there only after its first event. Starting anyway: if the API refuses its "
                    "events they are dead-lettered with the API's answer (check the id, or create it with "
                    "`mqtt-bridge use-cases create`, then `mqtt-bridge dlq replay`)")
        if self.status == INACTIVE:
            return f"use case {self.use_case!r} of route {self.route!r} is archived"
        return None


@dataclass(frozen=True, slots=True)
class UseCaseCheck:
    """The outcome: one row per route, in route order."""

    rows: list[UseCaseRow]

    @property
    def not_listed(self) -> list[UseCaseRow]:
        """Rows of use cases absent from both lists (new, or wrong ids: the list cannot tell)."""
        return [row for row in self.rows if row.status == NOT_LISTED_YET]

    @property
    def archived(self) -> list[UseCaseRow]:
        """Rows of archived use cases."""
        return [row for row in self.rows if row.status == INACTIVE]

    @property
    def skipped_templates(self) -> int:
        """How many routes have a templated use case (not checked)."""
        return sum(1 for row in self.rows if row.status == TEMPLATE)

    def table(self) -> str:
        """The rows as an aligned text table (route, use case, status), with a header line."""
        lines = [("ROUTE", "USE CASE", "STATUS"), *((r.route, r.use_case, r.status) for r in self.rows)]
        widths = [max(len(line[i]) for line in lines) for i in range(2)]
        return "".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}\n" for a, b, c in lines)


def check_use_cases(routes: Sequence[RouteConfig], api: UseCaseApi) -> UseCaseCheck:
    """Look up every route's constant use case in the active (then inactive) list. Raises ApiError when the API
    cannot answer. Asks for the inactive list only when some use case is not among the active ones."""
    rows: list[UseCaseRow] = []
    active: set[str] | None = None
    inactive: set[str] | None = None
    for index, route in enumerate(routes):
        key = f"routes[{index}].use_case"
        if "{" in route.use_case:
            rows.append(UseCaseRow(key, route.label, route.use_case, TEMPLATE))
            continue
        if active is None:
            active = {str(item.get("id")) for item in api.list_use_cases("active")}
        if route.use_case in active:
            status = LISTED
        else:
            if inactive is None:
                inactive = {str(item.get("id")) for item in api.list_use_cases("inactive")}
            status = INACTIVE if route.use_case in inactive else NOT_LISTED_YET
        rows.append(UseCaseRow(key, route.label, route.use_case, status))
    return UseCaseCheck(rows)


def log_use_case_check(result: UseCaseCheck) -> None:
    """One warning per route whose use case is archived or not listed yet (never an error: see the module doc)."""
    for row in result.rows:
        warning = row.warning
        if warning is not None:
            log.warning("use-case check key=%s route=%s use_case=%s status=%r: %s", row.key, row.route,
                        row.use_case, row.status, warning)
