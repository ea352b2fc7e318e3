"""deploy/prometheus: promtool accepts the config and rules, the rule unit
tests pass, every alert has a firing and a silent case, and the unit tests
bite (a broken rule makes them fail)."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import PROM, RULE_TESTS, RULES, need, run, temp_dir  # noqa: E402

pytestmark = pytest.mark.prometheus


def alert_names() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_config() -> None:
    r = run([need("promtool"), "check", "config", str(PROM / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "1 rule files found" in r.stdout


def test_promtool_check_rules() -> None:
    r = run([need("promtool"), "check", "rules", str(RULES)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 11 rules found" in r.stdout


def test_promtool_test_rules() -> None:
    r = run([need("promtool"), "test", "rules", str(RULE_TESTS)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_the_required_alerts_exist() -> None:
    assert set(alert_names()) == {
        "EnforcerSeccompViolationBurst", "EnforcerAuditModeWouldBlock", "EnforcerSeccompKill",
        "EnforcerRepeatedOOMKills",
        "EnforcerPidsLimitHit", "EnforcerMonitorLosingEvents", "EnforcerMonitorLossySource",
        "EnforcerMonitorDown", "EnforcerMonitorAbsent"}


@pytest.mark.parametrize("alert", alert_names())
def test_every_alert_has_a_firing_and_a_silent_case(alert: str) -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    cases = [c for t in doc["tests"] for c in t.get("alert_rule_test", []) if c["alertname"] == alert]
    assert any(c.get("exp_alerts") for c in cases), f"{alert}: no case where it fires"
    assert any(not c.get("exp_alerts") for c in cases), f"{alert}: no case where it stays silent"


def test_every_alert_has_severity_and_annotations() -> None:
    doc = yaml.safe_load(RULES.read_text())
    for g in doc["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                assert r["labels"]["severity"] in ("info", "warning", "critical"), r["alert"]
                assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


# Each mutation breaks one rule the way a careless edit would; the unit tests
# must notice. The first of each pair shows a firing case bites, the rest that
# a silent case does.
MUTATIONS = [
    ("burst never fires", ") > 100", ") > 1e9"),
    ("burst threshold too low", ") > 100", ") > 10"),
    ("burst counts log actions (recordings, audit mode)", '{action!~"log|allow"}', ""),
    ("would-block counts an old monitor's recording", ', policy!~".+[.]record"', ""),
    ("would-block never fires", 'policy!~".+[.]record"}\n          ) > 100',
     'policy!~".+[.]record"}\n          ) > 1e9'),
    ("kill matches every action", 'action=~"kill.*"', 'action=~".*"'),
    ("kill never fires", 'increase5m{action=~"kill.*"}', 'increase5m{action="none"}'),
    ("OOM fires on two", ") >= 3", ") >= 2"),
    ("OOM never fires", ") >= 3", ") >= 300"),
    ("pids counts memory max", 'resource="pids", event="max"', 'event="max"'),
    ("pids never fires", 'resource="pids", event="max"', 'resource="pids", event="none"'),
    ("lost counts old totals", "increase(enforcer_monitor_events_lost_total[10m])",
     "enforcer_monitor_events_lost_total"),
    ("lost ignores the serial-gap estimate",
     "increase(enforcer_monitor_events_lost_estimated_total[10m])",
     "increase(enforcer_monitor_events_lost_total[10m])"),
    ("lossy source fires for audit too", 'enforcer_monitor_source{complete="false"}',
     "enforcer_monitor_source"),
    ("lossy source never fires", 'enforcer_monitor_source{complete="false"} == 1',
     'enforcer_monitor_source{complete="false"} == 2'),
    ("down fires on a blip", "for: 5m", "for: 0m"),
    ("down never fires", 'up{job="enforcer-monitor"} == 0', 'up{job="enforcer-monitor"} == 2'),
    ("absent fires with targets", 'absent(up{job="enforcer-monitor"})', 'absent(up{job="nothing"})'),
    ("absent never fires", 'absent(up{job="enforcer-monitor"})', 'absent(up)'),
    # The recording rules' handling of series born with a burst:
    ("new series not counted",
     "(enforcer_seccomp_violations_total unless enforcer_seccomp_violations_total offset 5m)",
     "(enforcer_seccomp_violations_total unless enforcer_seccomp_violations_total)"),
    ("new series counted after a Prometheus restart",
     "and on (job, instance)\n                  (up offset 5m == 1)",
     "and on (job, instance)\n                  (up == 1)"),
]


@pytest.mark.parametrize("name,old,new", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_rule_tests_catch_a_broken_rule(name: str, old: str, new: str) -> None:
    promtool = need("promtool")
    text = RULES.read_text()
    assert text.count(old) >= 1, f"mutation {name!r}: {old!r} not in the rules"
    with temp_dir("deploy-promtool-") as d:
        (d / "rules").mkdir()
        (d / "tests").mkdir()
        (d / "rules" / RULES.name).write_text(text.replace(old, new, 1))
        shutil.copy(RULE_TESTS, d / "tests" / RULE_TESTS.name)
        assert run([promtool, "check", "rules", str(d / "rules" / RULES.name)]).returncode == 0
        r = run([promtool, "test", "rules", str(d / "tests" / RULE_TESTS.name)])
    assert r.returncode != 0, f"mutation {name!r} went unnoticed:\n{r.stdout}{r.stderr}"
    assert "FAILED" in r.stdout + r.stderr, r.stdout + r.stderr


def test_promtool_check_federation_config() -> None:
    r = run([need("promtool"), "check", "config", str(PROM / "federation.yml")])
    assert r.returncode == 0, r.stdout + r.stderr


def docs_yaml_blocks() -> dict[str, object]:
    """The ```yaml blocks of docs/deploy.md, keyed by their top-level key."""
    text = (PROM.parent.parent / "docs" / "deploy.md").read_text()
    blocks: dict[str, object] = {}
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        doc = yaml.safe_load(textwrap.dedent(block))
        (key,) = doc
        blocks[key] = doc[key]
    return blocks


def test_the_config_snippets_in_the_guide_are_valid() -> None:
    blocks = docs_yaml_blocks()
    assert {"remote_write", "metric_relabel_configs"} <= set(blocks)
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["rule_files"] = []
    config["remote_write"] = blocks["remote_write"]
    config["scrape_configs"][0]["metric_relabel_configs"] = blocks["metric_relabel_configs"]
    with temp_dir("deploy-docs-") as d:
        (d / "prometheus.yml").write_text(yaml.safe_dump(config))
        r = run([need("promtool"), "check", "config", str(d / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
