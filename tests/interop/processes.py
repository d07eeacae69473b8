"""Third-party brokers as real processes for the interop suite: Aedes (npm, Node's `net` server).

Owns: finding `node`/`npm`, installing the committed `tests/interop/aedes/package-lock.json` (`npm ci`) when its
`node_modules` is missing, and one broker process on a free 127.0.0.1 port, started, restarted (same port) and
stopped through its `Popen` handle. Nothing here is a mock: the broker is the published package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.helpers import LOCALHOST, free_port, port_accepts_connections, wait_until

__all__ = ["AEDES_DIR", "AedesBroker", "aedes_missing_reason", "install_aedes"]

AEDES_DIR = Path(__file__).resolve().parent / "aedes"


def aedes_missing_reason() -> str | None:
    """Why Aedes cannot run here (no node or npm), or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm)"
    if not (AEDES_DIR / "node_modules" / "aedes").is_dir() and shutil.which("npm") is None:
        return "npm is not installed (apt-get install npm)"
    return None


def install_aedes(timeout_s: float = 300.0) -> None:
    """Run `npm ci` in tests/interop/aedes unless its node_modules already holds aedes (the lock file pins it)."""
    if (AEDES_DIR / "node_modules" / "aedes").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed")
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=AEDES_DIR, capture_output=True, text=True,
                            timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"npm ci in {AEDES_DIR} failed:\n{result.stdout}\n{result.stderr}")


class AedesBroker:
    """One Aedes process (`node broker.js PORT`) on 127.0.0.1; its output goes to `workdir/aedes.log`.

    Aedes keeps sessions and queued messages in memory (aedes-persistence), so `restart()` comes back on the same
    port with none of them.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        self.node = node
        self.host = LOCALHOST
        self.port = port or free_port(LOCALHOST)
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "aedes.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker address as `mqtt://host:port`."""
        return f"mqtt://{self.host}:{self.port}"

    def log_text(self) -> str:
        """What the broker printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout_s: float = 20.0) -> AedesBroker:
        """Start the process and wait until its listener accepts TCP connections."""
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen([self.node, "broker.js", str(self.port)], cwd=AEDES_DIR,
                                         stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        process = self._process

        def _ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"aedes exited with {process.returncode} on start:\n{self.log_text()}")
            return port_accepts_connections(self.host, self.port)

        try:
            wait_until(_ready, timeout_s=timeout_s, interval_s=0.05, message=f"aedes on {self.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process and wait for it (SIGKILL after `timeout_s`). Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> AedesBroker:
        """Stop and start again on the same port (in-memory sessions are gone)."""
        self.stop()
        return self.start()

    def __enter__(self) -> AedesBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
