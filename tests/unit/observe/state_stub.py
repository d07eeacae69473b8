"""A `ServiceState`-shaped stub for the health server and status page tests: every field the pages read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StateStub:
    """A healthy bridge's state; change a field to show another."""

    is_alive: bool = True
    is_ready: bool = True
    mqtt_connected: bool = True
    mqtt_subscribed: bool = True
    api_ready: bool = True
    buffer_writable: bool = True
    backpressured: bool = False
    buffer_depth: int = 0
    dead_letters: int = 0
    last_error: str = ""
    api_not_ready_reason: str = ""
    mqtt_problem: str = ""
    mqtt_protocol: str = ""
    not_ready_reason: str = ""
