"""Acceptance (issue 3): the exports are accepted by the real consumers.

* OCI: the config.json patch (seccomp, capabilities, paths, mounts,
  resources, rlimits, no_new_privileges, user) merged into `runc spec`'s
  config runs busybox under a real `runc run`, and its effects are visible
  from inside the container.
* Docker: the seccomp profile and flags run a container on a private dockerd.
* systemd: the drop-in passes `systemd-analyze verify` without a warning.
* Kubernetes: the Pod and ConfigMap pass kubernetes-validate --strict; the
  SeccompProfile passes the operator CRD's schema (kubernetes-validate has
  no CRD schemas).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import session

from enforcer.compile import compile_policy
from enforcer.emit.docker import docker_export
from enforcer.emit.kubernetes import kubernetes_export
from enforcer.emit.oci import merge_patch, oci_patch
from enforcer.emit.systemd import systemd_export
from enforcer.importer.docker_seccomp import import_profile
from enforcer.policy.loader import load_policy
from tests.e2e.conftest import Dockerd
from tests.e2e.rootfs import RUNC, build_busybox_rootfs, busybox_is_static, runc_spec_bundle

from tests.paths import DOCKER_DEFAULT_SECCOMP as FIXTURE  # noqa: E402
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# A policy that uses every part of the OCI patch and whose effects a shell
# inside the container can see.
OBSERVABLE_POLICY = """\
name: emit-e2e
syscalls:
  default: allow
  deny: [mkdir, mkdirat]
  deny_action: errno EACCES
capabilities:
  keep: [NET_BIND_SERVICE]
  ambient: [NET_BIND_SERVICE]
no_new_privileges: true
filesystem:
  read_only_root: true
  read_only_paths: [/etc]
  tmpfs:
    - {path: /tmp, size: 8Mi, mode: "1777", options: [nosuid, nodev]}
  masked_paths: default
resources:
  memory: {max: 64Mi}
  pids: {max: 32}
rlimits:
  nofile: {soft: 100, hard: 200}
user: {uid: 1000, gid: 1000}
"""

# What the container prints; each line is checked.
PROBE = ("grep -E '^(Seccomp|CapBnd|CapEff|NoNewPrivs):' /proc/self/status; "
         "echo nofile=$(ulimit -n); echo uid=$(id -u); "
         "mkdir /tmp/x 2>&1 | head -1; touch /x 2>&1 | head -1; "
         "echo tmp > /tmp/ok && echo tmp-writable")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not busybox_is_static():
        pytest.skip("busybox is not statically linked (install busybox-static)")
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("emit-rootfs") / "rootfs"))


@pytest.fixture(scope="module")
def imported_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text, _ = import_profile(str(FIXTURE))
    path = tmp_path_factory.mktemp("emit-import") / "docker-default.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def observable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("emit-policy") / "emit-e2e.yaml"
    path.write_text(OBSERVABLE_POLICY)
    return path


SHIPPED = ("default", "restricted", "web-server", "batch-job")


def _policy_path(which: str, imported_default: Path, observable: Path) -> str:
    if which == "imported":
        return str(imported_default)
    if which == "observable":
        return str(observable)
    return which  # a shipped policy's name


def _check_probe_output(out: str, nofile: bool = True) -> None:
    lines = out.splitlines()
    assert "Seccomp:\t2" in lines, out
    assert "NoNewPrivs:\t1" in lines, out
    assert "CapBnd:\t0000000000000400" in lines, out  # CAP_NET_BIND_SERVICE only
    if nofile:
        assert "nofile=100" in lines, out
    assert "uid=1000" in lines, out
    assert any("Permission denied" in line for line in lines), out  # mkdir -> EACCES
    assert any("Read-only file system" in line for line in lines), out
    assert "tmp-writable" in lines, out


# -- runc ------------------------------------------------------------------


def _runc_run(tmp_path: Path, rootfs: str, policy_path: Path | str, args: list[str]
              ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    policy = load_policy(str(policy_path))
    patch, _lines = oci_patch(policy, compile_policy(policy))
    patch.get("root", {}).pop("path", None)  # keep the bundle's rootfs
    bundle = runc_spec_bundle(str(tmp_path / "bundle"), rootfs, args,
                              patch=lambda config: merge_patch(config, patch))
    state = tmp_path / "runc-state"
    cid = session.unique("enforcer-emit-")
    try:
        result = subprocess.run([RUNC, "--root", str(state), "run", "--bundle", bundle, cid],
                                capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run([RUNC, "--root", str(state), "delete", "--force", cid],
                       capture_output=True)
    with open(os.path.join(bundle, "config.json")) as f:
        return result, json.load(f)


@pytest.mark.runc
@pytest.mark.root
@needs_root
def test_runc_runs_under_the_imported_docker_default(tmp_path: Path, rootfs: str,
                                                     imported_default: Path) -> None:
    result, config = _runc_run(tmp_path, rootfs, imported_default, ["/bin/true"])
    assert result.returncode == 0, result.stderr
    seccomp = config["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    assert len(seccomp["syscalls"]) > 5


@pytest.mark.runc
@pytest.mark.root
@needs_root
@pytest.mark.parametrize("name", SHIPPED)
def test_runc_runs_under_each_shipped_policy(tmp_path: Path, rootfs: str, name: str) -> None:
    result, _config = _runc_run(tmp_path, rootfs, name, ["/bin/true"])
    assert result.returncode == 0, result.stderr


@pytest.mark.runc
@pytest.mark.root
@needs_root
def test_runc_applies_every_part_of_the_oci_patch(tmp_path: Path, rootfs: str,
                                                  observable: Path) -> None:
    result, config = _runc_run(tmp_path, rootfs, observable, ["/bin/sh", "-c", PROBE])
    assert result.returncode == 0, result.stderr
    _check_probe_output(result.stdout)
    assert config["process"]["capabilities"]["bounding"] == ["CAP_NET_BIND_SERVICE"]
    assert config["linux"]["resources"]["pids"] == {"limit": 32}


# -- docker -----------------------------------------------------------------


def _docker_run(dockerd: Dockerd, image: str, tmp_path: Path, policy_path: Path | str,
                args: list[str]) -> subprocess.CompletedProcess[str]:
    policy = load_policy(str(policy_path))
    export, _lines = docker_export(policy, compile_policy(policy))
    profile = tmp_path / "seccomp.json"
    profile.write_text(json.dumps(export.seccomp))
    flags = export.run_flags(str(profile))
    # This dockerd has no bridge: every container runs without a network.
    network = [] if "--network" in flags else ["--network", "none"]
    return dockerd("run", "--rm", *network, *flags, image, *args, timeout=120)


@pytest.mark.docker
@pytest.mark.root
@needs_root
def test_docker_runs_under_the_imported_docker_default(dockerd: Dockerd, busybox_image: str,
                                                       tmp_path: Path,
                                                       imported_default: Path) -> None:
    result = _docker_run(dockerd, busybox_image, tmp_path, imported_default,
                         ["/bin/sh", "-c", "grep Seccomp: /proc/self/status"])
    assert result.returncode == 0, result.stderr
    assert "Seccomp:\t2" in result.stdout


@pytest.mark.docker
@pytest.mark.root
@needs_root
@pytest.mark.parametrize("name", SHIPPED)
def test_docker_runs_under_each_shipped_policy(dockerd: Dockerd, busybox_image: str,
                                               tmp_path: Path, name: str) -> None:
    result = _docker_run(dockerd, busybox_image, tmp_path, name, ["/bin/true"])
    assert result.returncode == 0, result.stderr


@pytest.mark.docker
@pytest.mark.root
@needs_root
def test_docker_applies_the_profile_and_flags(dockerd: Dockerd, busybox_image: str,
                                              tmp_path: Path, observable: Path) -> None:
    result = _docker_run(dockerd, busybox_image, tmp_path, observable,
                         ["/bin/sh", "-c", PROBE])
    assert result.returncode == 0, result.stderr
    _check_probe_output(result.stdout)


@pytest.mark.docker
@pytest.mark.root
@needs_root
def test_docker_rejects_a_corrupt_profile(dockerd: Dockerd, busybox_image: str,
                                          tmp_path: Path) -> None:
    """Control: the engine really reads the profile (so acceptance means something)."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"defaultAction": "SCMP_ACT_BOGUS"}))
    result = dockerd("run", "--rm", "--network", "none", "--security-opt", f"seccomp={bad}",
                     busybox_image, "/bin/true")
    assert result.returncode != 0


# -- systemd ------------------------------------------------------------------


def _verify_dropin(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    unit_dir = tmp_path / "units"
    dropin_dir = unit_dir / "enforcer-emit-test.service.d"
    dropin_dir.mkdir(parents=True)
    (unit_dir / "enforcer-emit-test.service").write_text(
        "[Unit]\nDescription=enforcer export test\n\n[Service]\nExecStart=/bin/true\n")
    (dropin_dir / "enforcer.conf").write_text(text)
    return subprocess.run(["systemd-analyze", "verify",
                           str(unit_dir / "enforcer-emit-test.service")],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("which", ["imported", "observable", *SHIPPED])
def test_systemd_dropin_passes_systemd_analyze_verify(tmp_path: Path, which: str,
                                                      imported_default: Path,
                                                      observable: Path) -> None:
    policy = load_policy(_policy_path(which, imported_default, observable))
    text, _lines = systemd_export(policy, compile_policy(policy))
    result = _verify_dropin(tmp_path, text)
    # verify exits 0 even for a bad setting; it prints a warning instead.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_reads_the_dropin(tmp_path: Path) -> None:
    """Control: a bad line in the drop-in is reported, so the drop-in is read."""
    result = _verify_dropin(tmp_path, "[Service]\nMemoryMax=lots\n")
    assert "MemoryMax" in result.stderr or "memory limit" in result.stderr


# -- kubernetes --------------------------------------------------------------------

# The SeccompProfile CRD's schema (security-profiles-operator v1beta1), as the
# operator's kubebuilder markers define it.
_ACTIONS = ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
            "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
            "SCMP_ACT_NOTIFY"]
SPO_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "security-profiles-operator.x-k8s.io/v1beta1"},
        "kind": {"const": "SeccompProfile"},
        "metadata": {"type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string",
                                             "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["defaultAction"],
            "properties": {
                "disabled": {"type": "boolean"},
                "baseProfileName": {"type": "string"},
                "defaultAction": {"enum": _ACTIONS},
                "architectures": {"type": "array", "items": {"enum": [
                    "SCMP_ARCH_NATIVE", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32",
                    "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
                    "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
                    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
                    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
                    "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64"]}},
                "listenerPath": {"type": "string"},
                "listenerMetadata": {"type": "string"},
                "flags": {"type": "array", "items": {"enum": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}},
                "syscalls": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["names", "action"],
                    "properties": {
                        "names": {"type": "array", "items": {"type": "string"}},
                        "action": {"enum": _ACTIONS},
                        "errnoRet": {"type": "integer", "minimum": 0},
                        "args": {"type": "array", "maxItems": 6, "items": {
                            "type": "object", "additionalProperties": False,
                            "required": ["index", "op"],
                            "properties": {
                                "index": {"type": "integer", "minimum": 0},
                                "value": {"type": "integer", "minimum": 0},
                                "valueTwo": {"type": "integer", "minimum": 0},
                                "op": {"enum": ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",
                                                "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
                                                "SCMP_CMP_MASKED_EQ"]}}}}}}},
            },
        },
    },
}


def _kubernetes_validate() -> str:
    exe = VENV_BIN / "kubernetes-validate"
    if not exe.exists():
        found = shutil.which("kubernetes-validate")
        if found is None:
            pytest.skip("kubernetes-validate is not installed")
        return found
    return str(exe)


@pytest.mark.parametrize("which", ["imported", "observable", *SHIPPED])
def test_kubernetes_output_passes_kubernetes_validate(tmp_path: Path, which: str,
                                                      imported_default: Path,
                                                      observable: Path) -> None:
    import jsonschema
    import yaml

    policy = load_policy(_policy_path(which, imported_default, observable))
    kube, _lines = kubernetes_export(policy, compile_policy(policy), image="busybox:1.36")
    out = tmp_path / "k8s.yaml"
    out.write_text(kube.to_yaml())
    result = subprocess.run([_kubernetes_validate(), "--strict", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource pod/" in result.stdout, result.stdout
    assert "passed for resource configmap/" in result.stdout, result.stdout
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["Pod", "SeccompProfile", "ConfigMap"]
    jsonschema.validate(docs[1], SPO_SCHEMA)
    # The ConfigMap carries the very profile the Pod's Localhost path names.
    profile_name = docs[0]["spec"]["securityContext"]["seccompProfile"]["localhostProfile"]
    data = docs[2]["data"][profile_name.removeprefix("profiles/")]
    assert json.loads(data) == kube.profile_json


def test_kubernetes_validate_rejects_a_broken_pod(tmp_path: Path) -> None:
    """Control: the validator really checks (a wrong type fails)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n"
                   "  - name: app\n    image: busybox\n    securityContext:\n"
                   "      runAsUser: not-a-number\n")
    result = subprocess.run([_kubernetes_validate(), "--strict", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
