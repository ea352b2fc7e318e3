"""Hole 15 (the monitor's part): what the monitor exposes on a node.

The attacker is anyone on the node's network (the DaemonSet serves the node
IP: a NetworkPolicy does not cover host-network pods), and any local user
without privileges. They must get nothing: no metrics over plain HTTP, none
without credentials, no event log to read; the monitor pod itself must not
see the shim server's socket directory.

Each test runs the shipped configuration for real: the DaemonSet's own
arguments and volumes (paths moved under a scratch root, secrets made the
way docs/deploy.md says), a real Prometheus configured from the shipped
ServiceMonitor, the real monitor writing its real event log.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from enforcer.shim import server as shim_server
from tests import session
from tests.deploy_helpers import (K8S, need, prom_api, running_prometheus, stop, wait_for,
                                  yaml_docs)
from tests.monitor_helpers import (PYTHON, Violator, audit_host,  # noqa: F401
                                   count_event_lines, free_port, gen_binary, http_get, needs_root,
                                   violators, write_workload, x86_64_only)

SERVER_NAME = "enforcer-monitor.enforcer-system.svc"
PASSWORD = "correct horse battery staple"


def daemonset() -> dict[str, Any]:
    (ds,) = [d for d in yaml_docs(K8S / "monitor.yaml") if d["kind"] == "DaemonSet"]
    return ds


def monitor_container() -> dict[str, Any]:
    (c,) = daemonset()["spec"]["template"]["spec"]["containers"]
    return c


def servicemonitor_endpoint() -> dict[str, Any]:
    (sm,) = [d for d in yaml_docs(K8S / "servicemonitor.yaml") if d["kind"] == "ServiceMonitor"]
    (endpoint,) = sm["spec"]["endpoints"]
    return endpoint


def make_secrets(directory: Path) -> dict[str, dict[str, bytes]]:
    """The Secrets docs/deploy.md tells the administrator to create:
    secret name -> key -> content."""
    need("openssl")
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", f"/CN={SERVER_NAME}", "-addext", f"subjectAltName=DNS:{SERVER_NAME}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    line = subprocess.run([PYTHON, "-m", "enforcer", "monitor", "--hash-password", "prometheus"],
                          input=PASSWORD + "\n", capture_output=True, text=True, check=True).stdout
    return {
        # Mounted into the monitor pods.
        "enforcer-monitor-tls": {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()},
        "enforcer-monitor-auth": {"auth": line.encode()},
        # Read by Prometheus (the ServiceMonitor names it).
        "enforcer-monitor-scrape": {"ca.crt": cert.read_bytes(), "username": b"prometheus",
                                    "password": PASSWORD.encode()},
    }


class ShippedMonitor:
    """The monitor with exactly the DaemonSet's arguments and volumes, under
    a scratch root: each volume's mountPath is a directory there (a secret
    volume holds the secret's keys), and every path argument is moved under
    it. The node's IP is 127.0.0.1 and the port a free one."""

    def __init__(self, root: Path, secrets: dict[str, dict[str, bytes]]) -> None:
        self.root = root
        pod = daemonset()["spec"]["template"]["spec"]
        container = monitor_container()
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container["volumeMounts"]:
            if mount["mountPath"] == "/sys/fs/cgroup":
                continue  # the host's own, read-only
            local = self.local(mount["mountPath"])
            local.mkdir(parents=True, exist_ok=True)
            secret = volumes[mount["name"]].get("secret")
            if secret is not None:
                for name, data in secrets[secret["secretName"]].items():
                    (local / name).write_bytes(data)
                    (local / name).chmod(0o400)
        self.port = free_port()
        args = []
        for arg in container["args"]:
            flag, _, value = arg.partition("=")
            value = value.replace("$(NODE_IP):9469", f"127.0.0.1:{self.port}")
            if value.startswith("/") and not value.startswith("/sys/fs/cgroup"):
                value = str(self.local(value))
            args.append(f"{flag}={value}")
        self.args = args
        self.out = open(root / "monitor.out", "wb")
        assert container["command"] == ["enforcer", "monitor"]
        self.proc = subprocess.Popen([PYTHON, "-m", "enforcer", "monitor", *args],
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def output(self) -> str:
        return (self.root / "monitor.out").read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc)
        self.out.close()


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[tuple[ShippedMonitor, dict[str, dict[str, bytes]]]]:
    secrets = make_secrets(tmp_path)
    monitor = ShippedMonitor(tmp_path / "node", secrets)
    try:
        yield monitor, secrets
    finally:
        monitor.stop()


@pytest.mark.root
@needs_root
def test_the_node_network_gets_no_metrics_without_tls_and_credentials(
        shipped: tuple[ShippedMonitor, dict[str, dict[str, bytes]]], tmp_path: Path) -> None:
    monitor, secrets = shipped
    ca = tmp_path / "ca.crt"
    ca.write_bytes(secrets["enforcer-monitor-scrape"]["ca.crt"])
    context = ssl.create_default_context(cafile=str(ca))
    https = f"https://{SERVER_NAME}:{monitor.port}"

    def listening() -> bool:
        if monitor.proc.poll() is not None:
            raise AssertionError(f"the monitor exited {monitor.proc.returncode}: {monitor.output()}")
        try:
            socket.create_connection(("127.0.0.1", monitor.port), 1).close()
            return True
        except OSError:
            return False
    wait_for(listening, 30, "the shipped monitor to listen")

    # The attacker on the node network: plain HTTP yields nothing.
    try:
        status, body = http_get(f"http://127.0.0.1:{monitor.port}/metrics")
    except OSError:
        status, body = 0, b""
    assert b"enforcer_" not in body, f"metrics served over plain HTTP (status {status})"
    # TLS without credentials, or with wrong ones: 401 and nothing else.
    for credentials in (None, ("prometheus", "guess"), ("admin", PASSWORD)):
        status, body = get_over(https + "/metrics", context, credentials)
        assert status == 401 and b"enforcer_" not in body, credentials
    # The same request with the documented credentials works: the refusals
    # above are the monitor's doing, not a broken setup.
    status, body = get_over(https + "/metrics", context, ("prometheus", PASSWORD))
    assert status == 200 and b"enforcer_monitor_events_total" in body


def get_over(url: str, context: ssl.SSLContext,
             credentials: tuple[str, str] | None = None) -> tuple[int, bytes]:
    """GET `url` (whose host is SERVER_NAME) on 127.0.0.1, verifying the
    certificate against SERVER_NAME, as Prometheus does with serverName."""
    host_port, _, rest = url.removeprefix("https://").partition("/")
    host, _, port = host_port.partition(":")
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), 5),
                                    server_hostname=host)
    headers = {}
    if credentials is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    try:
        conn.request("GET", "/" + rest, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.root
@pytest.mark.prometheus
@pytest.mark.slow
@needs_root
def test_prometheus_configured_from_the_servicemonitor_scrapes_it(
        shipped: tuple[ShippedMonitor, dict[str, dict[str, bytes]]], tmp_path: Path) -> None:
    """The shipped ServiceMonitor matches the shipped DaemonSet: a real
    Prometheus given its endpoint settings scrapes the TLS + auth monitor."""
    monitor, secrets = shipped
    need("prometheus")
    endpoint = servicemonitor_endpoint()

    def secret_file(ref: dict[str, Any]) -> str:
        """A key of a Secret the ServiceMonitor names, as a file for Prometheus."""
        path = tmp_path / "prom-secrets" / ref["name"] / ref["key"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets[ref["name"]][ref["key"]])
        return str(path)

    job: dict[str, Any] = {"job_name": "enforcer-monitor", "scrape_interval": "1s",
                           "scrape_timeout": "1s", "metrics_path": endpoint["path"],
                           "scheme": endpoint.get("scheme", "http"),
                           "static_configs": [{"targets": [f"127.0.0.1:{monitor.port}"]}]}
    tls = endpoint.get("tlsConfig")
    if tls is not None:
        job["tls_config"] = {"ca_file": secret_file(tls["ca"]["secret"]),
                             "server_name": tls["serverName"]}
    auth = endpoint.get("basicAuth")
    if auth is not None:
        job["basic_auth"] = {"username": open(secret_file(auth["username"])).read(),
                             "password_file": secret_file(auth["password"])}
    promdir = tmp_path / "prom"
    promdir.mkdir()
    config = promdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}))
    with running_prometheus(config, promdir) as prom:
        def scraped() -> bool:
            targets = prom_api(prom, "targets")["activeTargets"]
            return any(t["health"] == "up" for t in targets)
        wait_for(scraped, 60, "Prometheus to scrape the monitor with the ServiceMonitor's settings")
    assert job["scheme"] == "https" and tls is not None and auth is not None


def test_the_monitor_pod_mounts_only_the_registry_read_only() -> None:
    """A compromised monitor pod (uid 0) must not reach the shim server's
    socket or anything else under /run/enforcer: only the registry of
    workloads, read-only."""
    pod = daemonset()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    host_paths = {m["mountPath"]: (volumes[m["name"]].get("hostPath", {}).get("path"), m)
                  for m in monitor_container()["volumeMounts"]}
    shim_socket_dir = os.path.dirname(shim_server.DEFAULT_SOCKET)
    for mount_path, (host_path, mount) in host_paths.items():
        if host_path is None:
            continue
        for secret_place in (shim_socket_dir, "/run/enforcer"):
            covers = secret_place == host_path or secret_place.startswith(host_path.rstrip("/") + "/")
            assert not covers, f"{mount_path} mounts {host_path}, which holds {secret_place}"
        if host_path.startswith("/run/enforcer"):
            assert host_path == "/run/enforcer/workloads" and mount.get("readOnly") is True, mount


@pytest.mark.root
@needs_root
@x86_64_only
def test_a_local_user_cannot_read_the_event_log(
        audit_host: dict[str, object],
        gen_binary: str,
        violators: list[Violator]) -> None:
    """The event log names workloads, executables and what they tried. A
    local user must not read it: not the live file, not a rotated one, not
    one an older version left world-readable."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv")
    # Not under pytest's 0700 temp dir: a log directory is normally
    # traversable (/var/log is 0755), so only the monitor's modes protect it.
    base = Path(session.mkdtemp("monitor-exposure-", dir="/tmp"))
    try:
        base.chmod(0o755)
        old_dir = base / "old"
        old_dir.mkdir(mode=0o755)
        old_dir.chmod(0o755)
        old = old_dir / "events.jsonl"
        old.write_text("")
        old.chmod(0o644)  # left behind by an older version
        logs = {"new": base / "log" / "enforcer" / "events.jsonl", "old": old}
        for which, events in logs.items():
            runtime = base / f"rt-{which}"
            port = free_port()
            cmd = [PYTHON, "-m", "enforcer", "monitor", f"--listen=127.0.0.1:{port}",
                   f"--runtime-dir={runtime}", f"--events={events}", "--events-max-bytes=600",
                   "--poll-interval=0.25"]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                def healthy() -> bool:
                    assert proc.poll() is None, f"the monitor exited {proc.returncode}"
                    return http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
                wait_for(healthy, 30, "the monitor to be healthy")
                v = Violator(gen_binary, "loop", 5)
                violators.append(v)
                write_workload(str(runtime), f"exposure-{which}", pid=v.pid)
                assert v.go() == 0
                wait_for(lambda: len(list(events.parent.glob("events.jsonl*"))) >= 2, 20,
                         "the event log to rotate")
            finally:
                stop(proc)
            files = sorted(events.parent.glob("events.jsonl*"))
            assert count_event_lines(str(events), workload=f"exposure-{which}") == 5
            for path in files:
                r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                                    "cat", str(path)], capture_output=True, text=True)
                assert r.returncode != 0 and "exposure-" not in r.stdout, \
                    f"{path} (mode {path.stat().st_mode & 0o777:o}) is readable by nobody"
                assert path.stat().st_mode & 0o007 == 0, f"{path}: {path.stat().st_mode & 0o777:o}"
    finally:
        session.remove_tree(str(base))

