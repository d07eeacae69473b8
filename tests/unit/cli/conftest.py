"""The operator tools' shared fixture: an open buffer in tmp_path (the bridge is "stopped")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_bridge.storage.buffer import DiskBuffer
from tests.unit.cli.tool_data import tool_config


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[DiskBuffer]:
    """An open buffer in tmp_path (the bridge is "stopped")."""
    config = tool_config(tmp_path)
    instance = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    instance.open()
    yield instance
    instance.close()
