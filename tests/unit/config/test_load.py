"""Config loading: validation with key paths, interpolation, secret files, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_bridge.config.load import load_config, parse_config, redacted
from mqtt_bridge.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def _minimal(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "api": {"api_key": "k"},
        "routes": [{"topic": "factory/{line}/{camera}/detections", "use_case": "uc"}],
    }
    raw.update(overrides)
    return raw


def test_config_unknown_key_is_an_error_with_its_path() -> None:
    """A typo in a nested key is reported with the full key path."""
    raw = _minimal(routes=[{"topic": "a/b", "use_case": "uc", "devce_id": "x"}])
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={})
    assert ("routes[0].devce_id", "Extra inputs are not permitted") in info.value.problems


def test_config_reports_every_problem_at_once() -> None:
    """Several problems are all listed, each with its own path."""
    raw = _minimal(mqtt={"port": 0, "protocol": "4"}, flush={"max_events": 101})
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={})
    paths = {path for path, _ in info.value.problems}
    assert {"mqtt.port", "mqtt.protocol", "flush.max_events"} <= paths


def test_config_interpolates_env_with_defaults() -> None:
    """${VAR} takes the environment, ${VAR:-x} falls back to x, $$ is a literal dollar."""
    raw = _minimal(mqtt={"host": "${HOST}", "client_id": "${ID:-bridge-1}", "username": "a$$b"})
    config = parse_config(raw, env={"HOST": "broker.local"})
    assert config.mqtt.host == "broker.local"
    assert config.mqtt.client_id == "bridge-1"
    assert config.mqtt.username == "a$b"


def test_config_missing_env_var_names_the_key() -> None:
    """An unset variable without a default is an error at the key that uses it."""
    with pytest.raises(ConfigError) as info:
        parse_config(_minimal(api={"api_key": "${ROBOFLOW_API_KEY}"}), env={})
    assert info.value.problems[0][0] == "api.api_key"
    assert "ROBOFLOW_API_KEY" in info.value.problems[0][1]


def test_config_reads_secrets_from_files(tmp_path: Path) -> None:
    """api_key_file and password_file are read (and stripped) when asked for."""
    (tmp_path / "key").write_text("secret-key\n")
    (tmp_path / "pw").write_text("pw\n")
    raw = _minimal(api={"api_key_file": str(tmp_path / "key")},
                   mqtt={"username": "u", "password_file": str(tmp_path / "pw")})
    config = parse_config(raw, env={})
    assert config.api.api_key_value() == "secret-key"
    assert config.mqtt.password_value() == "pw"


def test_config_redaction_hides_secrets() -> None:
    """The effective config printed by check-config never contains a secret."""
    config = parse_config(_minimal(api={"api_key": "top-secret"}, mqtt={"username": "u", "password": "pw"}),
                          env={})
    text = str(redacted(config))
    assert "top-secret" not in text
    assert "'pw'" not in text
    assert "top-secret" not in repr(config)


def test_config_sizes_accept_units() -> None:
    """Byte sizes accept plain numbers and IEC/SI units; garbage is rejected."""
    config = parse_config(_minimal(buffer={"path": "/tmp/b", "max_bytes": "2GiB", "min_free_bytes": "10MB"}),
                          env={})
    assert config.buffer.max_bytes == 2 * 2**30
    assert config.buffer.min_free_bytes == 10_000_000
    with pytest.raises(ConfigError) as info:
        parse_config(_minimal(buffer={"max_bytes": "lots"}), env={})
    assert info.value.problems[0][0] == "buffer.max_bytes"


def test_config_requires_an_api_key() -> None:
    """Without api_key or api_key_file the api section is invalid."""
    with pytest.raises(ConfigError) as info:
        parse_config(_minimal(api={}), env={})
    assert info.value.problems[0][0] == "api"


@pytest.mark.parametrize("name", ["demo.yaml", "minimal.yaml", "reference.yaml"])
def test_config_shipped_examples_are_valid(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example config in config/ loads."""
    monkeypatch.setenv("ROBOFLOW_API_KEY", "k")
    config = load_config(REPO / "config" / name)
    assert config.routes


def test_config_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    """A YAML syntax error names its line."""
    path = tmp_path / "bad.yaml"
    path.write_text("api:\n  api_key: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0][0].startswith("line ")


def test_config_load_reports_receipt_and_image_reference_problems_together(tmp_path: Path) -> None:
    """config.load validates what the routes compile to as well: every problem of every route, with its key path."""
    path = tmp_path / "bridge.yaml"
    path.write_text("api:\n  api_key: k\nroutes:\n"
                    "  - topic: a/{cam}\n    use_case: u\n    receipt_topic: 'r/{nope}'\n"
                    "  - topic: b/{cam}\n    use_case: u\n    image:\n      url:\n"
                    "        template: 'http://x/{cam}/{missing}'\n        allow_hosts: [x]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    keys = [key for key, _ in info.value.problems]
    assert "routes[0].receipt_topic" in keys
    assert any(key.startswith("routes[1].image") for key in keys), info.value.problems


def test_config_load_reports_every_template_problem_of_every_route() -> None:
    """A wrong placeholder in two routes gives two problems, each with its route's key path."""
    raw = _minimal(routes=[{"topic": "a/{b}", "use_case": "u", "device_id": "{c}"},
                           {"topic": "d/{e}", "use_case": "u", "stream_id": "{f}"}])
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={})
    assert [key for key, _ in info.value.problems] == ["routes[0].device_id", "routes[1].stream_id"]


def test_config_built_without_load_is_validated_the_same_way_by_the_service(tmp_path: Path) -> None:
    """A BridgeConfig made directly from the models (not by config.load) gets the same checks when the Service is
    built on it: the bad receipt topic is a ConfigError before anything starts."""
    from mqtt_bridge.config.bridge import BridgeConfig
    from mqtt_bridge.service import Service

    config = BridgeConfig.model_validate(_minimal(
        buffer={"path": str(tmp_path / "buffer")},
        routes=[{"topic": "a/{cam}", "use_case": "u", "receipt_topic": "r/{nope}"}]))
    with pytest.raises(ConfigError) as info:
        Service(config)
    assert [key for key, _ in info.value.problems] == ["routes[0].receipt_topic"]
    assert not (tmp_path / "buffer").exists()
