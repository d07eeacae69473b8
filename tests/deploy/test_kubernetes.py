"""deploy/kubernetes/ against the Kubernetes schemas (kubernetes-validate, offline) and against what a StatefulSet of
bridges needs: a volume per replica, a distinct MQTT client id per replica, probes on the health port, a
PodDisruptionBudget, and resource requests that cover what the newest benchmark measured."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import parse_config

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "mqtt-vision-bridge.yaml"
BENCH_RESULTS = ROOT / "tests" / "bench" / "results"
# the oldest Kubernetes the manifests are stated for, and the newest schemas the installed validator ships
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?$")
SUFFIX = {None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30}


def _documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def _by_kind() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in _documents()}


def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: "200m" -> 0.2 (cores), "128Mi" -> 134217728 (bytes)."""
    match = QUANTITY.match(str(value))
    assert match, f"unexpected quantity {value!r}"
    return float(match.group(1)) * SUFFIX[match.group(2)]


def _replica_config(pod_name: str) -> BridgeConfig:
    """The ConfigMap's config as the replica `pod_name` loads it (POD_NAME and HEALTH_TOKEN from its env)."""
    text = _by_kind()["ConfigMap"]["data"]["config.yaml"]
    return parse_config(yaml.safe_load(text), env={"POD_NAME": pod_name, "HEALTH_TOKEN": "from-the-secret"})


def _container() -> dict[str, Any]:
    [container] = _by_kind()["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def _newest_bench() -> dict[str, Any]:
    files = sorted(BENCH_RESULTS.glob("bench-*.json"))
    assert files, f"no benchmark results in {BENCH_RESULTS}"
    result: dict[str, Any] = json.loads(files[-1].read_text())
    return result


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_pass_strict_schema_validation(version: str) -> None:
    """Every document validates against that Kubernetes version's schemas, unknown fields rejected."""
    documents = _documents()
    assert {doc["kind"] for doc in documents} == {"Secret", "ConfigMap", "Service", "StatefulSet",
                                                  "PodDisruptionBudget"}
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validation_rejects_a_misspelled_field() -> None:
    """The validator really checks: a misspelled probe field in the StatefulSet is an error."""
    sts = copy.deepcopy(_by_kind()["StatefulSet"])
    probe = sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(sts, KUBERNETES_VERSIONS[0], strict=True)


def test_kubernetes_statefulset_gives_each_replica_its_own_buffer_volume() -> None:
    """The buffer is a volumeClaimTemplate (one ReadWriteOnce PVC per pod), never a shared pod volume, and the
    buffer's high-water mark is below the claim's size."""
    pod_spec = _by_kind()["StatefulSet"]["spec"]
    [claim] = pod_spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    shared = {volume["name"] for volume in pod_spec["template"]["spec"]["volumes"]}
    assert claim["metadata"]["name"] not in shared
    mounts = {mount["name"]: mount["mountPath"] for mount in _container()["volumeMounts"]}
    config = _replica_config("mqtt-vision-bridge-0")
    assert mounts[claim["metadata"]["name"]] == str(config.buffer.path)
    assert config.buffer.max_bytes < _quantity(claim["spec"]["resources"]["requests"]["storage"])


def test_kubernetes_replicas_get_distinct_client_ids_and_one_shared_group() -> None:
    """Each replica's client id is its pod name (from the downward API): all differ; all share one group."""
    sts = _by_kind()["StatefulSet"]
    env = {item["name"]: item for item in _container()["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    replicas = int(sts["spec"]["replicas"])
    assert replicas > 1
    configs = [_replica_config(f"{sts['metadata']['name']}-{ordinal}") for ordinal in range(replicas)]
    assert len({config.mqtt.client_id for config in configs}) == replicas
    assert len({config.mqtt.shared_group for config in configs}) == 1 and configs[0].mqtt.shared_group


def test_kubernetes_probes_use_the_health_port() -> None:
    """Startup, liveness and readiness probes GET /healthz and /readyz on the port the config's health server
    listens on (on the pod IP), and the headless Service targets the same port."""
    container = _container()
    config = _replica_config("mqtt-vision-bridge-0")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["health"] == config.health.port and config.health.host == "0.0.0.0"
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in ("health", config.health.port), probe
        paths[probe] = get["path"]
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    [service_port] = _by_kind()["Service"]["spec"]["ports"]
    assert service_port["targetPort"] in ("health", config.health.port)


def test_kubernetes_disruption_budget_covers_the_statefulset_and_keeps_replicas_up() -> None:
    """The PodDisruptionBudget selects the StatefulSet's pods and lets at most one be evicted at a time."""
    docs = _by_kind()
    budget, sts = docs["PodDisruptionBudget"], docs["StatefulSet"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert budget["apiVersion"] == "policy/v1"
    if "maxUnavailable" in budget["spec"]:
        assert budget["spec"]["maxUnavailable"] == 1
    else:
        assert int(budget["spec"]["minAvailable"]) == int(sts["spec"]["replicas"]) - 1


def test_kubernetes_resources_cover_the_newest_benchmark() -> None:
    """Requests cover the bridge's peak RSS (any mode) and its cores at the steady rate; limits cover the cores of
    every mode and leave twice the peak RSS."""
    bench = _newest_bench()["summary"]
    bridge = {mode: results["bridge"] for mode, results in bench.items()}
    peak_rss_bytes = max(float(result["peak_rss_mb"]) for result in bridge.values()) * 2.0**20
    steady_cores = float(bridge["rate"]["cores"])
    busiest_cores = max(float(result["cores"]) for result in bridge.values())
    resources = _container()["resources"]
    assert _quantity(resources["requests"]["memory"]) >= peak_rss_bytes
    assert _quantity(resources["requests"]["cpu"]) >= steady_cores
    assert _quantity(resources["limits"]["memory"]) >= 2 * peak_rss_bytes
    assert _quantity(resources["limits"]["cpu"]) >= busiest_cores
