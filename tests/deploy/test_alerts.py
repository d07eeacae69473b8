"""The shipped alert rules and dashboard: `promtool check rules` and `promtool test rules` (Debian's `prometheus`
package), every alert tested both firing and not firing, the rules' and panels' required parts, and the metric-name
scanner the Prometheus integration test relies on (tests/deploy/test_prometheus.py)."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.monitoring import (
    ALERTS,
    ALERTS_TEST,
    alert_rules,
    dashboard,
    dashboard_queries,
    metric_names,
    to_promql,
)

_DURATION = re.compile(r"^\d+[smh]$")


# --- promtool -------------------------------------------------------------------------------------------------------

def test_promtool_check_rules_accepts_the_alerts(promtool_binary: str) -> None:
    """`promtool check rules` parses every rule (expressions, durations, templates) and finds them all."""
    result = subprocess.run([promtool_binary, "check", "rules", str(ALERTS)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass(promtool_binary: str) -> None:
    """`promtool test rules alerts_test.yaml`: each alert fires (labels, rendered annotations) and stays quiet."""
    result = subprocess.run([promtool_binary, "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True,
                            timeout=60, check=False, cwd=ALERTS_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """alerts_test.yaml covers each alert at least once firing and at least once expecting no alert."""
    document: dict[str, Any] = yaml.safe_load(ALERTS_TEST.read_text())
    assert document["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule.name for rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a not-firing test"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


# --- the rules --------------------------------------------------------------------------------------------------------

def test_alerts_cover_the_issue_and_each_has_for_severity_summary_description() -> None:
    """Backlog, oldest event, API key/quota, MQTT, dead letters, high-water mark, restarts; each fully described."""
    rules = alert_rules()
    names = [rule.name for rule in rules]
    assert len(names) == len(set(names))
    for wanted in ("MqttBridgeBacklogGrowing", "MqttBridgeOldestEventWaiting", "MqttBridgeApiNotReady",
                   "MqttBridgeApiThrottled", "MqttBridgeMqttDisconnected", "MqttBridgeDeadLettersRising",
                   "MqttBridgeBufferNearHighWater", "MqttBridgeBufferOverHighWater", "MqttBridgeRestarted"):
        assert wanted in names
    for rule in rules:
        assert _DURATION.match(rule.duration), f"{rule.name}: for: {rule.duration!r}"
        assert rule.labels.get("severity") in ("critical", "warning", "info"), rule.name
        assert set(rule.annotations) == {"summary", "description"}, rule.name
        assert "{{ $labels.instance }}" in rule.annotations["summary"], rule.name
        assert len(rule.annotations["description"]) > 150, f"{rule.name}: say what to check"


def test_alerts_use_bridge_metrics_and_the_scrape_only() -> None:
    """Every metric an alert names is the bridge's (`mqtt_bridge_`) or Prometheus's own `up`."""
    for rule in alert_rules():
        names = metric_names(rule.expr)
        assert names, rule.name
        assert all(name.startswith("mqtt_bridge_") or name == "up" for name in names), (rule.name, names)


# --- the dashboard ---------------------------------------------------------------------------------------------------

def test_dashboard_has_the_panels_a_datasource_input_and_a_sane_layout() -> None:
    """schemaVersion 38, a ${DS_PROMETHEUS} input every panel uses, the issue's panels, unique ids, no overlaps."""
    document = dashboard()
    assert document["schemaVersion"] == 38
    assert [item["name"] for item in document["__inputs"]] == ["DS_PROMETHEUS"]
    assert document["__inputs"][0]["pluginId"] == "prometheus"
    panels = document["panels"]
    titles = {panel["title"] for panel in panels}
    for wanted in ("Messages received / s", "Events delivered / s", "Backlog depth", "Oldest waiting event",
                   "API latency", "API errors by class / s", "Dead letters by reason",
                   "Buffer bytes vs high-water mark", "MQTT connected", "Ready"):
        assert wanted in titles
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    latency = next(panel for panel in panels if panel["title"] == "API latency")
    assert all("histogram_quantile(" in target["expr"] and "_bucket" in target["expr"]
               for target in latency["targets"])


def test_dashboard_queries_use_bridge_metrics_and_resolve_every_variable() -> None:
    """Each query names bridge metrics, and once Grafana's variables are replaced none is left."""
    queries = dashboard_queries()
    assert len(queries) > 15
    for query in queries:
        names = metric_names(query.expr)
        assert all(name.startswith("mqtt_bridge_") for name in names), (query.where, names)
        assert "$" not in to_promql(query.expr), query.where
    variables = [query for query in queries if query.where.startswith("variable")]
    assert [metric_names(query.expr) for query in variables] == [{"mqtt_bridge_build_info"}]


# --- the metric-name scanner ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (instance, route) (rate(mqtt_bridge_messages_received_total{instance=~"$instance"}[$__rate_interval]))',
     {"mqtt_bridge_messages_received_total"}),
    ("mqtt_bridge_buffer_depth > 500 and deriv(mqtt_bridge_buffer_depth[10m]) > 0", {"mqtt_bridge_buffer_depth"}),
    ("count without (route) (a_total unless a_total offset 10m) and on (instance, job) (up offset 10m)",
     {"a_total", "up"}),
    ('histogram_quantile(0.95, sum(rate(x_seconds_bucket[5m])) by (le)) > 1e3 or vector($high_water_bytes)',
     {"x_seconds_bucket"}),
    ('label_replace(rate(x_total{status="429"}[1m]), "class", "HTTP ${1}xx", "status", "(4)..")', {"x_total"}),
    ("time() - process_start_time_seconds < bool 2.5e9 or group_left_thing", {"process_start_time_seconds",
                                                                              "group_left_thing"}),
    ("label_values(mqtt_bridge_build_info, instance)", {"mqtt_bridge_build_info"}),
    ("up{job=\"a\"} == 0", {"up"}),
])
def test_metric_names_finds_metrics_and_nothing_else(expr: str, names: set[str]) -> None:
    """Functions, keywords, label names in grouping clauses and matchers, numbers, durations and variables are
    not metric names."""
    assert metric_names(expr) == names
