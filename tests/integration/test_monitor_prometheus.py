"""A real Prometheus scrapes the real monitor; promtool checks /metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.monitor_helpers import (MonitorProcess, Violator, free_port, gen_binary,  # noqa: F401
                                   monitors, needs_root, violators, wait_for, write_workload,
                                   x86_64_only)

pytestmark = [pytest.mark.root, pytest.mark.prometheus, needs_root, x86_64_only,
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs prometheus")]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus on 127.0.0.1 with temp config and storage; the test
    writes the scrape target into the config and reloads it."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        assert wait_for(ready, timeout=30, interval=0.2), (tmp_path / "prometheus.log").read_text()
        yield url, config
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url: str, expr: str) -> list[dict]:  # type: ignore[type-arg]
    with urllib.request.urlopen(url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}),
                                timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_exactly_n_violations(tmp_path: Path, gen_binary: str,
                                                 monitors: list[MonitorProcess],
                                                 violators: list[Violator],
                                                 prometheus: tuple[str, Path]) -> None:
    prom_url, config = prometheus
    rt = str(tmp_path / "rt")
    m = MonitorProcess(rt, str(tmp_path / "ev.jsonl"))
    monitors.append(m)
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: enforcer\n    static_configs: [{{targets: ['127.0.0.1:{m.port}']}}]\n")
    urllib.request.urlopen(urllib.request.Request(prom_url + "/-/reload", method="POST"), timeout=10)
    assert wait_for(lambda: query(prom_url, 'up{job="enforcer"} == 1'), timeout=20, interval=0.5)

    n = 1234
    v = Violator(gen_binary, "loop", n)
    violators.append(v)
    write_workload(rt, "prom-w", pid=v.pid, policy="restricted")
    assert v.go() == 0

    expr = 'sum(enforcer_seccomp_violations_total{workload="prom-w",policy="restricted"})'
    result = wait_for(lambda: [r for r in query(prom_url, expr) if float(r["value"][1]) == n],
                      timeout=20, interval=0.5)
    assert result, query(prom_url, expr)
    series = query(prom_url, 'enforcer_seccomp_violations_total{workload="prom-w"}')
    assert [(s["metric"]["syscall"], s["metric"]["action"], s["value"][1]) for s in series] == [
        ("getppid", "errno", str(n))]

    # promtool accepts the live exposition.
    text = m.metrics_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
