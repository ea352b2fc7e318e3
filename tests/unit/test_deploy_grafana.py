"""deploy/grafana: the dashboard is well-formed, every PromQL expression in
it parses (Prometheus's own parser, through `promtool check rules`), and it
only uses metric names the monitor documents. The check against a live
/metrics is in tests/integration/test_deploy_prometheus_e2e.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import (  # noqa: E402
    DASHBOARD, DEPLOY, METRICS_DOC, dashboard_exprs, documented_metric_names, grafana_to_promql,
    metric_names, need, recording_rule_names, run, temp_dir,
)


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def promtool_parses(exprs: list[str]) -> tuple[int, str]:
    """Each expression as a recording rule in a temp file, checked by promtool."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    with temp_dir("deploy-grafana-") as d:
        path = d / "exprs.yml"
        path.write_text(yaml.safe_dump(rules))
        r = run([need("promtool"), "check", "rules", str(path)])
    return r.returncode, r.stdout + r.stderr


def test_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels():
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]


@pytest.mark.prometheus
def test_every_expression_parses() -> None:
    exprs = [grafana_to_promql(e) for _, e in dashboard_exprs()]
    assert len(exprs) >= 15
    code, out = promtool_parses(exprs)
    assert code == 0, out
    assert f"SUCCESS: {len(exprs)} rules found" in out


@pytest.mark.prometheus
def test_the_parse_check_can_fail() -> None:
    code, out = promtool_parses(["sum by (workload (rate(enforcer_seccomp_violations_total[5m]))"])
    assert code != 0 and "parse error" in out


def test_name_scanner() -> None:
    e = ('sum by (a) (rate(x_total{a="b(", c=~"d"}[5m] offset 1h)) / on (a) group_left (c) '
         'y * 1e3 > bool 2 and topk(3, z:rec:sum) unless absent(up{job="j"})')
    assert metric_names(e) == {"x_total", "y", "z:rec:sum", "up"}


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels()}
    groupings = " ".join(exprs.values())
    for by in ("sum by (workload)", "sum by (policy)", "sum by (syscall, action)"):
        assert by in groupings, f"no violations-over-time panel with {by}"
    assert any("topk(" in e for e in exprs.values()), "no top-offenders panel"
    assert any("enforcer_limit_events_total" in e for e in exprs.values()), "no limit events panel"
    health = {"enforcer_monitor_events_lost_total", "enforcer_monitor_events_total", "up"}
    used = set().union(*(metric_names(grafana_to_promql(e)) for e in exprs.values()))
    assert health <= used, f"monitor health panels missing: {health - used}"


def test_metric_names_are_documented_by_the_monitor() -> None:
    if not METRICS_DOC.exists():
        pytest.skip("docs/metrics.md (the monitor's metric contract) is not written yet")
    allowed = documented_metric_names() | recording_rule_names() | {"up"}
    for where, expr in dashboard_exprs():
        unknown = metric_names(grafana_to_promql(expr)) - allowed
        assert not unknown, f"{where}: {sorted(unknown)} not in docs/metrics.md"


def test_alert_rules_use_documented_metric_names() -> None:
    if not METRICS_DOC.exists():
        pytest.skip("docs/metrics.md (the monitor's metric contract) is not written yet")
    allowed = documented_metric_names() | recording_rule_names() | {"up"}
    doc = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "enforcer-alerts.yml").read_text())
    for g in doc["groups"]:
        for r in g["rules"]:
            unknown = metric_names(r["expr"]) - allowed
            assert not unknown, f"{r.get('alert') or r.get('record')}: {sorted(unknown)}"


def test_provisioning_points_at_a_file_provider() -> None:
    doc = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "enforcer-dashboards.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
