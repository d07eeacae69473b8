"""A real Prometheus (Debian's `prometheus` package) scrapes real bridges: every metric the dashboard and the alert
rules name exists in it, every query and rule evaluates, and every dashboard panel shows data.

Two in-process bridges against Mosquitto and the emulator, so that every labelled series exists (a labelled
counter is exported from its first count on): bridge A delivers events, dead-letters a bad payload and retries a
429; bridge B has a tiny high-water mark with `on_full: drop_images`, so it sheds an image.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.service import Service
from tests.deploy.monitoring import (
    ALERTS,
    PrometheusServer,
    alert_rules,
    dashboard,
    dashboard_queries,
    metric_names,
    to_promql,
)
from tests.helpers import TEST_ROUTES, BridgeFactory, MosquittoBroker, PahoClient, detection_message, wait_until

pytestmark = pytest.mark.integration


def _exercise(mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory) -> list[Service]:
    """Start bridges A and B and drive them until every series the dashboard and alerts use has a sample."""
    health = {"enabled": True, "host": "127.0.0.1", "port": 0}
    bridge_a = bridge_factory(mosquitto, emulator, health=health)
    routes_b = [{**route, "topic": str(route["topic"]).replace("{prefix}", "b")} for route in TEST_ROUTES]
    bridge_b = bridge_factory(mosquitto, emulator, health=health, routes=routes_b,
                              buffer={"max_bytes": 1024, "on_full": "drop_images"})
    with PahoClient(mosquitto, client_id="prometheus-test-publisher").connect() as publisher:
        publisher.publish("b/factory/L1/cam1/detections", detection_message(9, with_image=True, run="b"))
        wait_until(lambda: bridge_b.stats.count("images_shed") == 1 and bridge_b.stats.count("events_delivered") == 1,
                   timeout_s=15, message="bridge B shed the image and delivered the event")
        emulator.set_faults(statuses=[429])  # the next write, which is bridge A's
        publisher.publish_many([("t/factory/L1/cam1/detections", detection_message(seq, run="a")) for seq in range(5)]
                               + [("t/factory/L1/cam1/detections", b"not json")])
        wait_until(lambda: bridge_a.stats.count("events_delivered") == 5 and bridge_a.stats.count("dead_letters") == 1
                   and bridge_a.stats.count("api_retries") == 1, timeout_s=15, message="bridge A delivered")
    # the broker away for a moment: a failed reconnect (mqtt_bridge_mqtt_connect_failures_total) on both bridges
    mosquitto.stop()
    wait_until(lambda: all(bridge.stats.count("mqtt_connect_failures") for bridge in (bridge_a, bridge_b)),
               timeout_s=15, message="a failed reconnect on both bridges")
    mosquitto.start()
    wait_until(lambda: all(bridge.state().mqtt_subscribed for bridge in (bridge_a, bridge_b)), timeout_s=20,
               message="both bridges back on the broker")
    return [bridge_a, bridge_b]


def test_prometheus_scraping_bridges_has_every_metric_the_dashboard_and_alerts_use(
        prometheus_binary: str, mosquitto: MosquittoBroker, emulator: Emulator, bridge_factory: BridgeFactory,
        tmp_path: Path) -> None:
    """Names from /api/v1/label/__name__/values, queries through /api/v1/query, rules from /api/v1/rules."""
    bridges = _exercise(mosquitto, emulator, bridge_factory)
    targets = [f"127.0.0.1:{bridge.health_port}" for bridge in bridges]
    prometheus = PrometheusServer(prometheus_binary, tmp_path / "prometheus", targets, rule_files=[ALERTS]).start()
    try:
        queries = dashboard_queries()
        rules = alert_rules()
        referenced = {name: query.where for query in queries for name in metric_names(query.expr)}
        referenced |= {name: f"alert {rule.name}" for rule in rules for name in metric_names(rule.expr)}
        assert len(referenced) >= 20

        def _missing() -> dict[str, str]:
            names = prometheus.metric_names()
            return {name: where for name, where in referenced.items() if name not in names}

        # both targets scraped a few times (rate() over the dashboard's interval needs two samples)
        wait_until(lambda: len(prometheus.query("count_over_time(up[10s]) >= 3 and up == 1")) == 2, timeout_s=20,
                   interval_s=0.25, message=f"both bridges scraped (log: {prometheus.log_text()[-2000:]})")
        assert _missing() == {}, "metrics the dashboard or alerts name that the bridges do not export"
        # the check can disagree: a misspelled name is reported, by the same comparison against Prometheus
        misspelled = metric_names("rate(mqtt_bridge_events_deliverd_total[5m])")
        assert misspelled == {"mqtt_bridge_events_deliverd_total"}
        assert misspelled - prometheus.metric_names() == misspelled

        # every query Grafana would send is valid PromQL to this Prometheus, and every panel has data
        for panel in dashboard()["panels"]:
            results = [prometheus.query(to_promql(target["expr"])) for target in panel["targets"]]
            assert any(results), f"panel {panel['title']!r} shows no data"
        instances = {series["metric"]["instance"] for series in prometheus.query("mqtt_bridge_build_info")}
        assert instances == set(targets)

        # the rules load and evaluate without error
        def _evaluated() -> list[dict[str, object]]:
            groups = prometheus.api("rules", type="alert")["groups"]
            loaded = [rule for group in groups for rule in group["rules"]]
            return loaded if loaded and all(rule["lastEvaluation"][:4] != "0001" for rule in loaded) else []

        loaded = wait_until(_evaluated, timeout_s=10, interval_s=0.2, message="alert rules evaluated")
        assert sorted(str(rule["name"]) for rule in loaded) == sorted(rule.name for rule in rules)
        assert [(rule["name"], rule["lastError"]) for rule in loaded if rule["health"] != "ok"] == []
        for rule in rules:  # and each alert expression runs as an instant query too
            prometheus.query(rule.expr)
    finally:
        prometheus.stop()
