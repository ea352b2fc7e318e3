"""Helpers for the deploy/ tests: paths, tool runners, a PromQL name scanner,
and fixtures-in-waiting for a real monitor and a real Prometheus on 127.0.0.1.

Everything started here is stopped and every temp dir removed by the caller's
fixture finalizer (see the context managers below).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests import session

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
PROM = DEPLOY / "prometheus"
RULES = PROM / "rules" / "enforcer-alerts.yml"
RULE_TESTS = PROM / "tests" / "enforcer-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "enforcer-dashboard.json"
SYSTEMD = DEPLOY / "systemd"
METRICS_DOC = REPO / "docs" / "metrics.md"
VENV_BIN = Path(sys.executable).parent


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed")
    return path


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, **kw)


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def shipped_policy_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "policies").glob("*.yaml"))


# --------------------------------------------------------------------------- PromQL names

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "and", "or", "unless", "offset", "inf", "nan", "atan2"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)")

# Values for Grafana's variables, so an expression becomes plain PromQL.
GRAFANA_VARS = {
    "$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h",
    "${__range}": "1h", "$instance": ".*", "$workload": ".*", "$policy": ".*",
}


def grafana_to_promql(expr: str) -> str:
    for var in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(var, GRAFANA_VARS[var])
    if "$" in expr:
        raise AssertionError(f"unknown Grafana variable left in {expr!r}")
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects.

    A small scanner, not a parser (promtool parses the expressions in the
    tests): strings, label matchers, ranges and grouping lists are removed,
    then every identifier that is not a function, an aggregation or a
    keyword is a metric name.
    """
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    prev = None
    while prev != s:
        prev, s = s, _GROUPING.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group(1)
        rest = s[m.end():].lstrip()
        if word in _KEYWORDS or rest.startswith("("):
            continue
        names.add(word)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every query in the dashboard, variables included."""
    dash = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip(), re.S)
            assert m, f"variable {v['name']}: not a label_values(selector, label) query: {q}"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def recording_rule_names() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def documented_metric_names() -> set[str]:
    """enforcer_* names written in docs/metrics.md (the monitor's contract)."""
    return set(re.findall(r"\benforcer_[a-z0-9_]+[a-z0-9]\b", METRICS_DOC.read_text()))


def exposition_names(text: str) -> set[str]:
    """Metric names in a Prometheus text exposition: samples and # TYPE lines
    (a labelled metric without children has no samples yet)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            names.add(name)
            if kind.strip() == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
        elif line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))  # type: ignore[union-attr]
    return names


# --------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (OSError, ValueError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Stop one process we started: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def temp_dir(prefix: str, parent: str | None = None) -> Iterator[Path]:
    d = Path(session.mkdtemp(prefix, dir=parent))
    try:
        yield d
    finally:
        session.remove_tree(str(d))


@contextlib.contextmanager
def own_cgroup(name: str) -> Iterator[tuple[str, str, Path]]:
    """A fresh cgroup for one test process, removed afterwards.

    Yields (key, path, cgroup.procs file): key and path as /proc/PID/cgroup
    shows them (v1 "pids", or "" for a v2-only host). A workload needs a
    cgroup of its own: a registry record naming a shared cgroup would claim
    every other process in it.
    """
    v1 = Path("/sys/fs/cgroup/pids")
    base, key = (v1, "pids") if (v1 / "cgroup.procs").exists() else (Path("/sys/fs/cgroup"), "")
    directory = base / f"{name}-{session.TAG}"
    directory.mkdir()
    try:
        yield key, "/" + directory.name, directory / "cgroup.procs"
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def monitor_available() -> bool:
    return (REPO / "enforcer" / "commands" / "monitor.py").exists()


@contextlib.contextmanager
def running_monitor(runtime_dir: Path, log_dir: Path) -> Iterator[str]:
    """The real `enforcer monitor` on 127.0.0.1:<free port>; yields its base URL."""
    port = free_port()
    # Multicast: only a test holding the host's audit lock may let the
    # monitor become the kernel's audit daemon.
    cmd = [str(VENV_BIN / "enforcer"), "monitor", f"--listen=127.0.0.1:{port}",
           f"--runtime-dir={runtime_dir}", f"--events={log_dir / 'events.jsonl'}",
           "--audit-mode=multicast"]
    env = dict(os.environ, ENFORCER_RUNTIME_DIR=str(runtime_dir))
    out = open(log_dir / "monitor.out", "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"monitor exited {proc.returncode}: "
                                     f"{(log_dir / 'monitor.out').read_text()[-2000:]}")
            return http_get(base + "/healthz", 1)[0] == 200
        wait_for(healthy, 20, "the monitor's /healthz")
        yield base
    finally:
        stop(proc)
        out.close()


@contextlib.contextmanager
def running_prometheus(config: Path, data_dir: Path) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1:<free port> with `config`; yields its base URL."""
    binary = need("prometheus")
    port = free_port()
    cmd = [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
           "--web.enable-lifecycle"]
    out = open(data_dir / "prometheus.out", "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited {proc.returncode}: "
                                     f"{(data_dir / 'prometheus.out').read_text()[-2000:]}")
            return http_get(base + "/-/ready", 1)[0] == 200
        wait_for(ready, 30, "Prometheus /-/ready")
        yield base
    finally:
        stop(proc)
        out.close()


def prom_api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    status, body = http_get(url)
    doc = json.loads(body)
    if status != 200 or doc.get("status") != "success":
        raise AssertionError(f"{url}: HTTP {status}: {body[:500]}")
    return doc["data"]


# -- systemd units ---------------------------------------------------------------------

SYSTEM_UNITS = Path("/lib/systemd/system")


def unit_settings(path: Path) -> dict[str, list[str]]:
    """KEY -> values, in order, from a unit file (comments and section headers skipped)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def systemd_root(root: Path, units: dict[str, str], exec_start: str) -> None:
    """An alternate root for `systemd-analyze --root`: `units` (relative path
    under /etc/systemd/system -> text) where an operator installs them, a
    stub for the ExecStart binary (this machine need not have it) and the
    distribution's targets that the default dependencies pull in."""
    etc = root / "etc" / "systemd" / "system"
    for name, text in units.items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(text)
    stub = root / shlex.split(exec_start)[0].lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    lib = root / "usr" / "lib" / "systemd" / "system"
    lib.mkdir(parents=True)
    for target in SYSTEM_UNITS.glob("*.target"):
        shutil.copy(target, lib / target.name, follow_symlinks=True)
