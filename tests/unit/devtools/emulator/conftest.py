"""Fixtures of the emulator tests: a started emulator with one use case, and a session holding the default key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.unit.devtools.emulator.helpers import USE_CASE


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A started emulator on a free port with one known use case."""
    with Emulator(use_cases=[{"id": USE_CASE, "name": "Line 1"}]) as emu:
        yield emu


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A requests session that sends the default key as a Bearer header."""
    with requests.Session() as s:
        s.headers["Authorization"] = "Bearer demo-key"
        yield s
