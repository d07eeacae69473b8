"""The container engine of the image and compose tests: finds podman (or docker), runs it the way these machines
need (runc, a containers.conf without default ulimits) and says precisely why when it cannot run here.

A test skips only when the engine is provably absent on a developer's machine; in CI (`CI=true`, where `.ci/run`
installed podman) every missing piece is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import is_ci

__all__ = ["IMAGE", "Engine", "find_compose", "skip_or_fail"]

# the image `make image` built (make image-test passes its tag)
IMAGE = os.environ.get("MQTT_BRIDGE_IMAGE", "mqtt-vision-bridge:0.1.0")
INSTALL_HINT = "apt-get install -y podman podman-compose runc debootstrap"


def skip_or_fail(reason: str) -> None:
    """Skip the test with `reason` on a developer's machine; fail it in CI, where `.ci/run` installs the tools."""
    if is_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def _containers_conf(directory: Path, *, has_runc: bool) -> Path:
    """A containers.conf for these machines: no default ulimits (podman's default nofile cannot be set in this
    sandbox) and runc as the runtime (Debian's podman may pick crun, which is not installed by `.ci/run`)."""
    conf = directory / "containers.conf"
    text = "[containers]\ndefault_ulimits = []\n"
    if has_runc:
        text += '\n[engine]\nruntime = "runc"\n'
    conf.write_text(text)
    return conf


class Engine:
    """`podman` (with runc and a containers.conf without default ulimits) or `docker`, as a callable."""

    def __init__(self, workdir: Path) -> None:
        binary = os.environ.get("CONTAINER_ENGINE") or shutil.which("podman") or shutil.which("docker")
        if binary is None:
            skip_or_fail(f"no container engine: podman or docker is not installed ({INSTALL_HINT})")
            raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise
        self.binary = binary
        self.is_podman = Path(binary).name == "podman"
        self.env = dict(os.environ)
        if self.is_podman and "CONTAINERS_CONF" not in os.environ:
            has_runc = shutil.which("runc") is not None or Path("/usr/sbin/runc").exists()
            self.env["CONTAINERS_CONF"] = str(_containers_conf(workdir, has_runc=has_runc))

    def __call__(self, *args: str, check: bool = True, timeout_s: float = 120) -> str:
        """Run `engine args…` and return its stdout; raise AssertionError with its stderr when it fails."""
        result = self.run(*args, timeout_s=timeout_s)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout.strip()

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `engine args…` and return the finished process, whatever its exit code."""
        return subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout_s, check=False)

    def logs(self, name: str) -> str:
        """The container's output (the bridge logs to stderr)."""
        result = self.run("logs", name, timeout_s=60)
        return result.stdout + result.stderr

    def pull(self, image: str, timeout_s: float = 120) -> bool:
        """Whether `image` could be pulled (False when the registry is unreachable or too slow to answer)."""
        try:
            return self.run("pull", "-q", image, timeout_s=timeout_s).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def has_image(self, image: str) -> bool:
        """Whether `image` is in the local store."""
        return self.run("image", "inspect", image, timeout_s=60).returncode == 0

    def image_size_bytes(self, image: str) -> int:
        """The uncompressed size of `image`, as the engine reports it."""
        return int(self("image", "inspect", "--format", "{{.Size}}", image))


def find_compose(engine: Engine) -> list[str]:
    """The compose command for `engine`: `podman-compose` for podman, `docker compose` for docker."""
    if not engine.is_podman:
        return [engine.binary, "compose"]
    found = shutil.which("podman-compose")
    if found is None:
        skip_or_fail(f"podman-compose is not installed ({INSTALL_HINT})")
        raise AssertionError("unreachable")
    return [found]
