"""What every command family shares: the named exit codes, loading the config for a command, mapping errors to exit
codes, logging set-up, the `--since/--until` time parser and the progress bar.

Owns: the one place where a config is loaded for a command (`with_config`: `config.load`, every problem printed
with its key path, exit code 2) and where operator-tool errors become exit codes (`operator_errors`). Must stay
light to import: `mqtt-bridge --version` loads this module, so the buffer is imported only when a tool opens it.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import load_config
from mqtt_bridge.errors import (
    ApiError,
    AuthApiError,
    BillingApiError,
    BridgeError,
    BufferLocked,
    ConfigError,
    StorageError,
)

if TYPE_CHECKING:
    from mqtt_bridge.storage.buffer import DiskBuffer

__all__ = [
    "EXIT_BUFFER",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "Progress",
    "UsageError",
    "on_config_error",
    "open_buffer",
    "operator_errors",
    "parse_when",
    "print_config_errors",
    "setup_logging",
    "with_config",
]

EXIT_OK = 0           # clean exit (including after SIGTERM with the batch in flight delivered)
EXIT_FAILURE = 1      # a thread died or a fatal runtime error; the buffer keeps everything, restart me
EXIT_CONFIG = 2       # usage or configuration error: every problem is printed with its key path
EXIT_UNAVAILABLE = 3  # a broker or API the command needs could not be reached
EXIT_BUFFER = 4       # the buffer directory is unusable, locked by another instance, or corrupt

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(BridgeError):
    """The command line asks for something that cannot be done as asked (exit code 2)."""


# --- config and exit codes ------------------------------------------------------------------------------------------

def print_config_errors(path: str, exc: ConfigError) -> None:
    """Every problem of a config, one line each with its key path, on stderr."""
    print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
    for key, message in exc.problems:
        print(f"  {key}: {message}", file=sys.stderr)


def on_config_error(path: str, action: Callable[[], int]) -> int:
    """Run `action`; a ConfigError it raises is printed (naming `path`) and becomes exit code 2."""
    try:
        return action()
    except ConfigError as exc:
        print_config_errors(path, exc)
        return EXIT_CONFIG


def with_config(path: str, action: Callable[[BridgeConfig], int]) -> int:
    """Load and fully validate the config at `path` (`config.load`), then run `action` on it. A ConfigError from
    either is printed with its key paths and becomes exit code 2."""
    return on_config_error(path, lambda: action(load_config(Path(path))))


def operator_errors(action: Callable[[BridgeConfig], int]) -> Callable[[BridgeConfig], int]:
    """`action` with the errors of the operator tools (dlq, export, status, use-cases) mapped to exit codes."""

    def guarded(config: BridgeConfig) -> int:
        try:
            return action(config)
        except UsageError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
        except BufferLocked:
            print("the bridge is running on this buffer; stop it first (the broker keeps new messages meanwhile)",
                  file=sys.stderr)
            return EXIT_BUFFER
        except StorageError as exc:
            print(f"buffer unusable: {exc}", file=sys.stderr)
            return EXIT_BUFFER
        except AuthApiError as exc:
            print(f"the API refused the key: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        except BillingApiError as exc:
            print(f"the API refused for billing or quota (plan limit, quota reached or billing paused): {exc} "
                  f"{exc.body[:300]}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        except ApiError as exc:
            print(f"the API did not answer as expected: {exc} {exc.body[:300]}", file=sys.stderr)
            return EXIT_UNAVAILABLE

    return guarded


def setup_logging(level: str, fmt: str = "text", config: BridgeConfig | None = None) -> None:
    """Configure the package's logging; a config's secrets are redacted from every line."""
    from mqtt_bridge.observe.logs import configure_logging  # noqa: PLC0415

    configure_logging(level, fmt, _secrets(config) if config is not None else ())


def _secrets(config: BridgeConfig) -> list[str]:
    """The secret values of a config, for the log redaction filter (a missing secret file is skipped)."""
    values = [config.health.token.get_secret_value() if config.health.token else ""]
    for read in (config.api.api_key_value, config.mqtt.password_value):
        try:
            values.append(read() or "")
        except ConfigError:
            continue
    return values


def open_buffer(config: BridgeConfig) -> DiskBuffer:
    """Open the configured buffer for a tool (raises BufferLocked while the bridge runs on it)."""
    from mqtt_bridge.storage.buffer import DiskBuffer  # noqa: PLC0415 - keeps `--version` light

    buffer = DiskBuffer(config.buffer.path, config.buffer.max_bytes, config.buffer.min_free_bytes)
    buffer.open()
    return buffer


# --- small shared helpers -----------------------------------------------------------------------------------------

def parse_when(text: str, now_s: float | None = None) -> float:
    """A time filter: ISO 8601 (`2024-05-01T08:00:00Z`), a Unix time, or an age such as `30m`, `2h`, `7d`."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return (time.time() if now_s is None else now_s) - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is not a time: use ISO 8601, a Unix time, or an age like 30m, 2h, 7d") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal (logs and pipes stay clean)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self._stream = stream or sys.stderr
        self._width = width
        self.is_enabled = total > 0 and self._stream.isatty()
        self._drawn_at = 0.0

    def advance(self, count: int = 1) -> None:
        """Add `count` and redraw (at most ten times a second)."""
        self.done += count
        now = time.monotonic()
        if self.is_enabled and (now - self._drawn_at >= 0.1 or self.done >= self.total):
            self._drawn_at = now
            filled = int(self._width * min(self.done, self.total) / self.total)
            self._stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self._width - filled)}] "
                               f"{self.done}/{self.total}")
            self._stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.is_enabled:
            self._stream.write("\n")
            self._stream.flush()
