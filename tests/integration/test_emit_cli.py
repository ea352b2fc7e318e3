"""`enforcer export` and `enforcer import` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import DOCKER_DEFAULT_SECCOMP as FIXTURE  # noqa: E402
REPO = Path(__file__).resolve().parents[2]

POLICY = """\
name: cli-test
syscalls:
  default: errno EPERM
  allow: [read, write, exit_group]
  rules:
    - syscalls: [socket]
      action: allow
      args: [{index: 0, op: eq, value: AF_INET}]
capabilities: {keep: [NET_BIND_SERVICE]}
filesystem:
  read_only_root: true
  hidden_paths: [/root]
resources:
  memory: {max: 64Mi}
  pids: {max: 16}
rlimits:
  nofile: {soft: 64, hard: 64}
"""


def enforcer(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=120)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "cli-test.yaml"
    path.write_text(POLICY)
    return path


def test_import_writes_a_policy_that_checks(tmp_path: Path) -> None:
    out = tmp_path / "imported.yaml"
    r = enforcer("import", str(FIXTURE), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert all(line.startswith("enforcer import: note: ") for line in r.stderr.splitlines())
    check = enforcer("check", str(out))
    assert check.returncode == 0, check.stderr
    text = out.read_text()
    assert "name: imported" in text and "default: errno EPERM" in text


def test_import_caps_option_changes_the_result(tmp_path: Path) -> None:
    r = enforcer("import", str(FIXTURE), "--caps", "CAP_SYS_ADMIN,CAP_SYS_PTRACE")
    assert r.returncode == 0, r.stderr
    allow_line = next(line for line in r.stdout.splitlines() if "allow:" in line)
    assert "mount" in r.stdout.split("rules:")[0]
    assert allow_line  # the list starts on this line
    none = enforcer("import", str(FIXTURE), "--caps", "")
    assert "chroot" not in none.stdout.split("rules:")[0]


@pytest.mark.parametrize("change, where", [
    ({"defaultAction": "SCMP_ACT_NUKE"}, "defaultAction"),
    ({"architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]}, "architectures[1]"),
])
def test_import_bad_input_writes_nothing(tmp_path: Path, change: dict[str, object],
                                         where: str) -> None:
    data = json.loads(FIXTURE.read_text())
    data.update(change)
    if "architectures" in change:
        del data["archMap"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    out = tmp_path / "out.yaml"
    r = enforcer("import", str(bad), "-o", str(out))
    assert r.returncode == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]  # no temporary file left either
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad}: {where}: " in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_export_docker_prints_flags_and_what_it_cannot_express(tmp_path: Path,
                                                                policy: Path) -> None:
    out = tmp_path / "profile.json"
    r = enforcer("export", "--format", "docker", str(policy), "-o", str(out))
    assert r.returncode == 0, r.stderr
    profile = json.loads(out.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    flags = r.stdout.strip()
    assert flags.startswith(f"--security-opt seccomp={out} --cap-drop ALL "
                            "--cap-add NET_BIND_SERVICE --read-only")
    assert "--memory 67108864" in flags and "--pids-limit 16" in flags
    assert "--ulimit nofile=64:64" in flags
    stderr = r.stderr.splitlines()
    assert "export docker: cannot express hidden path /root; " \
           "Docker cannot make a path inaccessible" in stderr
    assert all(line.startswith("export docker: ") for line in stderr)


def test_export_oci_patch_and_seccomp_only(tmp_path: Path, policy: Path) -> None:
    r = enforcer("export", "-f", "oci", str(policy))
    assert r.returncode == 0, r.stderr
    patch = json.loads(r.stdout)
    assert patch["process"]["capabilities"]["bounding"] == ["CAP_NET_BIND_SERVICE"]
    assert patch["root"] == {"readonly": True}
    assert "export oci: cannot express hidden path /root" in r.stderr
    only = enforcer("export", "-f", "oci", "--seccomp-only", "--seccomp-flags", str(policy))
    seccomp = json.loads(only.stdout)
    assert set(seccomp) == {"defaultAction", "defaultErrnoRet", "architectures", "flags",
                            "syscalls"}
    sock = next(e for e in seccomp["syscalls"] if e["names"] == ["socket"])
    assert sock["args"] == [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]


def test_export_kubernetes_writes_manifests_and_profile(tmp_path: Path, policy: Path) -> None:
    out = tmp_path / "k8s.yaml"
    r = enforcer("export", "-f", "kubernetes", str(policy), "-o", str(out), "--image", "app:1")
    assert r.returncode == 0, r.stderr
    assert "kind: Pod" in out.read_text() and "image: app:1" in out.read_text()
    profile = json.loads((tmp_path / "k8s.seccomp.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "export kubernetes: cannot express resources.pids.max" in r.stderr


def test_export_systemd(policy: Path) -> None:
    r = enforcer("export", "-f", "systemd", str(policy))
    assert r.returncode == 0, r.stderr
    assert "[Service]\n" in r.stdout and "SystemCallFilter=read write exit_group\n" in r.stdout
    assert "export systemd: cannot express argument conditions of socket" in r.stderr


def test_export_bpf_and_pfc_match_the_compiler(tmp_path: Path, policy: Path) -> None:
    from enforcer.compile.seccomp import export_bpf
    from enforcer.policy.loader import load_policy

    out = tmp_path / "filter.bpf"
    r = enforcer("export", "-f", "bpf", str(policy), "-o", str(out))
    assert r.returncode == 0, r.stderr
    raw = out.read_bytes()
    assert len(raw) % 8 == 0 and raw == export_bpf(load_policy(str(policy)))
    pfc = enforcer("export", "-f", "pfc", str(policy))
    assert pfc.returncode == 0 and "if ($syscall == 41)" in pfc.stdout  # socket on x86_64


def test_export_of_an_invalid_policy_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsyscalls:\n  default: explode\n")
    out = tmp_path / "out.json"
    r = enforcer("export", "-f", "oci", str(bad), "-o", str(out))
    assert r.returncode == 1
    assert "bad.yaml:3:" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
