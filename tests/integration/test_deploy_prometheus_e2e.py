"""The shipped monitoring stack, for real: the real `enforcer monitor` and a
real Prometheus on 127.0.0.1, with deploy/prometheus/prometheus.yml (only
the target, the intervals and the rules path templated) and the shipped
alert rules. A child process under a seccomp filter (errno + log, so every
denial reaches the audit stream) registered as a workload makes denied
calls; Prometheus's API must then show the burst alert firing for that
workload. The same live setup checks that every Grafana expression
evaluates and uses only metric names the live /metrics exports.

Timing: the test config scrapes and evaluates every second. The burst alert
needs no `for:` (its 5m increase() is the debounce), so no rule is
overridden. The child makes one denied call first and the test waits for
Prometheus to have the series, then the burst follows: increase() needs a
sample from before the burst, exactly as in production right after
Prometheus starts (the recording rule's born-with-a-burst branch only
applies once Prometheus has 5 minutes of history; the promtool tests cover it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import (  # noqa: E402
    PROM, RULES, dashboard_exprs, exposition_names, grafana_to_promql, http_get, metric_names,
    monitor_available, need, own_cgroup, prom_api, recording_rule_names, run, running_monitor,
    running_prometheus, stop, temp_dir, wait_for,
)

from enforcer.registry import WorkloadRecord, remove_record, write_record  # noqa: E402

pytestmark = [pytest.mark.prometheus, pytest.mark.root, pytest.mark.slow]

BURST = 500
GETCWD_X86_64 = 79

# The workload: reads "go", installs a filter that denies getcwd with EPERM and
# logs it (SECCOMP_FILTER_FLAG_LOG), makes one denied call, says "ready";
# reads "burst", makes BURST more, says "done"; exits on EOF.
CHILD = textwrap.dedent(f"""
    import ctypes, errno, sys
    import pyseccomp as sc
    libc = ctypes.CDLL(None, use_errno=True)
    def denied(n):
        got = 0
        for _ in range(n):
            if libc.syscall({GETCWD_X86_64}, 0, 0) == -1 and ctypes.get_errno() == errno.EPERM:
                got += 1
        return got
    assert sys.stdin.readline().strip() == "go"
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.CTL_LOG, 1)
    f.add_rule(sc.ERRNO(errno.EPERM), "getcwd")
    f.load()
    print("ready", denied(1), flush=True)
    assert sys.stdin.readline().strip() == "burst"
    print("done", denied({BURST}), flush=True)
    sys.stdin.read()
""")


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    if not monitor_available():
        pytest.skip("`enforcer monitor` is not in this build yet")
    if os.uname().machine != "x86_64":
        pytest.skip("the child uses the x86_64 getcwd number")
    need("prometheus")
    with temp_dir("deploy-e2e-") as d:
        runtime, logs, promdir = d / "run", d / "log", d / "prom"
        for p in (runtime, logs, promdir):
            p.mkdir()
        with running_monitor(runtime, logs) as monitor:
            config = yaml.safe_load((PROM / "prometheus.yml").read_text())
            config["global"]["scrape_interval"] = "1s"
            config["global"]["evaluation_interval"] = "1s"
            config["rule_files"] = [str(RULES)]
            (job,) = config["scrape_configs"]
            job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
            job["static_configs"] = [{"targets": [monitor.removeprefix("http://")]}]
            cfg = promdir / "prometheus.yml"
            cfg.write_text(yaml.safe_dump(config))
            r = run([need("promtool"), "check", "config", str(cfg)])
            assert r.returncode == 0, r.stdout + r.stderr
            with running_prometheus(cfg, promdir) as prom:
                yield {"monitor": monitor, "prom": prom, "runtime": runtime, "logs": logs}


def series_value(prom: str, expr: str) -> float | None:
    result = prom_api(prom, "query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else None


def test_burst_alert_fires_through_prometheus(stack: dict[str, Any]) -> None:
    prom, runtime = stack["prom"], stack["runtime"]
    wait_for(lambda: series_value(prom, 'up{job="enforcer-monitor"}') == 1.0, 30,
             "Prometheus to scrape the monitor")
    with own_cgroup(f"deploy-e2e-{os.getpid()}") as (key, path, procs):
        _violate_and_watch(prom, runtime, key, path, procs)


def _violate_and_watch(prom: str, runtime: Path, key: str, path: str, procs: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workload = f"deploy-e2e-{child.pid}"
    try:
        # The child waits for "go": it is in its own cgroup before its first call.
        procs.write_text(str(child.pid))
        write_record(WorkloadRecord(id=workload, kind="run", policy="deploy-e2e",
                                    policy_hash="0" * 64, mode="enforce", cgroups={key: path},
                                    pid=child.pid), str(runtime))
        assert child.stdin and child.stdout
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["ready", "1"]
        selector = f'enforcer_seccomp_violations_total{{workload="{workload}"}}'
        wait_for(lambda: series_value(prom, f"sum({selector})") == 1.0, 30,
                 "Prometheus to see the first violation")
        # Nothing fires for one violation.
        alerts = prom_api(prom, "alerts")["alerts"]
        assert not [a for a in alerts if a["labels"].get("workload") == workload]

        child.stdin.write("burst\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["done", str(BURST)]

        def burst_alert() -> dict[str, Any] | None:
            for a in prom_api(prom, "alerts")["alerts"]:
                if a["labels"].get("alertname") == "EnforcerSeccompViolationBurst" \
                        and a["labels"].get("workload") == workload:
                    return a if a["state"] in ("pending", "firing") else None
            return None

        alert = wait_for(burst_alert, 60, "the burst alert")
        assert alert["labels"]["policy"] == "deploy-e2e"
        assert alert["labels"]["severity"] == "warning"
        # Every violation was counted, and no kill alert for errno denials.
        assert series_value(prom, f"sum({selector})") == 1.0 + BURST
        kills = [a for a in prom_api(prom, "alerts")["alerts"]
                 if a["labels"]["alertname"] == "EnforcerSeccompKill"]
        assert not kills
        # The rules loaded are the shipped ones, all healthy.
        groups = prom_api(prom, "rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 11 and all(r["health"] == "ok" for r in rules), rules
    finally:
        stop(child)
        remove_record(workload, str(runtime))


KILLED = textwrap.dedent(f"""
    import ctypes, pyseccomp as sc
    f = sc.SyscallFilter(sc.ALLOW)
    f.add_rule(sc.KILL_PROCESS, "getcwd")
    f.load()
    ctypes.CDLL(None).syscall({GETCWD_X86_64}, 0, 0)
""")


def test_kill_alert_fires_through_prometheus(stack: dict[str, Any]) -> None:
    """A workload's main process (registered with its pid, like the shim's
    container init) starts two children that their filter kills, the second
    after Prometheus has seen the first: EnforcerSeccompKill fires."""
    prom, runtime, monitor = stack["prom"], stack["runtime"], stack["monitor"]
    workload = f"deploy-e2e-kill-{os.getpid()}"
    with own_cgroup(workload) as (key, path, procs):
        # The main process puts itself in the workload's cgroup and waits to
        # be registered (SIGSTOP); then it runs one doomed child per line read.
        main = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$PROCS"; kill -STOP $$; '
                         'while read -r _; do "$PY" -c "$KILLED"; echo "rc $?"; done'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, PROCS=str(procs), PY=sys.executable, KILLED=KILLED))
        try:
            wait_for(lambda: open(f"/proc/{main.pid}/stat").read().split()[2] == "T", 10,
                     "the workload's main process to stop in its cgroup")
            write_record(WorkloadRecord(id=workload, kind="run", policy="deploy-e2e-kill",
                                        policy_hash="0" * 64, mode="enforce",
                                        cgroups={key: path}, pid=main.pid), str(runtime))
            wait_for(lambda: f'workload="{workload}"' in http_get(monitor + "/metrics")[1], 15,
                     "the monitor to know the workload")
            os.kill(main.pid, signal.SIGCONT)
            assert main.stdin and main.stdout
            selector = f'enforcer_seccomp_violations_total{{workload="{workload}", action="kill-process"}}'
            for n in (1, 2):
                main.stdin.write("go\n")
                main.stdin.flush()
                assert main.stdout.readline().split() == ["rc", str(128 + signal.SIGSYS)]
                wait_for(lambda: series_value(prom, f"sum({selector})") == float(n), 30,
                         f"Prometheus to see kill number {n}")

            def kill_alert() -> dict[str, Any] | None:
                for a in prom_api(prom, "alerts")["alerts"]:
                    if a["labels"].get("alertname") == "EnforcerSeccompKill" \
                            and a["labels"].get("workload") == workload:
                        return a if a["state"] == "firing" else None
                return None

            alert = wait_for(kill_alert, 60, "the kill alert")
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["policy"] == "deploy-e2e-kill"
        finally:
            if main.poll() is None:
                os.kill(main.pid, signal.SIGCONT)
            stop(main)
            remove_record(workload, str(runtime))


def test_dashboard_queries_work_against_live_metrics(stack: dict[str, Any]) -> None:
    prom, monitor = stack["prom"], stack["monitor"]
    status, text = http_get(monitor + "/metrics")
    assert status == 200
    r = run([need("promtool"), "check", "metrics"], input=text)
    assert r.returncode == 0, r.stdout + r.stderr
    exported = exposition_names(text) | recording_rule_names() | {"up"}
    for where, expr in dashboard_exprs():
        promql = grafana_to_promql(expr)
        unknown = metric_names(promql) - exported
        assert not unknown, f"{where}: {sorted(unknown)} not exported by the live monitor"
        prom_api(prom, "query", query=promql)  # raises unless Prometheus accepts it
    assert json.dumps(sorted(exported))  # the exposition was not empty
    assert any(n.startswith("enforcer_") for n in exported)
