"""`mqtt-bridge status` on a stopped bridge."""

from __future__ import annotations

import io
from pathlib import Path

from mqtt_bridge.cli.status import status
from mqtt_bridge.storage.buffer import DiskBuffer
from tests.unit.cli.tool_data import buffered_record, dead_letter, tool_config


def test_status_of_a_stopped_bridge_reads_the_buffer(tmp_path: Path) -> None:
    """With no bridge answering, status summarises the buffer on disk and exits 1 while events wait."""
    config = tool_config(tmp_path)
    with DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes) as buffer:
        buffer.append([buffered_record(1)], [dead_letter("invalid_json", b"{", 1.0)])
    out = io.StringIO()
    assert status(config, out) == 1
    text = out.getvalue()
    assert "stopped" in text and "1 event(s)" in text and "invalid_json: 1" in text
