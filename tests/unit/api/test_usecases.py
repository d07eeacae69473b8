"""The start-up use-case check: missing, archived and templated use cases."""

from __future__ import annotations

from mqtt_bridge.api.usecases import check_use_cases
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


def test_usecases_check_names_the_route_and_id_of_a_missing_one() -> None:
    """A missing constant use case is reported with its key path, route name and id."""
    result = check_use_cases([_route("uc-a", "a"), _route("uc-x", "b")], _Workspace(["uc-a"], []))
    assert [path for path, _ in result.missing] == ["routes[1].use_case"]
    assert "'uc-x'" in result.missing[0][1] and "'b'" in result.missing[0][1]


def test_usecases_check_warns_on_archived_and_skips_templates() -> None:
    """An archived use case is a warning, a templated one cannot be checked, and all active ones ask once."""
    workspace = _Workspace(["uc-a"], ["uc-old"])
    result = check_use_cases([_route("uc-a", "a"), _route("uc-old", "b"), _route("{line}", "c")], workspace)
    assert result.missing == [] and [p for p, _ in result.archived] == ["routes[1].use_case"]
    assert result.skipped_templates == 1
    assert check_use_cases([_route("uc-a", "a")], (w := _Workspace(["uc-a"], []))).missing == []
    assert w.calls == ["active"]
