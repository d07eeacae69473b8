"""The command line: config errors with key paths and exit code 2, schema freshness, version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mqtt_bridge import __version__
from mqtt_bridge.cli.main import COMMANDS, EXIT_CONFIG, EXIT_OK, _parser, command_function, main
from mqtt_bridge.cli.run import config_schema, message_schema

REPO = Path(__file__).resolve().parents[3]


def test_cli_check_config_typo_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt key is reported with its path and the exit code is 2."""
    path = tmp_path / "bad.yaml"
    path.write_text("api:\n  api_key: k\n  base_ulr: http://x\nroutes:\n  - topic: a/{b}\n    use_case: u\n")
    assert main(["check-config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "api.base_ulr: Extra inputs are not permitted" in err


def test_cli_check_config_reports_template_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Route template mistakes are config errors too."""
    path = tmp_path / "bad.yaml"
    path.write_text("api:\n  api_key: k\nroutes:\n  - topic: a/{b}\n    use_case: u\n    device_id: '{c}'\n")
    assert main(["check-config", str(path)]) == EXIT_CONFIG
    assert "routes[0].device_id: unknown placeholder {c}" in capsys.readouterr().err


def test_cli_check_config_prints_effective_config_without_secrets(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config is printed with defaults filled in and secrets redacted."""
    path = tmp_path / "ok.yaml"
    path.write_text("api:\n  api_key: very-secret\nmqtt:\n  password: hunter2\n  username: u\n"
                    "routes:\n  - topic: a/{b}\n    use_case: u\n")
    assert main(["check-config", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "very-secret" not in out and "hunter2" not in out
    assert "receive_maximum: 500" in out


def test_cli_run_with_invalid_config_exits_2(tmp_path: Path) -> None:
    """`run` refuses an invalid config before starting anything."""
    path = tmp_path / "bad.yaml"
    path.write_text("routes: []\n")
    assert main(["run", "--config", str(path)]) == EXIT_CONFIG


def test_cli_config_schema_file_is_current() -> None:
    """config/schema.json matches the models (run `make schema` after changing the config)."""
    committed = json.loads((REPO / "config" / "schema.json").read_text())
    assert committed == json.loads(json.dumps(config_schema())), "config/schema.json is stale: run make schema"


def test_cli_message_schema_file_is_current() -> None:
    """config/message.schema.json matches the canonical message model."""
    committed = json.loads((REPO / "config" / "message.schema.json").read_text())
    assert committed == json.loads(json.dumps(message_schema())), "message.schema.json is stale: run make schema"


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the package version."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_cli_demo_without_its_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo` with a config that is not there says so and exits 2 instead of starting anything."""
    assert main(["demo", "--config", str(tmp_path / "missing.yaml")]) == EXIT_CONFIG
    assert "not found" in capsys.readouterr().err


def test_cli_every_command_runs_a_function_of_its_family_module() -> None:
    """Each subcommand of the parser is dispatched, and its family module has the function that runs it."""
    parser = _parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) == set(COMMANDS) | {"dry-run"}  # type: ignore[arg-type]
    for command, (family, name) in COMMANDS.items():
        function = command_function(command)
        assert callable(function) and function.__module__ == f"mqtt_bridge.cli.{family}" and function.__name__ == name
