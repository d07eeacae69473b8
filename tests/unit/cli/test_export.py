"""`mqtt-bridge export`: undelivered events as Vision Events bundles."""

from __future__ import annotations

import tarfile
from pathlib import Path

import orjson
import pytest

from mqtt_bridge.cli.common import UsageError
from mqtt_bridge.cli.export import export_bundles
from mqtt_bridge.storage.buffer import DiskBuffer
from tests.helpers import tiny_png
from tests.unit.cli.tool_data import buffered_record


def test_export_writes_one_bundle_per_event_in_the_bundle_format(buffer: DiskBuffer, tmp_path: Path) -> None:
    """Each undelivered event becomes event_*.tar.gz with payload.json (bundleFormatVersion 1) and its image."""
    image = tiny_png(3)
    buffer.append([buffered_record(1, image), buffered_record(2)], [])
    result = export_bundles(buffer, tmp_path / "out")
    assert result.written == 2
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert all(name.startswith("event_") and name.endswith(".tar.gz") for name in names)
    with tarfile.open(result.paths[0]) as tar:
        payload = orjson.loads(tar.extractfile("payload.json").read())  # type: ignore[union-attr]
        member = payload["images"][0]["file"]
        assert member.startswith("images/") and member.endswith(".png")
        assert tar.extractfile(member).read() == image  # type: ignore[union-attr]
    assert payload["bundleFormatVersion"] == 1 and payload["eventId"] == "e-1"
    assert "sourceId" not in payload["images"][0]
    assert buffer.depth == 2  # kept unless --delete


def test_export_delete_removes_exactly_the_exported_head(buffer: DiskBuffer, tmp_path: Path) -> None:
    """--delete with --limit drops the exported oldest events and keeps the rest queued."""
    buffer.append([buffered_record(i) for i in range(5)], [])
    export_bundles(buffer, tmp_path / "out", limit=3, delete=True)
    assert [r.event_id for r in buffer.records()] == ["e-3", "e-4"]
    with pytest.raises(UsageError):
        export_bundles(buffer, tmp_path / "out", route="inspection", delete=True)
