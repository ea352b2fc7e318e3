"""Metrics collector, event log rotation, HTTP server (TLS, basic auth), kmsg."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.registry import CollectorRegistry
from prometheus_client import generate_latest

from enforcer.monitor.events import EventLog, iso_time
from enforcer.monitor.metrics import MonitorMetrics
from enforcer.monitor.server import (AuthFileError, BasicAuth, hash_password, load_auth_file,
                                     make_server, parse_listen)
from enforcer.monitor.sources.kmsg import KmsgSource, parse_kmsg_line
from tests.monitor_helpers import http_get, parse_samples, value_for


def filled_metrics() -> MonitorMetrics:
    m = MonitorMetrics(sources=("audit",))
    m.source_info["audit"] = True
    m.count_violation("w1", "web", "ptrace", "errno", 3)
    m.count_violation("w2", "web", "mount", "kill-process")
    m.count_limit_event("w1", "web", "memory", "oom_kill", 2)
    m.set_workloads({"web": 2})
    m.set_facts({"w1": ("web", 3, 1 << 20, 1.5)})
    m.count_event("audit", 4)
    m.count_malformed("audit_record")
    return m


def exposition(m: MonitorMetrics) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(m)
    return generate_latest(registry).decode()


def test_collector_exposes_documented_names() -> None:
    text = exposition(filled_metrics())
    s = parse_samples(text, "enforcer_seccomp_violations_total")
    assert value_for(s, workload="w1", syscall="ptrace", action="errno") == 3
    assert value_for(parse_samples(text, "enforcer_limit_events_total"),
                     workload="w1", resource="memory", event="oom_kill") == 2
    assert value_for(parse_samples(text, "enforcer_workloads"), policy="web") == 2
    assert value_for(parse_samples(text, "enforcer_workload_memory_bytes"), workload="w1") == 1 << 20
    assert value_for(parse_samples(text, "enforcer_workload_cpu_seconds_total"), workload="w1") == 1.5
    assert value_for(parse_samples(text, "enforcer_monitor_malformed_total"), kind="audit_record") == 1
    assert value_for(parse_samples(text, "enforcer_monitor_events_lost_total"), source="audit") == 0
    assert parse_samples(text, "enforcer_build_info")
    docs = Path(__file__).parents[2] / "docs" / "metrics.md"
    documented = docs.read_text()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name in documented, f"{name} is not in docs/metrics.md"


def _sample_set(text: str) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for f in text_string_to_metric_families(text) for s in f.samples)


def test_fast_renderer_matches_prometheus_client() -> None:
    m = filled_metrics()
    m.count_violation('we"ird\\id\nx', "p", "unknown", "log", 2)
    m.set_facts({"w1": ("web", 3, 1 << 20, 1.25)})
    fast = m.render_text().decode()
    assert _sample_set(fast) == _sample_set(exposition(m))
    reference = [l for l in exposition(m).splitlines() if l.startswith("#")]
    assert [l for l in fast.splitlines() if l.startswith("#")] == reference
    assert m.render_text() is m.render_text()  # cached while nothing changes
    m.count_violation("w1", "web", "ptrace", "errno")
    assert value_for(parse_samples(m.render_text().decode(), "enforcer_seccomp_violations_total"),
                     workload="w1", syscall="ptrace") == 4
    m.forget_workload("w1")
    assert 'workload="w1"' not in m.render_text().decode()


@pytest.mark.prometheus
def test_promtool_accepts_the_fast_renderer() -> None:
    m = filled_metrics()
    m.count_violation('we"ird\\id', "p", "unknown", "log", 2)
    r = subprocess.run(["promtool", "check", "metrics"], input=m.render_text(), capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_forget_workload_drops_its_series() -> None:
    m = filled_metrics()
    m.forget_workload("w1")
    text = exposition(m)
    assert 'workload="w1"' not in text and 'workload="w2"' in text


@pytest.mark.prometheus
def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    text = exposition(filled_metrics())
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_event_log_rotation_keeps_n_backups(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    log = EventLog(str(path), max_bytes=200, backups=2)
    for i in range(30):
        log.write({"i": i, "comm": "é"})
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ev.jsonl", "ev.jsonl.1", "ev.jsonl.2"]
    kept = []
    for name in ("ev.jsonl.2", "ev.jsonl.1", "ev.jsonl"):
        data = (tmp_path / name).read_bytes()
        assert len(data) <= 200
        kept += [json.loads(line)["i"] for line in data.decode().splitlines()]
    assert kept == list(range(30 - len(kept), 30))  # newest lines, in order, none split


def test_iso_time() -> None:
    assert iso_time(1700000000.123) == "2023-11-14T22:13:20.123Z"
    assert iso_time(1700000000.9996) == "2023-11-14T22:13:21.000Z"


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9469") == ("127.0.0.1", 9469)
    assert parse_listen(":80") == ("127.0.0.1", 80)
    assert parse_listen("[::1]:9") == ("::1", 9)
    for bad in ("nope", "1.2.3.4:x", "a:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_auth_file_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "auth"
    f.write_text("# comment\nalice:" + hash_password("pw", iterations=1000) + "\nbob:plain\n")
    with pytest.raises(AuthFileError, match=r"auth:3: expected"):
        load_auth_file(str(f))
    f.write_text("")
    with pytest.raises(AuthFileError, match="no users"):
        load_auth_file(str(f))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(filled_metrics())
    auth_file = tmp_path / "auth"
    auth_file.write_text("alice:" + hash_password("s3cret", iterations=1000) + "\n")
    server = make_server("127.0.0.1", 0, registry, lambda: (True, "ok"), tls_cert=str(cert),
                         tls_key=str(key), auth=BasicAuth(load_auth_file(str(auth_file))))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", context
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str, context: ssl.SSLContext, user: str | None = None,
         password: str | None = None) -> tuple[int, bytes]:
    return http_get(url, context, None if user is None else (user, password or ""))


def test_tls_and_basic_auth(served: tuple[str, ssl.SSLContext]) -> None:
    url, context = served
    assert _get(url + "/metrics", context)[0] == 401
    assert _get(url + "/metrics", context, "alice", "wrong")[0] == 401
    assert _get(url + "/metrics", context, "mallory", "s3cret")[0] == 401
    status, body = _get(url + "/metrics", context, "alice", "s3cret")
    assert status == 200 and b"enforcer_seccomp_violations_total" in body
    assert _get(url + "/healthz", context, "alice", "s3cret") == (200, b"ok\n")
    assert _get(url + "/other", context, "alice", "s3cret")[0] == 404
    with pytest.raises(OSError):  # plain HTTP is not served
        urllib.request.urlopen(url.replace("https", "http") + "/metrics", timeout=5)


def test_kmsg_lines(tmp_path: Path) -> None:
    assert parse_kmsg_line(b"6,12,345,-;hello") == (12, b"hello")
    assert parse_kmsg_line(b"garbage") is None
    lines = [
        b"5,100,1,-;audit: type=1326 audit(1.5:7): auid=1 uid=0 ses=1 pid=5 comm=\"a\" exe=\"/a\" "
        b"sig=0 arch=c000003e syscall=110 compat=0 ip=0x1 code=0x50000",
        b"4,101,2,-;kauditd_printk_skb: 17 callbacks suppressed",
        b" SUBSYSTEM=x",
        b"5,105,3,-;audit: type=1326 audit(1.6:9): pid=6 arch=c000003e syscall=110 code=0x80000000",
        b"not a kmsg line",
        b"5,106,3,-;audit: audit_lost=3 audit_rate_limit=0 audit_backlog_limit=64",
        b"5,107,3,-;audit: audit_lost=5 audit_rate_limit=0 audit_backlog_limit=64",
    ]
    f = tmp_path / "kmsg"
    f.write_bytes(b"\n".join(lines) + b"\n")
    source = KmsgSource(str(f), from_start=True)
    source.open()
    got: list[bytes] = []
    lost: list[int] = []
    bad: list[str] = []
    source.drain(got.append, lost.append, bad.append)
    source.close()
    assert [g[:16] for g in got] == [b"audit(1.5:7): au", b"audit(1.6:9): pi"]
    assert lost == [17, 3, 2]  # suppressed, seq gap 102..104, audit_lost 3 -> 5
    assert bad == ["kmsg_line"]


def test_hash_password_cli_makes_a_loadable_line(tmp_path: Path) -> None:
    import sys

    r = subprocess.run([sys.executable, "-m", "enforcer", "monitor", "--hash-password", "alice"],
                       input="pw\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    f = tmp_path / "auth"
    f.write_text(r.stdout)
    auth = BasicAuth(load_auth_file(str(f)))
    assert auth.check("Basic " + base64.b64encode(b"alice:pw").decode())
    assert not auth.check("Basic " + base64.b64encode(b"alice:pW").decode())
    bad = subprocess.run([sys.executable, "-m", "enforcer", "monitor", "--listen", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "HOST:PORT" in bad.stderr
