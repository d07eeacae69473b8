"""The processes of the fault harness: the bridge as a real `mqtt-bridge run` process, and a small filesystem.

Owns: writing a bridge config for a fault case (health server on a free port, fixed client id, small Receive
Maximum so that redelivery bounds are tight), starting, killing and signalling the process through its handle,
reading its metrics, readiness and memory (`/proc/<pid>/status`), reading its buffer and dead letters after it
stopped, and mounting a size-limited tmpfs for the disk-full case. Every process is ended through its handle.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import requests
import yaml

from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.storage.buffer import DiskBuffer
from tests.helpers import (
    BridgeProcess,
    BrokerAddress,
    bridge_config,
    child_named,
    free_port,
    tree_memory_kb,
    wait_until,
)

__all__ = ["FaultBridge", "fill_filesystem", "small_filesystem"]

RECEIVE_MAXIMUM = 100  # W in reliability.md §5: what the broker may hand over un-acked
_METRIC_RE = re.compile(r"^([a-z_0-9]+)(?:\{[a-z_]+=\"([^\"]*)\"\})? (\S+)$")


class FaultBridge:
    """One bridge under test: its config, buffer, log and health port live in `workdir`.

    Args:
        workdir: private directory (config, `buffer/`, `bridge.log`).
        broker: where the bridge connects (Mosquitto, or a `TcpProxy` in front of it).
        api_url: the emulator's URL.
        overrides: config sections merged over the defaults, e.g. `api={"read_timeout_s": 1}`; None removes a key.
        routes: the routes, instead of the test routes (`tests.helpers.TEST_ROUTES`).
    """

    def __init__(self, workdir: Path, broker: BrokerAddress, api_url: str,
                 overrides: Mapping[str, Mapping[str, object]] | None = None, *,
                 client_id: str = "bridge-under-test", routes: list[dict[str, object]] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        raw = bridge_config(broker, api_url, workdir / "buffer", "5")
        sections: dict[str, dict[str, object]] = {k: dict(v) for k, v in raw.items() if isinstance(v, dict)}
        sections["mqtt"].update(client_id=client_id, receive_maximum=RECEIVE_MAXIMUM, keepalive_s=5)
        sections["health"] = {"enabled": True, "port": free_port()}
        for section, values in (overrides or {}).items():  # None removes a key (api_key, for api_key_file)
            merged = {**sections.get(section, {}), **values}
            sections[section] = {k: v for k, v in merged.items() if v is not None}
        self.raw: dict[str, object] = {**raw, **sections, **({"routes": routes} if routes is not None else {})}
        self.config_path = workdir / "bridge.yaml"
        self.config_path.write_text(yaml.safe_dump(self.raw), encoding="utf-8")
        self.buffer_path = Path(str(sections["buffer"]["path"]))
        self.health_url = f"http://127.0.0.1:{sections['health']['port']}"
        self.process = BridgeProcess(self.config_path, workdir / "bridge.log")
        self._http = requests.Session()
        self._log_mark = 0

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout_s: float = 20.0) -> FaultBridge:
        """Start the process; with `wait`, until it has subscribed."""
        self._log_mark = len(self.log_text())
        self.process.start()
        if wait:
            self.wait_subscribed(timeout_s)
        return self

    def wait_subscribed(self, timeout_s: float = 20.0) -> None:
        """Wait until the current run of the process has subscribed; fail fast if it exits."""

        def subscribed() -> bool:
            code = self.returncode
            if code is not None:
                raise AssertionError(f"bridge exited with {code} before subscribing:\n{self.log_text()[-3000:]}")
            return "mqtt subscribed" in self.log_text()[self._log_mark:]

        wait_until(subscribed, timeout_s=timeout_s, message=f"bridge subscribed (log {self.process.log_path})")

    def run_log(self) -> str:
        """What the current (or last) run of the process printed."""
        return self.log_text()[self._log_mark:]

    @property
    def pid(self) -> int:
        """The running process id."""
        assert self.process.process is not None and self.process.process.poll() is None, "bridge not running"
        return self.process.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process ended, else None."""
        process = self.process.process
        return None if process is None else process.poll()

    def kill(self) -> int:
        """SIGKILL: no shutdown at all. Returns the exit status (-9)."""
        return self.process.signal(signal.SIGKILL)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait for the ordered shutdown; returns the exit code."""
        return self.process.signal(signal.SIGTERM, timeout_s)

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        assert self.process.process is not None
        return self.process.process.wait(timeout_s)

    def stop(self) -> None:
        """Make sure the process is gone (SIGTERM, then SIGKILL after a grace period)."""
        self.process.stop()
        self._http.close()

    def log_text(self) -> str:
        """Everything the process printed, over all its runs."""
        return self.process.log_text()

    # --- observation while running ----------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """`/metrics` as `{name or name{label}: value}`, names without `mqtt_bridge_` and `_total`; {} if down."""
        try:
            text = self._http.get(f"{self.health_url}/metrics", timeout=2).text
        except requests.RequestException:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            match = _METRIC_RE.match(line)
            if match:
                name = match.group(1).removeprefix("mqtt_bridge_").removesuffix("_total")
                out[f"{name}{{{match.group(2)}}}" if match.group(2) is not None else name] = float(match.group(3))
        return out

    def metric(self, name: str) -> float:
        """One metric summed over its labels (0 when absent)."""
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def readyz(self) -> tuple[int, dict[str, object]]:
        """`/readyz` status and body; (0, {}) when the health server does not answer."""
        try:
            response = self._http.get(f"{self.health_url}/readyz", timeout=2)
        except requests.RequestException:
            return 0, {}
        body = response.json()
        return response.status_code, body if isinstance(body, dict) else {}

    def memory_kb(self, field: str = "VmRSS") -> int:
        """A memory figure of the bridge from /proc/<pid>/status (VmRSS now, VmHWM peak), in KiB: summed over
        the supervisor and its children (for VmHWM, the sum of each process's own peak)."""
        total = tree_memory_kb(self.pid, field)
        assert total > 0, f"{field} not in /proc/{self.pid}/status"
        return total

    def child_pid(self, role: str, timeout_s: float = 20.0, not_in: Collection[int] = ()) -> int:
        """The pid of the running bridge's `receiver` or `worker` process, other than `not_in` (waits for the
        supervisor to start one)."""
        found: list[int] = []

        def started() -> bool:
            pid = child_named(self.pid, f"bridge-{role}", not_in)
            found[:] = [pid] if pid is not None else []
            return bool(found)

        wait_until(started, timeout_s=timeout_s, message=f"the bridge's {role} process")
        return found[0]

    # --- the buffer, after the process stopped ----------------------------------------------------------------

    def _open_buffer(self) -> DiskBuffer:
        assert self.returncode is not None, "stop the bridge before reading its buffer"
        return DiskBuffer(self.buffer_path, 2**62, 1)

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter in the buffer (the bridge must have stopped: the buffer is locked while it runs)."""
        with self._open_buffer() as buffer:
            return [letter for _, letter in buffer.dead_letters()]

    def buffered(self) -> list[Record]:
        """Every record still queued for delivery (the bridge must have stopped)."""
        with self._open_buffer() as buffer:
            return list(buffer.records())


@contextlib.contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` at `path` (root only) and unmount it afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount") or "/bin/mount"
    subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path)], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        umount = shutil.which("umount") or "/bin/umount"
        result = subprocess.run([umount, str(path)], check=False, capture_output=True)
        if result.returncode != 0:  # still busy (a process we failed to stop): detach it, never leave it mounted
            subprocess.run([umount, "-l", str(path)], check=False, capture_output=True)


def fill_filesystem(path: Path, leave_free_bytes: int) -> Path:
    """Write a filler file in `path` until at most `leave_free_bytes` remain free; returns the filler's path."""
    filler = path / "filler.bin"
    with filler.open("ab") as out:
        while True:
            free = shutil.disk_usage(path).free
            if free <= leave_free_bytes:
                break
            try:
                out.write(b"\0" * min(1 << 20, free - leave_free_bytes))
                out.flush()
                os.fsync(out.fileno())
            except OSError:
                break
    return filler
