"""`mqtt-bridge check-config --explain KEY`: the reference of one key, read from the models' Field descriptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mqtt_bridge.cli.main import EXIT_CONFIG, EXIT_OK, main
from mqtt_bridge.config.explain import explain, key_docs, nearest_keys
from mqtt_bridge.config.image_options import UrlReference
from mqtt_bridge.config.sections import FlushConfig, MqttConfig

REPO = Path(__file__).resolve().parents[3]


Schema = dict[str, Any]  # parsed JSON


def _schema_paths(node: Schema, defs: dict[str, Schema], prefix: str = "") -> set[str]:
    """Every key path of config/schema.json (an independent walk: the schema, not the models)."""
    paths: set[str] = set()
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        paths.add(path)
        for target, suffix in _targets(prop, defs):
            paths |= _schema_paths(target, defs, f"{path}{suffix}.")
    return paths


def _targets(prop: Schema, defs: dict[str, Schema]) -> list[tuple[Schema, str]]:
    """The object schemas a property holds: itself (`$ref`), its items (`[]`) or its map values (`.*`)."""
    out: list[tuple[Schema, str]] = []
    for option in [prop, *prop.get("anyOf", [])]:
        ref = option.get("$ref")
        if isinstance(ref, str):
            out.append((defs[ref.rsplit("/", 1)[-1]], ""))
        for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
            inner = option.get(key)
            if isinstance(inner, dict) and isinstance(inner.get("$ref"), str):
                out.append((defs[inner["$ref"].rsplit("/", 1)[-1]], suffix))
    return out


def test_explain_scalar_key_shows_type_default_range_and_the_model_description(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--explain flush.max_wait_s` prints the path, number type, default 0.5, range 0..60 and the Field text."""
    assert main(["check-config", "--explain", "flush.max_wait_s"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "flush.max_wait_s"
    assert "type:        number" in out
    assert "default:     0.5" in out
    assert "allowed:     >= 0; <= 60" in out
    description = FlushConfig.model_fields["max_wait_s"].description
    assert description is not None and description in " ".join(out.split())


def test_explain_nested_list_key_accepts_an_index_and_shows_its_range(capsys: pytest.CaptureFixture[str]) -> None:
    """A key under the routes list is found as `routes[]…` and as `routes[3]…`, with the url section's text."""
    assert main(["check-config", "--explain", "routes[3].image.url.timeout_s"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "routes[].image.url.timeout_s"
    assert "default:     5.0" in out and "allowed:     > 0; <= 60" in out
    description = UrlReference.model_fields["timeout_s"].description
    assert description is not None and description in " ".join(out.split())


def test_explain_enum_key_lists_the_allowed_values(capsys: pytest.CaptureFixture[str]) -> None:
    """`--explain mqtt.protocol` lists auto, 5 and 3.1.1 and the default auto."""
    assert main(["check-config", "--explain", "mqtt.protocol"]) == EXIT_OK
    out = capsys.readouterr().out
    assert 'allowed:     "auto", "5", "3.1.1"' in out
    assert 'default:     "auto"' in out
    assert "falls back to 3.1.1" in out  # from MqttConfig.protocol's description
    assert MqttConfig.model_fields["protocol"].description is not None


def test_explain_map_key_matches_any_name(capsys: pytest.CaptureFixture[str]) -> None:
    """A key under a map of the user's own names (`sensor_sizes.cam1.width`) is its `*` entry."""
    assert main(["check-config", "--explain", "routes[0].deepstream.sensor_sizes.cam1.width"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[0] == "routes[].deepstream.sensor_sizes.*.width"


def test_explain_size_key_shows_the_default_in_units(capsys: pytest.CaptureFixture[str]) -> None:
    """A byte size says how it may be written and shows its default in GiB."""
    assert main(["check-config", "--explain", "buffer.max_bytes"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2GiB" in out and "default:     2147483648 (2 GiB)" in out


def test_explain_section_lists_its_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """A section's reference names the keys inside it."""
    assert main(["check-config", "--explain", "routes[].image.companion"]) == EXIT_OK
    out = " ".join(capsys.readouterr().out.split())
    assert "keys: topic, key, image_key, window_s, max_parked" in out


def test_explain_unknown_key_exits_2_with_the_nearest_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt key exits 2 and suggests the keys it was probably meant to be (difflib and same last name)."""
    assert main(["check-config", "--explain", "routes[].image.companion.timeout_s"]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "is not a config key" in captured.err
    assert "routes[].image.companion.window_s" in captured.err
    assert "routes[].image.url.timeout_s" in captured.err
    assert main(["check-config", "--explain", "mqtt.protocl"]) == EXIT_CONFIG
    assert "did you mean: mqtt.protocol" in capsys.readouterr().err


def test_explain_needs_no_config_file_but_check_config_needs_one_of_them(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """check-config without a file or --explain is a usage error (2), and so is giving both."""
    assert main(["check-config"]) == EXIT_CONFIG
    assert "give a config file" in capsys.readouterr().err
    path = tmp_path / "ok.yaml"
    path.write_text("api:\n  api_key: k\nroutes:\n  - topic: a/{b}\n    use_case: u\n")
    assert main(["check-config", str(path), "--explain", "mqtt.host"]) == EXIT_CONFIG
    assert "not both" in capsys.readouterr().err


def test_explain_knows_every_key_of_the_schema_and_each_has_a_description() -> None:
    """Every key path of config/schema.json is explained, with a non-empty description from its Field."""
    schema = json.loads((REPO / "config" / "schema.json").read_text())
    paths = _schema_paths(schema, schema["$defs"])
    docs = key_docs()
    assert paths == set(docs), f"schema only: {sorted(paths - set(docs))}; models only: {sorted(set(docs) - paths)}"
    undescribed = sorted(path for path, doc in docs.items() if not doc.description)
    assert not undescribed, f"keys without a Field description (--explain has nothing to say): {undescribed}"


def test_explain_nearest_keys_is_empty_for_nonsense() -> None:
    """Nothing is suggested for a key that resembles none."""
    assert explain("totally.bogus") is None
    assert nearest_keys("totally.bogus") == []
