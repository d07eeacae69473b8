"""The wheel as a user gets it: `pip install mqtt-vision-bridge[demo]` in a fresh venv, then `mqtt-bridge demo`
from a directory that is not a checkout. Also: the product's metadata does not require amqtt without the extra."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import demo_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
_PIP = ("-m", "pip", "--disable-pip-version-check", "--quiet")


def _run(*args: str | Path, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return [line.removeprefix("Requires-Dist: ") for line in text.splitlines() if line.startswith("Requires-Dist: ")]


def test_installed_wheel_runs_the_demo_outside_the_checkout(tmp_path: Path) -> None:
    """Built wheel: amqtt only behind the [demo] extra, demo.yaml inside. Installed without the extra, `demo`
    exits 2 naming it; with the extra, `mqtt-bridge demo` run from tmp_path delivers events to its emulator."""
    built = _run(sys.executable, *_PIP, "wheel", "--no-deps", "--wheel-dir", tmp_path / "wheels", REPO, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "wheels").glob("mqtt_vision_bridge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "mqtt_bridge/devtools/demo.yaml" in archive.namelist()
    amqtt = [r for r in _requirements(wheel) if r.lower().startswith("amqtt")]
    assert amqtt and all(re.search(r"extra\s*==\s*['\"]demo['\"]", r) for r in amqtt), amqtt

    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    python, bridge = venv / "bin" / "python", venv / "bin" / "mqtt-bridge"
    installed = _run(python, *_PIP, "install", wheel, cwd=tmp_path, timeout_s=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert _run(python, "-c", "import amqtt", cwd=tmp_path).returncode != 0, "amqtt came without the extra"
    refused = _run(bridge, "demo", "--duration-s", "0", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "pip install 'mqtt-vision-bridge[demo]'" in refused.stderr and "Traceback" not in refused.stderr

    extra = _run(python, *_PIP, "install", f"{wheel}[demo]", cwd=tmp_path, timeout_s=300)
    assert extra.returncode == 0, extra.stderr[-2000:]
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    log_path = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(bridge), "demo", "--mqtt-port", "0", "--api-port", "0", "--interval-s",
                                    "0.3", "--duration-s", "120"], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=str(workdir), env=env)
    try:
        _, events = demo_events(log_path, 4, url_timeout_s=60, events_timeout_s=45)
        assert "demo-inspection" in {e["useCaseId"] for e in events} <= {"demo-inspection", "demo-safety"}
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert not (workdir / ".demo").exists()  # the demo's buffer lives in a temporary directory
