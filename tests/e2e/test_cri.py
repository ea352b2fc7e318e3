"""The Kubernetes path as kubelet drives it (issue 14): containerd 1.6's CRI
plugin with enforcer's runtime handlers, over the CRI gRPC API.

A private containerd (root, state, sockets, CNI and opt directories under
a session temp dir), whose configuration is the test's own settings plus
the shipped deploy/containerd/enforcer-runtimes.toml appended to it, the
way install-node.sh writes it: one handler per policy (what a RuntimeClass
names) and the `enforcer` handler that passes the policy annotation. The
handlers' BinaryName points at this test's copies of the shipped
deploy/containerd/bin wrappers, whose /usr/local/bin/enforcer-runc is a
wrapper naming the test's enforcer-shimd and shim configuration (a node's
defaults). The images (busybox, and a pause-like sandbox image whose
entrypoint is busybox `sleep`) are OCI archives built here and loaded with
`ctr images import`; no registry.

Then, as kubelet does: RunPodSandbox with the handler, CreateContainer,
StartContainer, ExecSync, StopContainer, RemoveContainer, StopPodSandbox,
RemovePodSandbox. The gRPC stubs are generated at test time from
tests/e2e/cri/api.proto (the subset of kubernetes/cri-api this uses).

Pods use the node's network (no CNI here); everything else is what a
kubelet asks for. What this proves and what it does not: docs/deploy.md,
"What the CRI test proves".
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

from enforcer.plan import load_plan_file
from tests import session
from tests.e2e.rootfs import build_busybox_rootfs, oci_archive
from tests.e2e.runtime_tools import runtime_wrapper
from tests.shim_fixtures import ShimServer, start_server, stop_server
from tests.shim_helpers import REPO, RUNC

pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.slow]

CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
DEPLOY = Path(REPO) / "deploy" / "containerd"
PROTO = Path(__file__).resolve().parent / "cri"
ENFORCER = os.path.join(REPO, ".venv", "bin", "enforcer")
IMAGE = "localhost/enforcer-e2e-busybox:latest"
PAUSE = "localhost/enforcer-e2e-pause:latest"
POLICIES = ("default", "restricted")
NODE_PATH = "/usr/local/bin/"  # where the shipped files expect enforcer
# Where containerd writes whatever its configuration says: the shims'
# sockets and the runc shim's default runc root (files before directories).
FIXED_PATHS = ("/run/containerd/runc/k8s.io", "/run/containerd/runc", "/run/containerd/s",
               "/run/containerd")
# Where containerd keeps state by default: nothing new may appear there.
DEFAULT_STATE = ("/var/lib/containerd", "/opt/containerd", "/etc/containerd", "/run/netns",
                 "/etc/cni/net.d", "/var/log/pods", "/var/log/containers")
# A handler an operator could add by hand: a policy of its own and the
# annotation passed through too. The shim must still not let a pod pick
# a weaker policy than the handler's.
ANNOTATED_HANDLER = """
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.enforcer-restricted-annotated]
  runtime_type = "io.containerd.runc.v2"
  pod_annotations = ["io.enforcer.policy"]
  container_annotations = ["io.enforcer.policy"]
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.enforcer-restricted-annotated.options]
    BinaryName = "{bin}/enforcer-runc-restricted"
"""


# -- the CRI client -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cri_api(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """api_pb2 and api_pb2_grpc, generated from tests/e2e/cri/api.proto."""
    try:
        from grpc_tools import protoc
    except ImportError:
        pytest.skip("grpcio-tools is not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("cri-stubs")
    status = protoc.main(["grpc_tools.protoc", f"-I{PROTO}", f"--python_out={out}",
                          f"--grpc_python_out={out}", str(PROTO / "api.proto")])
    assert status == 0, "protoc failed on tests/e2e/cri/api.proto"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")
    finally:
        sys.path.remove(str(out))


# -- a private containerd with enforcer's handlers -----------------------------------


@dataclass
class Node:
    """A private containerd; `runtime` and `images` are CRI clients."""

    root: Path
    socket: str
    server: ShimServer
    api: ModuleType
    runtime: Any
    images: Any
    cgroup_parent: str

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert CTR is not None
        return subprocess.run([CTR, "--address", self.socket, "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout)

    def registry(self) -> list[str]:
        directory = self.root / "registry" / "workloads"
        return sorted(p.removesuffix(".json") for p in os.listdir(directory)) \
            if directory.exists() else []

    def record(self, container_id: str) -> dict[str, Any]:
        path = self.root / "registry" / "workloads" / f"{container_id}.json"
        return json.loads(path.read_text())  # type: ignore[no-any-return]


def _shim(root: Path) -> Path:
    """Precompiled Plans and the shim's configuration."""
    plans = root / "plans"
    plans.mkdir()
    for policy in POLICIES:
        subprocess.run([ENFORCER, "compile", policy, "-o", str(plans / f"{policy}.json")],
                       check=True, capture_output=True, timeout=300)
    config = root / "shim.json"
    config.write_text(json.dumps({"runc": RUNC, "plans_dir": str(plans),
                                  "runtime_dir": str(root / "registry")}))
    return config


def _install_wrappers(root: Path, server: ShimServer, shim_config: Path) -> Path:
    """bin/: the shipped per-policy wrappers, pointing at bin/enforcer-runc,
    a wrapper that stands for the node's /usr/local/bin/enforcer-runc (its
    server socket and configuration named, as a node's defaults are)."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    runtime_wrapper(bin_dir / "enforcer-runc", [server.binary],
                    {"ENFORCER_SHIM_SOCKET": server.socket,
                     "ENFORCER_SHIM_CONFIG": str(shim_config)})
    for shipped in sorted((DEPLOY / "bin").glob("enforcer-runc-*")):
        text = shipped.read_text()
        assert NODE_PATH + "enforcer-runc " in text, f"{shipped} no longer execs the front end"
        target = bin_dir / shipped.name
        target.write_text(text.replace(NODE_PATH, f"{bin_dir}/"))
        target.chmod(0o755)
    return bin_dir


def _containerd_config(root: Path, bin_dir: Path) -> Path:
    """The test's own settings, then the shipped handlers appended (the
    way install-node.sh adds them to a node's config.toml)."""
    handlers = (DEPLOY / "enforcer-runtimes.toml").read_text()
    handlers = "\n".join(line for line in handlers.splitlines()
                         if not line.startswith("version ")).replace(NODE_PATH, f"{bin_dir}/")
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    config = root / "config.toml"
    config.write_text(f"""\
version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{root}/containerd.sock"

[ttrpc]
  address = "{root}/containerd-ttrpc.sock"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[{cri}]
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # kubelet's sandboxes get oom_score_adj -998; lowering it needs
  # CAP_SYS_RESOURCE, which this sandbox withholds (as a rootless node does).
  restrict_oom_score_adj = true

[{cri}.cni]
  bin_dir = "{root}/cni/bin"
  conf_dir = "{root}/cni/net.d"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

# A node's config names its default handler: once a config defines any
# handler, containerd's built-in `runc` one is gone.
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

# ---- deploy/containerd/enforcer-runtimes.toml, as install-node.sh appends it ----
{handlers}
{ANNOTATED_HANDLER.format(bin=bin_dir)}""")
    return config


def _wait_for_socket(proc: subprocess.Popen[bytes], socket: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(socket):
        if proc.poll() is not None:
            raise RuntimeError(f"containerd exited {proc.returncode}: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"containerd did not start: {log.read_text()[-3000:]}")
        time.sleep(0.1)


def _import_images(node: Node) -> None:
    rootfs = build_busybox_rootfs(str(node.root / "rootfs"))
    for name, entrypoint, cmd in ((IMAGE, None, ["sh"]),
                                  (PAUSE, ["/bin/sleep", "2147483647"], None)):
        archive = oci_archive(rootfs, str(node.root / f"{name.rsplit('/', 1)[-1]}.tar"), name,
                              entrypoint=entrypoint, cmd=cmd)
        r = node.ctr("images", "import", archive)
        assert r.returncode == 0, r.stderr
    status = node.images.ImageStatus(node.api.ImageStatusRequest(
        image=node.api.ImageSpec(image=IMAGE)), timeout=30)
    assert status.image.id, "the CRI plugin does not see the imported image"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def node(cri_api: tuple[ModuleType, ModuleType]) -> Iterator[Node]:
    if CONTAINERD is None or CTR is None or os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root, containerd, ctr and runc (scripts/setup.sh installs them)")
    import grpc

    api, stubs = cri_api
    with session.host_lock("containerd"):
        existed = {p for p in FIXED_PATHS if os.path.lexists(p)}
        before = session.list_dirs(DEFAULT_STATE)
        root = Path(session.mkdtemp("enf-cri-", dir="/tmp"))
        cgroup_parent = f"{session.CGROUP_PARENT}/cri"
        shim_config = _shim(root)
        (root / "shimd").mkdir()
        server = start_server(str(root / "shimd"), env={"ENFORCER_SHIM_CONFIG": str(shim_config)})
        proc = None
        channel = None
        try:
            bin_dir = _install_wrappers(root, server, shim_config)
            config = _containerd_config(root, bin_dir)
            log = root / "containerd.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([CONTAINERD, "--config", str(config), "--log-level",
                                         "warn"], stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            socket = f"{root}/containerd.sock"
            _wait_for_socket(proc, socket, log)
            channel = grpc.insecure_channel(f"unix://{socket}")
            instance = Node(root, socket, server, api, stubs.RuntimeServiceStub(channel),
                            stubs.ImageServiceStub(channel), cgroup_parent)
            try:
                version = instance.runtime.Version(api.VersionRequest(version="v1"), timeout=30)
            except grpc.RpcError as e:  # the CRI plugin did not load: say why
                raise AssertionError(f"{e}\n{log.read_text()[-3000:]}") from None
            assert version.runtime_name == "containerd", version
            _import_images(instance)
            yield instance
        finally:
            if channel is not None:
                channel.close()
            if proc is not None:
                _stop(proc)
            stop_server(server)
            for point in session.mounts_under(str(root)):
                subprocess.run(["umount", "-l", point], capture_output=True)
            session.remove_cgroup_tree(cgroup_parent)
            session.remove_tree(str(root))
            session.remove_new_paths(FIXED_PATHS, existed)
        left = session.new_entries(before, session.list_dirs(DEFAULT_STATE))
        assert not left, f"containerd left state on the host: {left}"


# -- pods, as kubelet makes them ----------------------------------------------------------


@dataclass
class Pod:
    sandbox_id: str
    config: Any


def _pod_config(node: Node, annotations: dict[str, str] | None = None) -> Any:
    api = node.api
    name = session.unique("pod-")
    host_network = api.NamespaceOption(network=api.NODE, pid=api.CONTAINER, ipc=api.POD)
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, uid=str(uuid.uuid4()),
                                        namespace="enforcer-e2e", attempt=0),
        log_directory=str(node.root / "logs" / name),
        labels={"app": "enforcer-e2e"}, annotations=annotations or {},
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent=f"{node.cgroup_parent}/{name}",
            security_context=api.LinuxSandboxSecurityContext(namespace_options=host_network)))


@pytest.fixture
def pods(node: Node) -> Iterator[Any]:
    """run(handler, annotations) -> Pod; every pod stopped and removed at the end."""
    made: list[str] = []

    def run(handler: str, annotations: dict[str, str] | None = None) -> Pod:
        config = _pod_config(node, annotations)
        response = node.runtime.RunPodSandbox(
            node.api.RunPodSandboxRequest(config=config, runtime_handler=handler), timeout=120)
        made.append(response.pod_sandbox_id)
        return Pod(response.pod_sandbox_id, config)

    yield run
    for sandbox_id in made:
        node.runtime.StopPodSandbox(node.api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id),
                                    timeout=120)
        node.runtime.RemovePodSandbox(node.api.RemovePodSandboxRequest(
            pod_sandbox_id=sandbox_id), timeout=120)


def _start_container(node: Node, pod: Pod, command: list[str]) -> str:
    api = node.api
    host_network = api.NamespaceOption(network=api.NODE, pid=api.CONTAINER, ipc=api.POD)
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="app", attempt=0),
        image=api.ImageSpec(image=IMAGE), command=command, log_path="app/0.log",
        linux=api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
            namespace_options=host_network)))
    created = node.runtime.CreateContainer(api.CreateContainerRequest(
        pod_sandbox_id=pod.sandbox_id, config=config, sandbox_config=pod.config), timeout=120)
    node.runtime.StartContainer(api.StartContainerRequest(container_id=created.container_id),
                                timeout=120)
    return created.container_id  # type: ignore[no-any-return]


def _exec(node: Node, container_id: str, cmd: list[str]) -> Any:
    return node.runtime.ExecSync(node.api.ExecSyncRequest(container_id=container_id, cmd=cmd,
                                                          timeout=30), timeout=60)


def _status_of_init(node: Node, container_id: str) -> dict[str, str]:
    r = _exec(node, container_id, ["cat", "/proc/1/status"])
    assert r.exit_code == 0, r.stderr
    fields = {}
    for line in r.stdout.decode().splitlines():
        key, colon, value = line.partition(":")
        if colon and value.split():
            fields[key] = value.split()[0]
    return fields


def _assert_under_policy(node: Node, status: dict[str, str], policy: str) -> None:
    """Seccomp filter on, capabilities within the policy's, its user."""
    plan = load_plan_file(str(node.root / "plans" / f"{policy}.json"))
    assert status["Seccomp"] == "2", status
    assert plan.capabilities is not None and not plan.capabilities.relative
    for key, allowed in (("CapBnd", plan.capabilities.bounding),
                         ("CapEff", plan.capabilities.effective),
                         ("CapPrm", plan.capabilities.permitted)):
        assert int(status[key], 16) & ~allowed == 0, (key, status[key], hex(allowed))
    if plan.user is not None:
        assert status["Uid"] == str(plan.user.uid), status
    if plan.no_new_privileges:
        assert status["NoNewPrivs"] == "1", status


# -- the tests ---------------------------------------------------------------------------

TRAP = "trap 'exit 7' TERM; while :; do sleep 0.1; done"


@pytest.mark.parametrize("policy", POLICIES)
def test_a_pod_runs_under_its_handler_s_policy(node: Node, pods: Any, policy: str) -> None:
    """RuntimeClass enforcer-<policy>: the sandbox and the app container
    both run under the policy, through enforcer-shimd, registered; the
    CRI lifecycle (exec exit code, stop, remove) is the runtime's."""
    pod = pods(f"enforcer-{policy}")
    container_id = _start_container(node, pod, ["sh", "-c", TRAP])
    status = _status_of_init(node, container_id)
    _assert_under_policy(node, status, policy)
    if policy == "restricted":
        assert (status["Uid"], int(status["CapBnd"], 16)) == ("65534", 0)
    # Both containers of the pod are the shim's, with the handler's policy.
    assert {pod.sandbox_id, container_id} <= set(node.registry())
    assert node.record(pod.sandbox_id)["policy"] == policy
    assert node.record(container_id)["policy"] == policy
    assert container_id in node.server.log_text(), "not created through enforcer-shimd"
    # ExecSync: the command's exit code; its process is under the policy too
    assert _exec(node, container_id, ["sh", "-c", "exit 4"]).exit_code == 4
    exec_status = _exec(node, container_id, ["cat", "/proc/self/status"]).stdout.decode()
    assert "Seccomp:\t2" in exec_status
    # StopContainer: SIGTERM reaches the process, its exit code is reported
    node.runtime.StopContainer(node.api.StopContainerRequest(container_id=container_id,
                                                             timeout=20), timeout=60)
    final = node.runtime.ContainerStatus(node.api.ContainerStatusRequest(
        container_id=container_id), timeout=30).status
    assert (final.state, final.exit_code) == (node.api.CONTAINER_EXITED, 7), final
    node.runtime.RemoveContainer(node.api.RemoveContainerRequest(container_id=container_id),
                                 timeout=60)
    assert container_id not in node.registry()


def test_without_a_handler_the_pod_is_plain_runc(node: Node, pods: Any) -> None:
    """The comparison: no RuntimeClass, containerd's own runc, no policy."""
    pod = pods("")
    container_id = _start_container(node, pod, ["sleep", "60"])
    status = _status_of_init(node, container_id)
    assert status["Seccomp"] == "0" and status["Uid"] == "0"
    assert container_id not in node.registry()


@pytest.mark.parametrize("handler", ["enforcer-restricted", "enforcer-restricted-annotated"])
def test_a_pod_annotation_cannot_choose_a_weaker_policy(node: Node, pods: Any,
                                                        handler: str) -> None:
    """A pod author asks for `default` under the restricted RuntimeClass.
    The shipped per-policy handler does not pass annotations at all; one
    that does (an operator's own) still gets restricted or a refusal —
    never the weaker policy."""
    try:
        pod = pods(handler, {"io.enforcer.policy": "default"})
    except Exception as refused:  # grpc.RpcError: the shim refused the sandbox
        assert "enforcer-runc" in str(refused) and "restricted" in str(refused), refused
        return
    container_id = _start_container(node, pod, ["sleep", "60"])
    _assert_under_policy(node, _status_of_init(node, container_id), "restricted")
    assert node.record(container_id)["policy"] == "restricted"
    assert node.record(pod.sandbox_id)["policy"] == "restricted"


def test_the_annotation_handler_runs_the_named_policy(node: Node, pods: Any) -> None:
    """The `enforcer` handler passes io.enforcer.policy through: the pod
    gets the policy it names."""
    pod = pods("enforcer", {"io.enforcer.policy": "restricted"})
    container_id = _start_container(node, pod, ["sleep", "60"])
    _assert_under_policy(node, _status_of_init(node, container_id), "restricted")
    assert node.record(container_id)["policy"] == "restricted"


def test_a_refusal_reaches_the_cri_caller(node: Node, pods: Any) -> None:
    """containerd reads a runtime's errors from runc's --log file: the
    shim's one-line reason must arrive in the error kubelet gets (and so in
    the pod's events), not 'unable to retrieve OCI runtime error'."""
    import grpc

    with pytest.raises(grpc.RpcError) as refused:
        pods("enforcer", {"io.enforcer.policy": "no-such-policy"})
    details = refused.value.details()  # type: ignore[attr-defined]
    assert "enforcer-runc:" in details and "no-such-policy" in details, details
    assert "unable to retrieve OCI runtime error" not in details, details
    assert node.registry() == []
