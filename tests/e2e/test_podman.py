"""The shim under Podman (issue 14): run, exec, stop, kill, rm and exit
codes as under runc, and the policy chosen each way a Podman user can.

Podman 4.3 from Debian, with nothing of the host's setup: its own
containers.conf (CONTAINERS_CONF) and storage.conf, --root/--runroot and
tmp_dir under a session temp dir, the vfs driver (no overlay mounts), file
locks instead of /dev/shm, a file events log, no network (`netns =
"none"`), containers under the session's cgroup parent. The image is
imported from a busybox rootfs (`podman import`, no registry). Paths Podman
writes whatever it is told (its blob cache under /var/lib/containers) are
removed afterwards when they were not there before, and the fixture checks
that nothing else appeared where Podman keeps state by default.

conmon starts the runtime for create and exec with conmon's environment,
and Podman's cleanup process runs `delete` without the --runtime-flag
flags (observed with 4.3): neither sees the caller's ENFORCER_* variables.
So every runtime here is a wrapper that names the shim's config file and
socket itself, standing for what a node has by default
(/etc/enforcer/shim.json, /run/enforcer-shimd/shim.sock); on a node the
registrations need no wrapper of their own (docs/shim.md, "Podman").

The runtimes, registered by name in containers.conf [engine.runtimes]:
runc (plain runc, for comparison), enforcer (the shim without a policy:
the annotation picks it) and enforcer-<policy>.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs
from tests.e2e.runtime_tools import runtime_wrapper
from tests.shim_fixtures import ShimServer, start_server, stop_server
from tests.shim_helpers import REPO, RUNC

pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.slow]

PODMAN = shutil.which("podman")
ENFORCER = os.path.join(REPO, ".venv", "bin", "enforcer")
IMAGE = "localhost/enforcer-e2e-busybox:latest"
POLICIES = ("default", "restricted", "web-server")
# Where a root Podman keeps state when not told otherwise; the fixture
# checks nothing new appears there (beyond BLOB_CACHE, which it removes).
DEFAULT_STATE = ("/var/lib/containers", "/run/containers", "/run/libpod", "/run/runc",
                 "/etc/containers", "/etc/cni/net.d", "/dev/shm", "/run/netns", "/var/run/crun")
# `podman import` writes containers/image's blob info cache at this fixed
# path whatever --root says (Podman 4.3); files before directories.
BLOB_CACHE = ("/var/lib/containers/cache/blob-info-cache-v1.boltdb",
              "/var/lib/containers/cache", "/var/lib/containers")


@dataclass
class Podman:
    """A private Podman; call it like the podman CLI."""

    root: Path
    server: ShimServer
    cgroup_parent: str

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert PODMAN is not None
        env = {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf"),
               "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf")}
        return subprocess.run([PODMAN, "--root", str(self.root / "storage"),
                               "--runroot", str(self.root / "runroot"),
                               "--storage-driver", "vfs", *args],
                              env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def run(self, runtime: str, *args: str, global_args: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess[str]:
        """`podman run` under `runtime` (a containers.conf name or a path)."""
        return self(*global_args, "--runtime", runtime, "run",
                    "--cgroup-parent", self.cgroup_parent, *args)

    def registry(self) -> list[str]:
        """The shim's registry: one record per container it started."""
        directory = self.root / "registry" / "workloads"
        return sorted(p.removesuffix(".json") for p in os.listdir(directory)) \
            if directory.exists() else []

    def record(self, container_id: str) -> dict[str, object]:
        path = self.root / "registry" / "workloads" / f"{container_id}.json"
        return json.loads(path.read_text())  # type: ignore[no-any-return]


def _shim_config(root: Path) -> Path:
    """Precompiled Plans and the shim's configuration (the server's own)."""
    plans = root / "plans"
    plans.mkdir()
    for policy in POLICIES:
        subprocess.run([ENFORCER, "compile", policy, "-o", str(plans / f"{policy}.json")],
                       check=True, capture_output=True, timeout=300)
    shim_config = root / "shim.json"
    shim_config.write_text(json.dumps({"runc": RUNC, "plans_dir": str(plans),
                                       "runtime_dir": str(root / "registry")}))
    return shim_config


def _write_config(root: Path, server: ShimServer, shim_config: Path) -> None:
    """containers.conf, storage.conf and the runtimes they register."""
    runc_root = str(root / "runc-root")
    runtimes = {"runc": runtime_wrapper(root / "bin" / "runc", [RUNC, "--root", runc_root])}
    # What a node has by default, spelled out (conmon passes none of ours).
    own = {"ENFORCER_SHIM_SOCKET": server.socket, "ENFORCER_SHIM_CONFIG": str(shim_config)}
    runtimes["enforcer"] = runtime_wrapper(root / "bin" / "enforcer-runc",
                                           [server.binary, "--root", runc_root], own)
    for policy in POLICIES:
        runtimes[f"enforcer-{policy}"] = runtime_wrapper(
            root / "bin" / f"enforcer-runc-{policy}",
            [server.binary, "--policy", policy, "--root", runc_root], own)
    # Root Podman raises nofile and nproc to the kernel's maximum in every
    # container; runc's parent then needs CAP_SYS_RESOURCE, which this
    # sandbox withholds (and conmon runs with a lower nproc than ours).
    # Lowering needs no privilege: small fixed limits for every container.
    ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
    registered = "\n".join(f'{json.dumps(name)} = [{json.dumps(path)}]'
                           for name, path in runtimes.items())
    (root / "containers.conf").write_text(f"""\
[containers]
netns = "none"
default_ulimits = {json.dumps(ulimits)}

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
lock_type = "file"
tmp_dir = "{root}/tmp"
volume_path = "{root}/volumes"
runtime = "runc"

[engine.runtimes]
{registered}

[network]
network_config_dir = "{root}/cni"
""")
    (root / "storage.conf").write_text(f"""\
[storage]
driver = "vfs"
graphroot = "{root}/storage"
runroot = "{root}/runroot"
""")


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    if PODMAN is None or os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root, podman and runc (scripts/setup.sh installs them)")
    with session.host_lock("podman"):
        existed = {p for p in BLOB_CACHE if os.path.lexists(p)}
        before = session.list_dirs(DEFAULT_STATE)
        root = Path(session.mkdtemp("enf-podman-", dir="/tmp"))
        cgroup_parent = f"{session.CGROUP_PARENT}/podman"
        (root / "shimd").mkdir()
        (root / "bin").mkdir()
        shim_config = _shim_config(root)
        server = start_server(str(root / "shimd"), env={"ENFORCER_SHIM_CONFIG": str(shim_config)})
        instance = Podman(root, server, cgroup_parent)
        try:
            _write_config(root, server, shim_config)
            rootfs = build_busybox_rootfs(str(root / "rootfs"))
            subprocess.run(["tar", "-C", rootfs, "-cf", str(root / "rootfs.tar"), "."],
                           check=True, timeout=120)
            imported = instance("import", str(root / "rootfs.tar"), IMAGE)
            assert imported.returncode == 0, imported.stderr
            yield instance
        finally:
            instance("rm", "--all", "--force", "--time", "0")
            stop_server(server)
            session.remove_cgroup_tree(cgroup_parent)
            session.remove_tree(str(root))
            session.remove_new_paths(BLOB_CACHE, existed)
        left = session.new_entries(before, session.list_dirs(DEFAULT_STATE))
        assert not left, f"Podman left state on the host: {left}"


def _status(text: str) -> dict[str, str]:
    """`Key:  value ...` lines (/proc/PID/status) as {key: first word}."""
    fields = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and value.split():
            fields[key] = value.split()[0]
    return fields


def _wait_gone(podman: Podman, container_id: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while container_id in podman.registry():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- exit codes and stdio: the same as under runc ----------------------------------


def test_run_exit_code_and_stdio_are_runc_s(podman: Podman) -> None:
    script = "echo to-stdout; echo to-stderr >&2; exit 3"
    results = {rt: podman.run(rt, "--rm", IMAGE, "sh", "-c", script)
               for rt in ("runc", "enforcer-default")}
    plain, shimmed = results["runc"], results["enforcer-default"]
    assert (plain.returncode, plain.stdout) == (3, "to-stdout\n"), plain.stderr
    assert (shimmed.returncode, shimmed.stdout, shimmed.stderr) == \
        (plain.returncode, plain.stdout, plain.stderr)


@pytest.mark.parametrize("runtime", ["runc", "enforcer-restricted"])
def test_exec_stop_kill_rm_as_under_runc(podman: Podman, runtime: str) -> None:
    """A detached container through its life; the same codes under both."""
    name = session.unique("enf-podman-")
    r = podman.run(runtime, "-d", "--name", name, IMAGE, "sh", "-c",
                   "trap 'exit 7' TERM; while :; do sleep 0.1; done")
    assert r.returncode == 0, r.stderr
    container_id = r.stdout.strip()
    try:
        if runtime != "runc":
            assert podman.registry() == [container_id]
            assert podman.record(container_id)["policy"] == "restricted"
            # created through enforcer-shimd (not the Python fallback)
            assert f"create --bundle" in podman.server.log_text() and \
                container_id in podman.server.log_text()
        # exec: its exit code, and under the shim the policy's user for it too
        r = podman("exec", name, "sh", "-c", "id -u; exit 5")
        assert (r.returncode, r.stdout) == (5, "65534\n" if runtime != "runc" else "0\n"), \
            r.stderr
        # stop: SIGTERM reaches the container's trap
        assert podman("stop", "--time", "20", name).returncode == 0
        assert podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "7"
        # start again, then kill: SIGKILL, 128+9
        assert podman("start", name).returncode == 0
        assert podman("kill", "--signal", "KILL", name).returncode == 0
        assert podman("wait", name).stdout.strip() == "137"
        assert podman("rm", name).returncode == 0
        assert _wait_gone(podman, container_id), podman.registry()
        assert container_id not in os.listdir(podman.root / "runc-root")
    finally:
        podman("rm", "--force", "--time", "0", name)


# -- which policy ------------------------------------------------------------------

PROBE = "grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; touch /probe-rw && echo rw"


def test_policy_by_registered_runtime_name(podman: Podman) -> None:
    """containers.conf [engine.runtimes] enforcer-restricted = [wrapper]."""
    r = podman.run("enforcer-restricted", "--rm", IMAGE, "sh", "-c", PROBE)
    status = _status(r.stdout)
    assert (status["Uid"], status["CapEff"], status["NoNewPrivs"], status["Seccomp"]) == \
        ("65534", "0000000000000000", "1", "2"), r.stdout + r.stderr
    assert "rw" not in r.stdout.split()  # restricted's root is read-only
    plain = podman.run("runc", "--rm", IMAGE, "sh", "-c", PROBE)
    assert _status(plain.stdout)["Uid"] == "0" and "rw" in plain.stdout.split()


def test_policy_by_runtime_flag(podman: Podman) -> None:
    """`podman --runtime SHIM --runtime-flag policy=web-server`: Podman puts
    `--policy=web-server` before runc's command (on create, start, exec,
    kill; its cleanup's `delete` goes without, which needs no policy)."""
    r = podman.run(str(podman.root / "bin" / "enforcer-runc"), "-d", IMAGE, "sleep", "60",
                   global_args=("--runtime-flag", "policy=web-server"))
    assert r.returncode == 0, r.stderr
    container_id = r.stdout.strip()
    try:
        assert podman.record(container_id)["policy"] == "web-server"
        status = _status(podman("exec", container_id, "cat", "/proc/1/status").stdout)
        assert (status["Uid"], status["Seccomp"]) == ("65534", "2")
    finally:
        assert podman("rm", "--force", "--time", "0", container_id).returncode == 0
    assert _wait_gone(podman, container_id), "the registry record outlived the container"


def test_policy_by_annotation(podman: Podman) -> None:
    """The shim registered without a policy reads io.enforcer.policy, which
    Podman copies from --annotation into config.json."""
    r = podman.run("enforcer", "--rm", "--annotation", "io.enforcer.policy=restricted", IMAGE,
                   "sh", "-c", PROBE)
    status = _status(r.stdout)
    assert (status["Uid"], status["Seccomp"], status["CapEff"]) == \
        ("65534", "2", "0000000000000000"), r.stdout + r.stderr


def test_a_refusal_reaches_the_podman_user(podman: Podman) -> None:
    """No policy at all: the shim refuses, and Podman shows its one line."""
    r = podman.run("enforcer", "--rm", IMAGE, "true")
    assert r.returncode != 0
    assert "enforcer-runc: container" in r.stderr and "no policy selected" in r.stderr, r.stderr
    r = podman.run("enforcer", "--rm", "--annotation", "io.enforcer.policy=no-such-policy",
                   IMAGE, "true")
    assert r.returncode != 0 and "enforcer-runc: " in r.stderr, r.stderr
    assert podman.registry() == []


# -- capabilities the caller adds: as under runc, within the policy ---------------------

BIND_80 = ("grep CapAmb /proc/self/status; nc -l -p 80 & pid=$!; sleep 1; "
           "if kill -0 $pid 2>/dev/null; then echo BOUND; kill $pid; "
           "else wait $pid; echo NOT-BOUND; fi")


@pytest.mark.parametrize("runtime", ["runc", "enforcer-default"])
def test_user_1000_with_net_bind_service_binds_port_80(podman: Podman, runtime: str) -> None:
    """`default` keeps NET_BIND_SERVICE, so what runc allows a non-root user
    given the capability (Podman puts it in the ambient set) the shim must
    allow too."""
    r = podman.run(runtime, "--rm", "--user", "1000", "--cap-add", "NET_BIND_SERVICE", IMAGE,
                   "sh", "-c", BIND_80)
    assert "BOUND" in r.stdout.split(), r.stdout + r.stderr
