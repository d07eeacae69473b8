"""The dev-tool commands: the embedded broker is an optional extra, and its absence is a clear exit 2."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests

from mqtt_bridge.cli.dev import DEMO_EXTRA
from mqtt_bridge.cli.main import EXIT_CONFIG, main


@pytest.fixture
def without_amqtt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python as it is after `pip install mqtt-vision-bridge` without the [demo] extra: amqtt cannot be imported."""
    for name in [name for name in sys.modules if name == "amqtt" or name.startswith("amqtt.")] or ["amqtt"]:
        monkeypatch.setitem(sys.modules, name, None)
    for module in ("mqtt_bridge.devtools.broker", "mqtt_bridge.devtools.demo"):
        monkeypatch.delitem(sys.modules, module, raising=False)


@pytest.mark.usefixtures("without_amqtt")
def test_cli_demo_without_amqtt_exits_2_naming_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    """`mqtt-bridge demo` without the embedded broker says how to install it and exits 2, starting nothing."""
    assert main(["demo", "--mqtt-port", "0", "--api-port", "0", "--duration-s", "0"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "the demo needs the embedded broker: pip install 'mqtt-vision-bridge[demo]'" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("without_amqtt")
def test_cli_broker_without_amqtt_exits_2_naming_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    """`mqtt-bridge broker` without amqtt says how to install it and exits 2."""
    assert main(["broker", "--port", "0"]) == EXIT_CONFIG
    assert DEMO_EXTRA in capsys.readouterr().err


@pytest.mark.usefixtures("without_amqtt")
def test_cli_run_and_the_operator_tools_load_without_amqtt() -> None:
    """The product's commands never need the optional embedded broker (they import no dev tool)."""
    import importlib

    for family in ("run", "decode", "dlq", "export", "status", "use_cases", "dev"):
        importlib.import_module(f"mqtt_bridge.cli.{family}")
    assert "mqtt_bridge.devtools.broker" not in sys.modules


def test_cli_emulator_stops_on_sigterm_with_exit_0() -> None:
    """`mqtt-bridge emulator` ends on SIGTERM as on Ctrl-C (a container engine stops its PID 1 with SIGTERM)."""
    process = subprocess.Popen([sys.executable, "-m", "mqtt_bridge", "emulator", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once it listens
        assert "Vision Events emulator on http://" in line, line
        url = line.split(" on ", 1)[1].split("/ ", 1)[0]
        assert requests.get(f"{url}/", timeout=5).status_code == 200  # it serves before the signal
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
