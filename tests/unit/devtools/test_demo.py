"""The demo's config: package data (so the demo runs from an installed wheel), the one copy config/ points to."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from mqtt_bridge.devtools.demo import DEMO_CONFIG, _demo_config

REPO = Path(__file__).resolve().parents[3]


def test_demo_config_is_package_data_and_config_demo_yaml_is_the_same_file() -> None:
    """config/demo.yaml (the example a reader finds in config/) is the packaged config, not a second copy."""
    packaged = files("mqtt_bridge.devtools").joinpath(DEMO_CONFIG)
    assert packaged.is_file()
    assert (REPO / "config" / "demo.yaml").read_bytes() == packaged.read_bytes()
    assert (REPO / "config" / "demo.yaml").resolve() == (REPO / "mqtt_bridge" / "devtools" / DEMO_CONFIG).resolve()


def test_demo_config_loads_from_the_package_with_the_demo_ports(tmp_path: Path) -> None:
    """Without --config, the demo loads the packaged config through config.load and fills in ports and buffer."""
    config = _demo_config(None, 18830, "http://127.0.0.1:18080", tmp_path / "buffer")
    assert (config.mqtt.port, config.api.base_url, config.buffer.path) == (18830, "http://127.0.0.1:18080",
                                                                           tmp_path / "buffer")
    assert {route.use_case for route in config.routes} == {"demo-inspection", "demo-safety"}
