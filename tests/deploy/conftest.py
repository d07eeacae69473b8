"""Deployment tests: the `image` tests build and run the container and only run under `make image-test`; the
monitoring tests need Debian's `prometheus` package (promtool and the server): they skip without it, but fail in CI."""

from __future__ import annotations

import os

import pytest

from tests.deploy.containers import IMAGE, Engine, skip_or_fail
from tests.deploy.monitoring import find_tool
from tests.helpers import is_ci


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `image` tests unless `make image-test` asked for them (MQTT_BRIDGE_IMAGE_TEST=1)."""
    if os.environ.get("MQTT_BRIDGE_IMAGE_TEST") == "1":
        return
    skip = pytest.mark.skip(reason="builds the container image: run `make image-test`")
    for item in items:
        if "image" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The container engine, with the image built by `make image` (skip without an engine; fail in CI)."""
    found = Engine(tmp_path_factory.mktemp("engine"))
    if not found.has_image(IMAGE):
        skip_or_fail(f"image {IMAGE} is not built: run `make image-test` (it builds it first)")
    return found


def _prometheus_tool(name: str) -> str:
    """Path of `name` from Debian's `prometheus` package: skips when it is missing, but fails in CI."""
    path = find_tool(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install prometheus)"
        if is_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def promtool_binary() -> str:
    """The promtool executable (skip when missing; fail in CI)."""
    return _prometheus_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The prometheus server executable (skip when missing; fail in CI)."""
    return _prometheus_tool("prometheus")
