"""The start-up use-case check: listed, not listed yet, archived and templated use cases."""

from __future__ import annotations

from mqtt_bridge.api.usecases import INACTIVE, LISTED, NOT_LISTED_YET, TEMPLATE, check_use_cases
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.model.values import JsonDict


class _Workspace:
    def __init__(self, active: list[str], inactive: list[str]) -> None:
        self._lists = {"active": active, "inactive": inactive}
        self.calls: list[str] = []

    def list_use_cases(self, status: str = "active") -> list[JsonDict]:
        self.calls.append(status)
        return [{"id": ident, "name": ident} for ident in self._lists[status]]


def _route(use_case: str, name: str) -> RouteConfig:
    return RouteConfig.model_validate({"name": name, "topic": "f/{line}", "use_case": use_case})


def test_usecases_check_marks_a_use_case_absent_from_the_list_not_listed_yet_and_names_the_route() -> None:
    """Absence from the list is "not listed yet" (listed only after a first event): a warning naming route and id,
    never a problem that stops start-up."""
    result = check_use_cases([_route("uc-a", "a"), _route("uc-x", "b")], _Workspace(["uc-a"], []))
    assert [(row.key, row.status) for row in result.rows] == [("routes[0].use_case", LISTED),
                                                              ("routes[1].use_case", NOT_LISTED_YET)]
    assert [row.key for row in result.not_listed] == ["routes[1].use_case"]
    warning = result.not_listed[0].warning or ""
    assert "'uc-x'" in warning and "'b'" in warning and "after its first event" in warning
    assert result.rows[0].warning is None


def test_usecases_check_warns_on_archived_and_skips_templates() -> None:
    """An archived use case is a warning, a templated one cannot be checked, and all active ones ask once."""
    workspace = _Workspace(["uc-a"], ["uc-old"])
    result = check_use_cases([_route("uc-a", "a"), _route("uc-old", "b"), _route("{line}", "c")], workspace)
    assert result.not_listed == [] and [row.key for row in result.archived] == ["routes[1].use_case"]
    assert result.skipped_templates == 1
    assert [row.status for row in result.rows] == [LISTED, INACTIVE, TEMPLATE]
    assert check_use_cases([_route("uc-a", "a")], (w := _Workspace(["uc-a"], []))).not_listed == []
    assert w.calls == ["active"]


def test_usecases_check_table_has_one_aligned_line_per_route() -> None:
    """The table `use-cases check` prints: a header, then route, use case and status per route."""
    result = check_use_cases([_route("uc-a", "first"), _route("uc-new", "b")], _Workspace(["uc-a"], []))
    lines = result.table().splitlines()
    assert lines[0].split() == ["ROUTE", "USE", "CASE", "STATUS"]
    assert lines[1].split() == ["first", "uc-a", "listed"]
    assert lines[2].split() == ["b", "uc-new", "not", "listed", "yet"]
    assert lines[0].index("STATUS") == lines[1].index("listed") == lines[2].index("not listed yet")
