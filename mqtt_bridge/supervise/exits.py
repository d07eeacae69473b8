"""What keeps a bridge from starting, as `mqtt-bridge run`'s exit code: the one mapping the supervisor's worker
process and `run --single-process` share (an unusable buffer exits 4, a port that cannot be bound 3)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mqtt_bridge.cli.common import EXIT_BUFFER, EXIT_UNAVAILABLE
from mqtt_bridge.errors import StorageError

__all__ = ["run_or_exit_code"]

log = logging.getLogger("mqtt_bridge")


def run_or_exit_code(body: Callable[[], int], health_port: int) -> int:
    """`body()`'s exit code, or 4 when the buffer is unusable (StorageError), 3 when the health port cannot be bound
    (OSError); either is said in one line."""
    try:
        return body()
    except StorageError as exc:
        log.error("buffer unusable: %s", exc)
        return EXIT_BUFFER
    except OSError as exc:
        log.error("cannot start: %s (is health.port %d already in use?)", exc, health_port)
        return EXIT_UNAVAILABLE
