"""Deployment tests: the `image` tests build and run the container and only run under `make image-test`."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `image` tests unless `make image-test` asked for them (MQTT_BRIDGE_IMAGE_TEST=1)."""
    if os.environ.get("MQTT_BRIDGE_IMAGE_TEST") == "1":
        return
    skip = pytest.mark.skip(reason="builds the container image: run `make image-test`")
    for item in items:
        if "image" in item.keywords:
            item.add_marker(skip)
