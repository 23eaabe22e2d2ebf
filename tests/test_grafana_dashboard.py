"""samples/grafana/trailproc-dashboard.json is an importable Grafana dashboard whose every
query reads metrics trailproc really exports (names and label values from the same
registry `/metrics` serves), so a renamed metric cannot leave a dashboard of empty panels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from trailproc._observe import Metrics

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "samples" / "grafana" / "trailproc-dashboard.json"
METRIC = re.compile(r"\btrailproc_[a-z_]+\b")
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def exported() -> dict[str, dict[str, set[str]]]:
    """Every sample name /metrics serves, with each label's values (all pre-created)."""
    out: dict[str, dict[str, set[str]]] = {}
    for family in Metrics().registry.collect():
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return out


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return found


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


def test_is_a_dashboard_with_a_datasource_variable(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        assert panel["title"], panel
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in PANEL_TYPES, panel["type"]
        # Every panel and query reads the chosen data source, never a fixed one.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["expr"].count("{") == target["expr"].count("}"), target["expr"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_every_queried_metric_and_label_is_exported(dashboard: dict[str, Any]) -> None:
    known = exported()
    used: set[str] = set()
    for expr in queries(dashboard):
        names = METRIC.findall(expr)
        assert names, expr
        for name in names:
            assert name in known, f"{name} is not exported (query: {expr})"
            used.add(name)
        labels = set().union(*(known[name] for name in names))
        for key, value in re.findall(r'\b([a-z_]+)="([^"$]+)"', expr):
            assert value in known_values(known, names, key), f"{key}={value!r} in {expr}"
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for key in (k.strip() for k in group.split(",")):
                assert key in labels | {"le"}, f"no label {key!r} on {names} in {expr}"
    # The dashboard covers what an operator watches first.
    assert {
        "trailproc_records_total",
        "trailproc_errors_total",
        "trailproc_messages_kept_total",
        "trailproc_messages_deleted_total",
        "trailproc_queue_lag_seconds_bucket",
        "trailproc_digest_checks_total",
        "trailproc_last_poll_timestamp",
        "trailproc_bytes_decompressed_total",
    } <= used


def known_values(known: dict[str, dict[str, set[str]]], names: list[str], key: str) -> set[str]:
    return set().union(*(known[name].get(key, set()) for name in names))


def test_metrics_reference_links_the_dashboard() -> None:
    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert "samples/grafana/trailproc-dashboard.json" in text
