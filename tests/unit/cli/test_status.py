"""`mqtt-bridge status` on a stopped bridge."""

from __future__ import annotations

import io
from pathlib import Path

from mqtt_bridge.cli.status import status
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.storage.raw_log import RawMessage
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


def test_status_of_a_stopped_bridge_counts_the_raw_log(tmp_path: Path) -> None:
    """Raw messages acked but not yet processed are shown, and keep the exit code at 1 with an empty queue."""
    config = tool_config(tmp_path)
    with DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes) as buffer:
        buffer.raw.append([RawMessage(b"t/a", b"{}", 1, False, 1.0), RawMessage(b"t/b", b"{}", 1, False, 2.0)])
    out = io.StringIO()
    assert status(config, out) == 1
    assert "raw log:       2 message(s) not processed yet" in out.getvalue()
    out = io.StringIO()
    assert status(config, out, as_json=True) == 1
    assert '"rawDepth":2' in out.getvalue()
