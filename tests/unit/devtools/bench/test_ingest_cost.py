"""The ingest micro-benchmark runs the real Ingestor on both sample formats and reports a cost for each."""

from __future__ import annotations

from mqtt_bridge.devtools.bench.ingest_cost import measure


def test_ingest_cost_reports_min_and_median_for_both_formats() -> None:
    """Both sample messages become events (else it raises) and each format gets a min <= median figure."""
    figures = measure(runs=3, messages=20)
    assert set(figures) == {"canonical", "roboflow"}
    for fastest, median in figures.values():
        assert 0 < fastest <= median
