"""Planted rows in a real buffer (raw SQL on cache.db): no unpickling ever, files outside the directory untouched.

Issue 16 item 6: a key stored in diskcache's pickle mode ran a command when `mqtt-bridge status` opened the buffer,
and a segment naming an absolute file made the bridge copy that file into the dead letters and delete it. Both need
write access to the 0700 buffer directory; "never pickle" must still be true.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqtt_bridge.model.record import Record
from mqtt_bridge.storage.buffer import DiskBuffer

_MODE_RAW, _MODE_BINARY, _MODE_PICKLE = 1, 2, 4
_INSERT = ("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, "
           "filename, value) VALUES (?, ?, ?, NULL, ?, 0, NULL, ?, ?, ?, ?)")


class _Planted:
    """A pickle that, if ever loaded, creates `marker` (a stand-in for a command run as the bridge's user)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))  # unpickling opens (creates) the marker file


def _record(n: int) -> Record:
    return Record(event={"eventId": f"e{n}"}, route="r", topic="t", received_at_s=float(n))


def _plant(buffer_dir: Path, marker: Path, outside: Path) -> None:
    """A row with a pickled key, a row with a pickled value, and a segment whose value lives in a file outside."""
    now = time.time()
    rows = [  # key, raw, size, mode, filename, value
        (pickle.dumps(_Planted(marker)), 0, 0, _MODE_RAW, None, b"v"),
        ("pickled-value", 1, 0, _MODE_PICKLE, None, pickle.dumps(_Planted(marker))),
        # integer keys: queue segments of one record each, their bytes "in" a file outside the buffer directory
        ((1000 << 16) | 1, 1, 1, _MODE_BINARY, str(outside), None),
        ((1001 << 16) | 1, 1, 1, _MODE_BINARY, "../../" + outside.name, None),
    ]
    with sqlite3.connect(buffer_dir / "cache.db") as con:
        con.executemany(_INSERT, [(key, raw, now, now, size, mode, filename, value)
                                  for key, raw, size, mode, filename, value in rows])


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path, Path]:
    buffer_dir = tmp_path / "buffer"
    marker = tmp_path / "pwned"
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"not the bridge's file")
    with DiskBuffer(buffer_dir, 2**30, 1) as buffer:
        buffer.append([_record(1), _record(2)], [])
    _plant(buffer_dir, marker, outside)
    return buffer_dir, marker, outside


def test_planted_pickle_rows_are_quarantined_on_open_never_unpickled(planted: tuple[Path, Path, Path]) -> None:
    buffer_dir, marker, outside = planted
    with DiskBuffer(buffer_dir, 2**30, 1) as buffer:
        assert not marker.exists(), "a planted pickle was loaded"
        assert buffer.depth == 2
        assert [r.event_id for r in buffer.peek(10, 2**20)] == ["e1", "e2"]
        letters = [letter for _, letter in buffer.dead_letters()]
        assert len(letters) == 4
        assert {letter.reason for letter in letters} == {"unreadable_record"}
        assert all(outside.read_bytes() not in letter.payload for letter in letters), "the outside file was copied"
    assert not marker.exists()
    assert outside.read_bytes() == b"not the bridge's file", "the file outside the buffer was deleted or changed"
    with sqlite3.connect(buffer_dir / "cache.db") as con:
        assert con.execute("SELECT count(*) FROM Cache WHERE raw = 0 OR mode != 1 OR filename IS NOT NULL"
                           ).fetchone() == (0,)


def test_segment_naming_a_file_outside_the_buffer_is_neither_read_nor_deleted(tmp_path: Path) -> None:
    buffer_dir = tmp_path / "buffer"
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"keep me")
    with DiskBuffer(buffer_dir, 2**30, 1) as buffer:
        buffer.append([_record(1)], [])
    _plant(buffer_dir, tmp_path / "marker", outside)
    with DiskBuffer(buffer_dir, 2**30, 1) as buffer:
        batch = buffer.peek(10, 2**20)
        buffer.complete(len(batch))
        assert buffer.depth == 0
    assert outside.read_bytes() == b"keep me"


def test_status_command_reports_planted_rows_without_running_them(planted: tuple[Path, Path, Path],
                                                                   tmp_path: Path) -> None:
    buffer_dir, marker, outside = planted
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "mqtt: {host: 127.0.0.1, port: 1}\n"
        "api: {api_key: k, base_url: 'http://127.0.0.1:1'}\n"
        f"buffer: {{path: '{buffer_dir}'}}\n"
        "health: {port: 0}\n"
        "routes: [{topic: 'a/#', use_case: u}]\n")
    done = subprocess.run([sys.executable, "-m", "mqtt_bridge", "status", "--json", "-c", str(config)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "NO_PROXY": "*"})
    assert "Traceback" not in done.stderr, done.stderr
    assert not marker.exists(), "status loaded a planted pickle"
    assert outside.read_bytes() == b"not the bridge's file"
    summary = json.loads(done.stdout)
    assert summary["depth"] == 2 and summary["deadLettersByReason"] == {"unreadable_record": 4}, done.stderr
    assert "quarantined" in done.stderr
