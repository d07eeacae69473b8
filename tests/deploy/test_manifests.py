"""Deployment files agree with the image, the config schema and the CLI: Dockerfile, compose, Kubernetes, systemd."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqtt_bridge.cli.main import _parser
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import parse_config
from mqtt_bridge.observe.receipts import compile_receipt_topics
from mqtt_bridge.routing.router import Router

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _dockerfile() -> dict[str, str]:
    """The last (runtime) stage's instructions, by name (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages = text.split("\nFROM ")
    out: dict[str, str] = {}
    for line in stages[-1].splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.strip().partition(" ")
            out[name] = (out[name] + "\n" + rest) if name in out else rest
    return out


def _json_array(value: str) -> list[str]:
    parsed = yaml.safe_load(value.strip())
    assert isinstance(parsed, list), value
    return [str(item) for item in parsed]


def _validate(text: str, env: dict[str, str]) -> BridgeConfig:
    config = parse_config(yaml.safe_load(text), env=env)
    Router(list(config.routes))
    compile_receipt_topics(config.routes)
    return config


IMAGE = _dockerfile()
CONFIG_PATH = _json_array(IMAGE["CMD"])[-1]
BUFFER_PATH = _json_array(IMAGE["VOLUME"])[0]


def test_dockerfile_runs_the_cli_as_non_root_with_a_volume_and_healthcheck() -> None:
    """Non-root user, buffer volume, SIGTERM, exec-form entrypoint, a /healthz check, installs from wheels only."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert "--no-index --find-links /wheels" in text and "FROM ${BASE_IMAGE} AS build" in text
    assert IMAGE["USER"].split(":")[0] not in ("root", "0")
    assert IMAGE["STOPSIGNAL"] == "SIGTERM"
    assert _json_array(IMAGE["ENTRYPOINT"]) == ["/opt/mqtt-bridge/bin/mqtt-bridge"]
    assert "/healthz" in IMAGE["HEALTHCHECK"] and "CMD [" in IMAGE["HEALTHCHECK"]
    args = _parser().parse_args(_json_array(IMAGE["CMD"]))
    assert args.command == "run" and args.config == CONFIG_PATH
    config = _validate((DEPLOY / "config.yaml").read_text(), env={})
    assert str(config.buffer.path) == BUFFER_PATH
    assert str(config.health.port) in IMAGE["EXPOSE"].split()


def test_dockerfile_installs_the_package_without_the_demo_extra() -> None:
    """The image ships the product only: the Makefile builds the wheels without extras (`pip wheel .`) and the
    Dockerfile installs the package without extras, so amqtt (the [demo] extra) is not in it."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    installs = [line for line in text.splitlines() if "pip install" in line and "--find-links /wheels" in line]
    assert installs and all(re.search(r"--no-cache-dir mqtt-vision-bridge(\s|$)", line) for line in installs)
    assert "amqtt" not in "".join(installs)
    makefile = (DEPLOY.parent / "Makefile").read_text()
    assert re.search(r"pip wheel \S.*--wheel-dir build/wheels \.$", makefile, re.MULTILINE), "image wheels: no extras"


def test_compose_matches_the_image_and_the_config_schema() -> None:
    """Services, config and buffer mounts, secret path, ports and the dry-run emulator agree with the image."""
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "bridge", "emulator"}
    assert services["emulator"]["profiles"] == ["dry-run"]
    bridge = services["bridge"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in bridge["volumes"]}
    assert mounts[CONFIG_PATH] == "./config.yaml" and (DEPLOY / "config.yaml").exists()
    assert mounts[BUFFER_PATH] in compose["volumes"]
    assert bridge["build"]["dockerfile"] == "deploy/Dockerfile"
    assert bridge["image"] == services["emulator"]["image"]
    env = {key: str(value) for key, value in bridge["environment"].items()
           if "${" not in str(value)} | {"ROBOFLOW_API_URL": "http://emulator:8080"}
    config = _validate((DEPLOY / "config.yaml").read_text(), env=env)
    # container ports fixed; the host side is `${VAR:-default}` so tests (and a busy host) can pick others
    assert config.mqtt.host == "mosquitto"
    assert services["mosquitto"]["ports"] == [f"${{MOSQUITTO_PORT:-1883}}:{config.mqtt.port}"]
    assert mounts[str(config.api.api_key_file)] == "./secrets/roboflow_api_key"
    assert config.health.host == "0.0.0.0"
    assert bridge["ports"] == [f"127.0.0.1:${{BRIDGE_HEALTH_PORT:-9100}}:{config.health.port}"]
    assert services["emulator"]["ports"] == ["127.0.0.1:${EMULATOR_PORT:-8080}:8080"]
    emulator_args = services["emulator"]["command"]
    assert emulator_args[emulator_args.index("--port") + 1] == "8080"
    assert emulator_args[emulator_args.index("--use-case") + 1] == config.routes[0].use_case
    assert bridge["stop_signal"] == "SIGTERM" and bridge["read_only"] is True


def _k8s() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "mqtt-vision-bridge.yaml")
                                                            .read_text()) if doc}


def test_kubernetes_statefulset_matches_the_image_and_the_config_schema() -> None:
    """One PVC per replica at the buffer path, probes on the health port, key from the Secret, valid config."""
    docs = _k8s()
    sts = docs["StatefulSet"]["spec"]
    pod = sts["template"]["spec"]
    [container] = pod["containers"]
    config = _validate(docs["ConfigMap"]["data"]["config.yaml"],
                       env={"POD_NAME": "mqtt-vision-bridge-0", "HEALTH_TOKEN": "from-the-secret"})
    # the health port is on the pod IP: its token comes from the Secret, not the ConfigMap (issue 16 item 4)
    assert config.health.token is not None and config.health.token.get_secret_value() == "from-the-secret"
    env = {item["name"]: item.get("valueFrom", {}) for item in container["env"]}
    assert env["HEALTH_TOKEN"]["secretKeyRef"]["name"] == docs["Secret"]["metadata"]["name"]
    assert env["HEALTH_TOKEN"]["secretKeyRef"]["key"] in docs["Secret"]["stringData"]
    assert config.mqtt.client_id == "mqtt-vision-bridge-0" and config.mqtt.shared_group
    assert config.mqtt.protocol == "5"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert [claim["metadata"]["name"] for claim in sts["volumeClaimTemplates"]] == ["buffer"]
    assert mounts["buffer"] == BUFFER_PATH == str(config.buffer.path)
    assert mounts["config"] + "/config.yaml" == CONFIG_PATH
    assert str(config.api.api_key_file).startswith(mounts["api-key"] + "/")
    secret_key = str(config.api.api_key_file).rsplit("/", 1)[1]
    assert secret_key in docs["Secret"]["stringData"]
    assert _parser().parse_args(container["args"]).config == CONFIG_PATH
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert port == config.health.port and config.health.host == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsUser"] == int(IMAGE["USER"].split(":")[0])
    assert pod["terminationGracePeriodSeconds"] > config.flush.shutdown_grace_s + 5
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def _unit() -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "mqtt-vision-bridge.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def test_systemd_unit_execstart_is_a_real_command_and_it_is_hardened() -> None:
    """ExecStart runs `mqtt-bridge run --config …`; the unit has a state directory and the main hardening options."""
    unit = _unit()
    argv = shlex.split(unit["ExecStart"][0])
    assert Path(argv[0]).name == "mqtt-bridge"
    args = _parser().parse_args(argv[1:])
    assert args.command == "run" and args.config == "/etc/mqtt-bridge/config.yaml"
    assert unit["StateDirectory"] == ["mqtt-bridge"] and unit["DynamicUser"] == ["yes"]
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "ProtectHome", "RestrictAddressFamilies"):
        assert key in unit, key
    assert unit["KillSignal"] == ["SIGTERM"] and "2" in unit["RestartPreventExitStatus"][0].split()


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts every line (ExecStart pointed at an existing binary for the check)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "systemd" / "mqtt-vision-bridge.service").read_text()
    copy = tmp_path / "mqtt-vision-bridge.service"
    copy.write_text(unit.replace("/opt/mqtt-vision-bridge/bin/mqtt-bridge", shutil.which("true") or "/bin/true"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "mqtt-vision-bridge" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr
