"""The shipped Prometheus rules and Grafana dashboard, read for the tests: their expressions and the metric names in
them, and a real `prometheus` process (the Debian package) for the integration test.

`metric_names` is a small PromQL scanner, not a parser: it removes strings, label matchers, ranges, grouping
clauses and Grafana variables, then keeps the identifiers that are not functions or keywords. Prometheus itself
parses every expression in the integration test, so a construct the scanner misreads cannot pass unnoticed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.helpers import LOCALHOST, free_port, wait_until

__all__ = [
    "ALERTS",
    "ALERTS_TEST",
    "DASHBOARD",
    "AlertRule",
    "DashboardQuery",
    "PrometheusServer",
    "alert_rules",
    "dashboard",
    "dashboard_queries",
    "find_tool",
    "metric_names",
    "to_promql",
]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yaml"
DASHBOARD = DEPLOY / "grafana" / "mqtt-vision-bridge.json"

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
# an identifier that is not part of a number or a longer name, and not a function call
_IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*(?![\w:]|\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"})
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([A-Za-z_:][\w:]*)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana `label_values(metric, label)` query) refers to."""
    label_values = _LABEL_VALUES.match(expr)
    if label_values:
        return {label_values.group(1)}
    text = _STRING.sub(" ", expr)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of alerts.yaml."""

    name: str
    expr: str
    duration: str
    labels: dict[str, str]
    annotations: dict[str, str]


def alert_rules() -> list[AlertRule]:
    """Every alerting rule in deploy/prometheus/alerts.yaml, in file order."""
    document: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return [AlertRule(rule["alert"], rule["expr"], rule.get("for", ""), rule.get("labels", {}),
                      rule.get("annotations", {}))
            for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard JSON."""
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


@dataclass(frozen=True)
class DashboardQuery:
    """One Prometheus query of the dashboard: a panel target or a template variable's query."""

    where: str
    expr: str


def dashboard_queries() -> list[DashboardQuery]:
    """Every Prometheus expression in the dashboard: panel targets and query variables."""
    document = dashboard()
    out: list[DashboardQuery] = []
    for panel in document["panels"]:
        out.extend(DashboardQuery(f"panel {panel['title']!r} {target['refId']}", target["expr"])
                   for target in panel.get("targets", []))
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            out.append(DashboardQuery(f"variable {variable['name']}",
                                      query["query"] if isinstance(query, dict) else query))
    return out


def to_promql(expr: str, scrape_interval_s: float = 1.0) -> str:
    """A dashboard expression with Grafana's variables replaced the way Grafana would for a live query."""
    values: dict[str, str] = {}
    for variable in dashboard()["templating"]["list"]:
        current = variable.get("current", {}).get("value")
        if current in (["$__all"], "$__all"):
            values[variable["name"]] = variable.get("allValue", ".*")
        elif isinstance(current, str):
            values[variable["name"]] = current
    rate_interval = f"{int(4 * scrape_interval_s + 1)}s"

    def _replace(match: re.Match[str]) -> str:
        name = match.group(0).strip("${}")
        if name in ("__rate_interval", "__interval", "__range"):
            return rate_interval
        return values.get(name, match.group(0))

    return _GRAFANA_VARIABLE.sub(_replace, expr)


def find_tool(name: str) -> str | None:
    """Path of a Prometheus tool (`promtool`, `prometheus`), or None when Debian's `prometheus` is missing."""
    return shutil.which(name) or next(
        (path for path in (f"/usr/bin/{name}", f"/usr/local/bin/{name}") if Path(path).is_file()), None)


class PrometheusServer:
    """A real Prometheus on a free local port with its own storage, scraping `targets` every second."""

    def __init__(self, binary: str, workdir: Path, targets: list[str], rule_files: list[Path],
                 job: str = "mqtt-vision-bridge") -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"
        self.log_path = workdir / "prometheus.log"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> PrometheusServer:
        """Start the process and wait for /-/ready."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address={LOCALHOST}:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        process = self._process

        def _ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}:\n{self.log_text()}")
            try:
                return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(_ready, timeout_s=timeout_s, interval_s=0.1, message=f"prometheus on {self.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def log_text(self) -> str:
        """What Prometheus logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return its `data` (asserts status success)."""
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        body: dict[str, Any] = answer.json()
        assert answer.status_code == 200 and body.get("status") == "success", (path, params, body)
        return body["data"]

    def metric_names(self) -> set[str]:
        """Every metric name Prometheus holds."""
        return set(self.api("label/__name__/values"))

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or scalar as one sample)."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        assert isinstance(result, list)
        return result
