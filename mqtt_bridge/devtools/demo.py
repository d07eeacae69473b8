"""`mqtt-bridge demo`: the whole product on embedded defaults, in one process, with no account and no broker.

Owns: starting, in order, the embedded amqtt broker, the local Vision Events emulator (with the demo's use case),
the simulated camera's snapshot server (`FrameServer` on 127.0.0.1, which the demo config allows explicitly),
the bridge on the demo config, and the simulated line; printing the page to watch; and stopping all of it in
reverse order on Ctrl-C, SIGTERM or after `duration_s`. The demo config is package data (`demo.yaml` beside this
module, read with `importlib.resources`), so `pip install 'mqtt-vision-bridge[demo]' && mqtt-bridge demo` works
outside a checkout; the repository's `config/demo.yaml` is a symbolic link to it. The config goes through
`config.load` like any other.
"""

from __future__ import annotations

import logging
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from types import FrameType

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import load_config
from mqtt_bridge.devtools.broker import EmbeddedBroker
from mqtt_bridge.devtools.emulator.server import ALL_SCOPES, Emulator
from mqtt_bridge.devtools.simulator import FrameServer, SimulatedLine
from mqtt_bridge.sdk.publisher import Publisher
from mqtt_bridge.service import Service

__all__ = ["DEMO_CONFIG", "DemoSettings", "run_demo"]

log = logging.getLogger(__name__)
DEMO_API_KEY = "demo-key"
DEMO_CONFIG = "demo.yaml"  # package data, beside this module


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """What `mqtt-bridge demo` can change."""

    config_path: Path | None = None  # None: the demo config inside the package
    mqtt_port: int = 1883
    api_port: int = 8080
    interval_s: float = 1.0
    duration_s: float | None = None


def _port_or_free(port: int) -> int:
    """`port` if it can be bound on 127.0.0.1, else a free one (so the demo never fails on a busy port)."""
    for candidate in (port, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            bound: int = sock.getsockname()[1]
            return bound
    raise OSError("no free port on 127.0.0.1")


def _demo_config(path: Path | None, mqtt_port: int, api_url: str, buffer_dir: Path) -> BridgeConfig:
    """The demo's config (the packaged one when `path` is None), with its ports and buffer filled in."""
    env = {"DEMO_MQTT_PORT": str(mqtt_port), "DEMO_BUFFER": str(buffer_dir),
           "DEMO_API_PORT": api_url.rsplit(":", 1)[1], "DEMO_HEALTH_PORT": str(_port_or_free(9100))}
    if path is not None:
        return load_config(path, env=env)
    with as_file(files("mqtt_bridge.devtools").joinpath(DEMO_CONFIG)) as packaged:
        return load_config(packaged, env=env)


def run_demo(settings: DemoSettings) -> int:
    """Run the demo until interrupted (or for `duration_s`); returns the bridge's exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    mqtt_port = _port_or_free(settings.mqtt_port)
    api_port = _port_or_free(settings.api_port)
    broker = EmbeddedBroker("127.0.0.1", mqtt_port)
    emulator = Emulator("127.0.0.1", api_port, api_keys={DEMO_API_KEY: ALL_SCOPES})
    frames = FrameServer("127.0.0.1", 0)
    code = 1
    with tempfile.TemporaryDirectory(prefix="mqtt-bridge-demo-") as tmp:
        service: Service | None = None
        line_thread: threading.Thread | None = None
        try:
            broker.start()
            emulator.start()
            frames.start()
            config = _demo_config(settings.config_path, broker.port, emulator.url, Path(tmp) / "buffer")
            for use_case in sorted({route.use_case for route in config.routes}):
                emulator.add_use_case(f"Demo {use_case}", use_case)
            service = Service(config)
            service.start()
            publisher = Publisher("127.0.0.1", broker.port, client_id="demo-line")
            publisher.__enter__()
            line = SimulatedLine(publisher, stop, interval_s=settings.interval_s, frame_server=frames)
            line_thread = threading.Thread(target=line.run, name="demo-line")
            line_thread.start()
            print(f"\n  Vision Events emulator: {emulator.url}/   (events appear within seconds)\n"
                  f"  MQTT broker:            mqtt://127.0.0.1:{broker.port}\n"
                  f"  Bridge status page:     http://127.0.0.1:{service.health_port}/status\n"
                  f"  Press Ctrl-C to stop.\n", flush=True)
            stop.wait(settings.duration_s)
            if service.stop_event.is_set():
                log.error("the bridge stopped on its own")
        finally:
            stop.set()
            if line_thread is not None:
                line_thread.join(10)
                publisher.__exit__(None, None, None)
            if service is not None:
                code = service.shutdown()
            frames.stop()
            emulator.stop()
            broker.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code
