"""Golden files: every payload under tests/payloads/<format>/ becomes exactly the Vision Events next to it.

Each format folder has `routes.yaml` (the routes, the default topic, the pinned receive time, and per-case topics
and messages to send first, e.g. a Sparkplug BIRTH) and, per case, an input `<case>.json` / `.bin` / `.jpg` with
`<case>.expected.json`: what `mqtt-bridge decode` prints for it (events, image summary, dead letter). Run with
UPDATE_GOLDEN=1 to rewrite the expected files deliberately, then review the diff; by default a mismatch fails.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mqtt_bridge.cli.main import EXIT_OK, main
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.model.values import JsonDict, parse_timestamp
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.dryrun import DryRun

PAYLOADS = Path(__file__).resolve().parents[2] / "payloads"
CONFIG_README = Path(__file__).resolve().parents[3] / "config" / "README.md"
INPUT_SUFFIXES = (".json", ".bin", ".jpg")


@dataclass(frozen=True)
class GoldenCase:
    """One golden input with its folder settings."""

    folder: Path
    name: str
    path: Path
    settings: dict[str, object]

    @property
    def expected_path(self) -> Path:
        """Where the expected outcome lives."""
        return self.folder / f"{self.name}.expected.json"

    def topic(self, name: str | None = None) -> str:
        """The topic of this case (or of another case of the folder)."""
        cases = self.settings.get("cases") or {}
        assert isinstance(cases, dict)
        own = cases.get(name or self.name) or {}
        return str(own.get("topic") or self.settings["topic"])

    def before(self) -> list[str]:
        """Cases to send first, in order (state such as Sparkplug aliases)."""
        cases = self.settings.get("cases") or {}
        assert isinstance(cases, dict)
        return list((cases.get(self.name) or {}).get("before", []))

    def input_of(self, name: str) -> Path:
        """The input file of a case of this folder."""
        return next(self.folder / f"{name}{s}" for s in INPUT_SUFFIXES if (self.folder / f"{name}{s}").exists())


def _cases() -> list[GoldenCase]:
    cases = []
    for folder in sorted(p for p in PAYLOADS.iterdir() if (p / "routes.yaml").exists()):
        settings = yaml.safe_load((folder / "routes.yaml").read_text())
        for path in sorted(folder.iterdir()):
            if path.suffix in INPUT_SUFFIXES and not path.name.endswith(".expected.json"):
                cases.append(GoldenCase(folder, path.name.removesuffix(path.suffix), path, settings))
    return cases


CASES = _cases()


def _dry_run(case: GoldenCase) -> JsonDict:
    now = parse_timestamp(str(case.settings["received_at"]))
    assert now is not None
    routes = [RouteConfig.model_validate(r) for r in case.settings["routes"]]  # type: ignore[attr-defined]
    dry_run = DryRun(routes, 4 * 2**20, now=now)
    for name in case.before():
        dry_run.run(case.topic(name), case.input_of(name).read_bytes())
    return dry_run.run(case.topic(), case.path.read_bytes())


def test_golden_cases_cover_every_format() -> None:
    """Every decoder has a golden folder with several cases."""
    formats = {case.folder.name for case in CASES}
    assert formats >= {"roboflow", "generic", "deepstream", "frigate", "ultralytics", "sparkplug", "dlstreamer",
                       "auto"}
    for name in formats:
        assert sum(1 for c in CASES if c.folder.name == name) >= 4, name


@pytest.mark.parametrize("case", CASES, ids=[f"{c.folder.name}/{c.name}" for c in CASES])
def test_golden_payload_becomes_expected_events(case: GoldenCase) -> None:
    """The dry run of the input equals the reviewed expected file (UPDATE_GOLDEN=1 rewrites it)."""
    actual = json.loads(json.dumps(_dry_run(case)))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        case.expected_path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n")
    assert case.expected_path.exists(), f"no {case.expected_path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert actual == json.loads(case.expected_path.read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"{c.folder.name}/{c.name}" for c in CASES])
def test_golden_decode_command_prints_expected(case: GoldenCase, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`mqtt-bridge decode` prints the expected outcome of the case (the last of its message sequence)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"api": {"api_key": "k"}, "routes": case.settings["routes"]}))
    argv = ["decode", "--config", str(config), "--received-at", str(case.settings["received_at"])]
    for name in [*case.before(), case.name]:
        argv += ["--topic", case.topic(name), "--file", str(case.input_of(name))]
    assert main(argv) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    last = printed[-1] if isinstance(printed, list) else printed
    assert last == json.loads(case.expected_path.read_text())


def test_golden_readme_route_snippets_are_valid() -> None:
    """The per-format config snippets in config/README.md's "Payload formats" are valid routes."""
    text = CONFIG_README.read_text()
    section = text[text.index("\n## Payload formats\n"):text.index("\n## Filters, event types and rules\n")]
    snippets = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    assert len(snippets) >= 7
    for snippet in snippets:
        routes = yaml.safe_load(textwrap.dedent(snippet))
        Router([RouteConfig.model_validate(route) for route in routes])
