"""The shim end to end with the real runc: probes, exit status, stdio, console
socket, detached create/start/delete and the registry.

Each test builds its own bundle in a temporary directory and removes its
container in a finalizer, even when the test fails.
"""

from __future__ import annotations

import array
import glob
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from tests import session

from tests.e2e.rootfs import build_busybox_rootfs, runc_spec_bundle
from tests.run_helpers import probe_env
from tests.shim_helpers import (
    REPO,
    RUNC,
    expected_probe_table,
    force_delete,
    run_shim,
    run_shim_files,
)

pytestmark = [pytest.mark.runc, pytest.mark.root, pytest.mark.usefixtures("shim_front_end")]

ENFORCER = os.path.join(REPO, ".venv", "bin", "enforcer")
PROBE_SRC = os.path.join(REPO, "tests", "probes", "probe.c")


@pytest.fixture(scope="module", autouse=True)
def _needs_root_and_runc() -> None:
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root and runc")


@pytest.fixture(scope="module")
def rootfs_src(tmp_path_factory) -> str:
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("shim-rootfs") / "rootfs"))


@pytest.fixture
def shim_env(tmp_path) -> dict[str, str]:
    return {"ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
            "ENFORCER_SHIM_CONFIG": str(tmp_path / "no-shim-config.json.absent"),
            "ENFORCER_CACHE_DIR": str(tmp_path / "plan-cache")}


@pytest.fixture
def shim_env_ok(shim_env, tmp_path) -> dict[str, str]:
    (tmp_path / "shim.json").write_text(json.dumps({"runc": RUNC}))
    return {**shim_env, "ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json")}


@pytest.fixture
def container_id(request):
    """A fresh container id, force-deleted at the end whatever happened."""
    cid = session.unique("enf-shim-")
    yield cid
    force_delete(cid)


def _records(env: dict[str, str]) -> list[str]:
    return sorted(glob.glob(os.path.join(env["ENFORCER_RUNTIME_DIR"], "workloads", "*.json")))


def _wait_records_gone(env: dict[str, str], timeout: float = 5) -> list[str]:
    deadline = time.monotonic() + timeout
    while _records(env) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _records(env)


# -- (c) exit status, stdio, console socket, detached lifecycle ------------------------


def test_run_passes_exit_status_and_stdio(tmp_path, rootfs_src, shim_env_ok, container_id):
    bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src,
                              ["/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"])
    plain = subprocess.run([RUNC, "run", "--bundle", bundle, container_id + "-plain"],
                           capture_output=True, text=True, timeout=60)
    force_delete(container_id + "-plain")
    shimmed = run_shim(["--policy", "default", "run", "--bundle", bundle, container_id],
                       env=shim_env_ok)
    assert (plain.returncode, plain.stdout, plain.stderr) == (3, "to-stdout\n", "to-stderr\n")
    assert (shimmed.returncode, shimmed.stdout, shimmed.stderr) == \
        (plain.returncode, plain.stdout, plain.stderr)
    config = json.load(open(os.path.join(bundle, "config.json")))
    assert "seccomp" in config["linux"]  # merged: `runc spec` writes no filter
    assert "annotations" not in config  # the caller's alone (it set none)
    # foreground `runc run` deletes the container; the record goes with it
    assert _wait_records_gone(shim_env_ok) == []


def test_run_killed_by_signal_reports_128_plus_n(tmp_path, rootfs_src, shim_env_ok,
                                                 container_id):
    bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src, ["/bin/sleep", "30"])
    from tests.shim_helpers import shim_cmd

    env = {**{k: v for k, v in os.environ.items() if k != "ENFORCER_SHIM_ACTIVE"},
           **shim_env_ok}
    proc = subprocess.Popen(shim_cmd() + ["--policy", "default", "run", "-b", bundle,
                                          container_id], env=env)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([RUNC, "state", container_id], capture_output=True,
                             text=True).stdout.find('"running"') < 0:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        subprocess.run([RUNC, "kill", container_id, "KILL"], check=True)
        assert proc.wait(timeout=30) == 128 + 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_detached_create_start_delete_and_registry(tmp_path, rootfs_src, shim_env_ok,
                                                   container_id):
    bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src,
                              ["/bin/sh", "-c", "echo started > /tmp/out; sleep 30"])
    pid_file = str(tmp_path / "init.pid")
    rc, _, err = run_shim_files(["--policy", "restricted", "create", "--bundle", bundle,
                                 "--pid-file", pid_file, container_id], shim_env_ok, str(tmp_path))
    assert rc == 0, err
    records = _records(shim_env_ok)
    assert len(records) == 1
    record = json.load(open(records[0]))
    pid = int(open(pid_file).read())
    assert (record["id"], record["kind"], record["policy"], record["pid"], record["bundle"]) == \
        (container_id, "container", "restricted", pid, bundle)
    # the cgroups are where the container's init really is
    with open(f"/proc/{pid}/cgroup") as f:
        real = {c: p for _, c, p in (line.rstrip("\n").split(":", 2) for line in f)}
    assert record["cgroups"] == real
    # a fresh audit session, started by whatever process became runc (the
    # Python shim or the compiled front end), is the container's: the
    # monitor attributes seccomp records by `ses=` alone
    with open(f"/proc/{pid}/sessionid") as f:
        session = int(f.read())
    with open("/proc/self/sessionid") as f:
        own_session = int(f.read())
    assert record["audit_session"] == session != own_session
    state = json.loads(subprocess.run([RUNC, "state", container_id], capture_output=True,
                                      text=True, check=True).stdout)
    assert state["status"] == "created"
    r = run_shim(["--policy", "restricted", "start", container_id], env=shim_env_ok)
    assert r.returncode == 0, r.stderr
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status
    # delete without --force refuses a running container: the record stays
    r = run_shim(["delete", container_id], env=shim_env_ok)
    assert r.returncode != 0 and _records(shim_env_ok) == records
    assert run_shim(["kill", container_id, "KILL"], env=shim_env_ok).returncode == 0
    deadline = time.monotonic() + 10
    while json.loads(subprocess.run([RUNC, "state", container_id], capture_output=True,
                                    text=True).stdout or "{}").get("status") != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = run_shim(["delete", container_id], env=shim_env_ok)
    assert r.returncode == 0, r.stderr
    assert _records(shim_env_ok) == []


def test_failed_create_leaves_no_record_and_keeps_runc_status(tmp_path, rootfs_src,
                                                              shim_env_ok, container_id):
    bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src, ["/does/not/exist"])
    plain = subprocess.run([RUNC, "run", "-b", bundle, container_id + "-p"],
                           capture_output=True, text=True, timeout=60)
    force_delete(container_id + "-p")
    rc, _, err = run_shim_files(["--policy", "default", "run", "-d", "-b", bundle,
                                 container_id], shim_env_ok, str(tmp_path))
    assert rc == plain.returncode != 0
    assert "/does/not/exist" in err
    assert _records(shim_env_ok) == []


def test_console_socket_is_handed_through(tmp_path, rootfs_src, shim_env_ok, container_id):
    def with_terminal(config):
        config["process"]["terminal"] = True
        return config

    bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src,
                              ["/bin/sh", "-c", "tty; echo hello-from-the-tty"], with_terminal)
    sock_path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    server.settimeout(30)
    try:
        rc, _, err = run_shim_files(["--policy", "default", "create", "-b", bundle,
                                     "--console-socket", sock_path, container_id],
                                    shim_env_ok, str(tmp_path))
        assert rc == 0, err
        conn, _ = server.accept()
        fds = array.array("i")
        _, ancdata, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
        conn.close()
        level, kind, data = ancdata[0]
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        fds.frombytes(data[:fds.itemsize])
        master = fds[0]
        assert run_shim_files(["start", container_id], shim_env_ok, str(tmp_path))[0] == 0
        out = b""
        deadline = time.monotonic() + 10
        while b"hello-from-the-tty" not in out and time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        assert b"/dev/pts/" in out and b"hello-from-the-tty" in out
    finally:
        server.close()


# -- (a) the probe suite under `restricted`: the same table as `enforcer run` -------------


def _probe_table(output: str) -> dict[str, str]:
    table = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in ("blocked", "allowed", "setup-error"):
            table[parts[0]] = parts[1]
    return table


@pytest.mark.slow
def test_restricted_probe_table_matches_enforcer_run(tmp_path, rootfs_src, shim_env_ok,
                                                     container_id):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the probe")
    # Outside /tmp: `restricted` mounts a fresh tmpfs there under `enforcer run`.
    work = os.path.join("/var/tmp", session.unique("enf-shim-"))
    os.makedirs(work)
    try:
        probe = os.path.join(work, "probe")
        subprocess.run(["gcc", "-static", "-O2", "-o", probe, PROBE_SRC], check=True,
                       timeout=120)
        # The same bounds as the probe table (twice restricted's own limits).
        from enforcer.compile.cache import load_or_compile

        plan = load_or_compile("restricted", cache_dir=shim_env_ok["ENFORCER_CACHE_DIR"])
        bounds = [f"{k}={v}" for k, v in probe_env(plan, "").items() if k.startswith("PROBE_")]

        def with_probe_env(config):
            config["process"]["env"].extend(bounds)
            return config

        bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src, ["/probe"], with_probe_env)
        shutil.copy2(probe, os.path.join(bundle, "rootfs", "probe"))
        in_container = run_shim(["--policy", "restricted", "run", "-b", bundle, container_id],
                                env=shim_env_ok, timeout=300)
        under_run = subprocess.run(
            [ENFORCER, "run", "--policy", "restricted", "--", "/usr/bin/env", *bounds, probe],
            capture_output=True, text=True, timeout=300, cwd="/",
            env={**os.environ, "ENFORCER_CACHE_DIR": shim_env_ok["ENFORCER_CACHE_DIR"]})
    finally:
        session.remove_tree(work)
    container_table = _probe_table(in_container.stdout)
    run_table = _probe_table(under_run.stdout)
    assert len(run_table) >= 30, under_run.stdout + under_run.stderr
    assert container_table == run_table, (in_container.stdout, under_run.stdout)
    # ... and the same as the committed table for `restricted`
    assert container_table == expected_probe_table("restricted")
