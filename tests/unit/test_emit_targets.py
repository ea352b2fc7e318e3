"""enforcer.emit.docker / kubernetes / systemd: content and what each
target reports it cannot express."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from enforcer.emit.common import cap_name
from enforcer.kernel.arch import SCMP_ARCH, native_arch
from enforcer.emit.docker import docker_export
from enforcer.emit.kubernetes import k8s_name, kubernetes_export
from enforcer.emit.systemd import SYSTEMD_ARCH, SYSTEMD_DEFAULT_SET, systemd_export
from enforcer.policy.model import (
    CapabilityPolicy,
    FilesystemPolicy,
    IoDeviceLimit,
    Mode,
    ResourcePolicy,
    Rlimit,
    TmpfsMount,
    UserPolicy,
)
from enforcer.policy.syscalls import ARCHITECTURES
from tests.emit_helpers import ALLOW, ENOSYS, EPERM, KILL, arg, errno, make_policy, rule

FULL = dict(
    capabilities=CapabilityPolicy(keep=frozenset({10}), ambient=frozenset({10})),
    filesystem=FilesystemPolicy(
        read_only_root=True, read_only_paths=("/etc",), writable_paths=("/var/lib/app",),
        tmpfs=(TmpfsMount("/tmp", size=64 << 20, mode=0o1777,
                          options=("nosuid", "nodev", "noexec")),),
        masked_paths=("/proc/kcore", "/proc/sys"), hidden_paths=("/root",)),
    resources=ResourcePolicy(memory_max=256 << 20, memory_swap_max=64 << 20, pids_max=128,
                             cpu_quota_us=150_000, io_weight=100,
                             io_devices=(IoDeviceLimit("8:0", read_bps=10 << 20),)),
    rlimits=(Rlimit("NOFILE", 1024, 4096), Rlimit("CORE", 0, 0)),
    user=UserPolicy(uid=1000, gid=1000, groups=(27,)),
    namespaces=("mount", "net", "ipc", "uts", "pid"),
)


def _pairs(flags: list[str]) -> list[tuple[str, str]]:
    """--flag value pairs (single flags get '')."""
    out, i = [], 0
    while i < len(flags):
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            out.append((flags[i], flags[i + 1]))
            i += 2
        else:
            out.append((flags[i], ""))
            i += 1
    return out


def test_tables_cover_every_architecture_the_policy_accepts() -> None:
    for arch in ARCHITECTURES:
        assert arch in SCMP_ARCH and arch in SYSTEMD_ARCH
    assert native_arch("x86_64") == "x86_64" and native_arch("aarch64") == "aarch64"
    with pytest.raises(ValueError, match="vax"):
        native_arch("vax")
    assert cap_name(21) == "CAP_SYS_ADMIN" and cap_name(21, "") == "SYS_ADMIN"


# -- docker ---------------------------------------------------------------


def test_docker_flags_for_a_full_policy() -> None:
    export, lines = docker_export(make_policy([rule("read")], **FULL))
    pairs = _pairs(export.flags)
    assert pairs[:2] == [("--cap-drop", "ALL"), ("--cap-add", "NET_BIND_SERVICE")]
    for expected in [("--read-only", ""),
                     ("--tmpfs", "/tmp:rw,nosuid,nodev,noexec,mode=1777,size=67108864"),
                     ("--memory", str(256 << 20)), ("--memory-swap", str(320 << 20)),
                     ("--pids-limit", "128"), ("--cpus", "1.5"), ("--blkio-weight", "500"),
                     ("--device-read-bps", f"/dev/block/8:0:{10 << 20}"),
                     ("--ulimit", "nofile=1024:4096"), ("--ulimit", "core=0:0"),
                     ("--security-opt", "no-new-privileges"), ("--user", "1000:1000"),
                     ("--group-add", "27"), ("--network", "none")]:
        assert expected in pairs, (expected, pairs)
    text = "\n".join(lines)
    for what in ("read-only path /etc", "writable path /var/lib/app", "hidden path /root",
                 "masked path /proc/sys", "ambient capabilities"):
        assert f"export docker: cannot express {what}" in text, text
    assert "masked path /proc/kcore" not in text  # Docker masks it anyway
    assert export.run_flags("/p.json")[:2] == ["--security-opt", "seccomp=/p.json"]
    assert export.seccomp["defaultAction"] == "SCMP_ACT_ERRNO"


def test_docker_relative_caps_and_cpu_period() -> None:
    p = make_policy(capabilities=CapabilityPolicy(drop=frozenset({13}), add=frozenset({12})),
                    resources=ResourcePolicy(cpu_quota_us=50_000, cpu_period_us=200_000),
                    no_new_privileges=False)
    export, lines = docker_export(p)
    pairs = _pairs(export.flags)
    assert ("--cap-drop", "NET_RAW") in pairs and ("--cap-add", "NET_ADMIN") in pairs
    assert ("--cpu-period", "200000") in pairs and ("--cpu-quota", "50000") in pairs
    assert ("--security-opt", "no-new-privileges") not in pairs
    assert ("--cap-drop", "ALL") not in pairs


def test_docker_audit_mode_leaves_out_enforcement_and_says_so() -> None:
    p = make_policy([rule("read")], mode=Mode.AUDIT, **FULL)
    export, lines = docker_export(p)
    assert export.seccomp["defaultAction"] == "SCMP_ACT_LOG"
    assert "--read-only" not in export.flags and "--memory" not in export.flags
    assert any("audit mode" in line for line in lines)


# -- kubernetes --------------------------------------------------------------


def test_kubernetes_pod_security_context_and_resources() -> None:
    kube, lines = kubernetes_export(make_policy([rule("read")], name="web_server", **FULL))
    pod = kube.pod
    assert pod["metadata"]["name"] == "web-server"
    psc = pod["spec"]["securityContext"]
    assert psc["runAsUser"] == 1000 and psc["runAsGroup"] == 1000 and psc["runAsNonRoot"]
    assert psc["supplementalGroups"] == [27]
    assert psc["seccompProfile"] == {"type": "Localhost",
                                     "localhostProfile": "profiles/web-server.json"}
    (container,) = pod["spec"]["containers"]
    csc = container["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert container["resources"] == {"limits": {"memory": "256Mi", "cpu": "1500m"}}
    assert container["volumeMounts"] == [{"name": "tmpfs-0", "mountPath": "/tmp"}]
    assert pod["spec"]["volumes"] == [{"name": "tmpfs-0",
                                       "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    assert kube.seccomp_profile["kind"] == "SeccompProfile"
    assert "defaultErrnoRet" not in kube.seccomp_profile["spec"]  # not in the CRD
    text = "\n".join(lines)
    for what in ("resources.memory.swap", "resources.pids.max", "resources.io",
                 "rlimit NOFILE", "read-only path /etc", "hidden path /root",
                 "an isolated network namespace", "tmpfs /tmp options noexec"):
        assert f"export kubernetes: cannot express {what}" in text, (what, text)


def test_kubernetes_user_namespace_and_spo_errno_warning() -> None:
    kube, lines = kubernetes_export(make_policy([rule("read")], default=errno(13),
                                                namespaces=("user",)))
    assert kube.pod["spec"]["hostUsers"] is False
    assert any("default errno 13" in line for line in lines)
    assert k8s_name("_x_") == "x"


# -- systemd ------------------------------------------------------------------


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def test_systemd_allow_list_policy() -> None:
    p = make_policy([rule("read"), rule("write"), rule("clone3"),
                     rule("socket", ALLOW, arg(0, "eq", 2)), rule("ptrace", KILL)],
                    default=errno(EPERM), **FULL)
    text, lines = systemd_export(p)
    s = _settings(text)
    assert text.splitlines()[1] == "[Service]"
    assert s["SystemCallFilter"] == ["read write clone3"]
    assert s["SystemCallErrorNumber"] == ["EPERM"]
    assert s["SystemCallArchitectures"] == ["native"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ReadOnlyPaths"] == ["-/etc"] and s["ReadWritePaths"] == ["-/var/lib/app"]
    assert s["InaccessiblePaths"] == ["-/root -/proc/kcore -/proc/sys"]
    assert s["ProtectKernelTunables"] == ["yes"] and s["ProtectKernelLogs"] == ["yes"]
    assert s["TemporaryFileSystem"] == ["/tmp:mode=1777,nosuid,nodev,noexec,size=67108864"]
    assert s["MemoryMax"] == [str(256 << 20)] and s["MemorySwapMax"] == [str(64 << 20)]
    assert s["TasksMax"] == ["128"] and s["CPUQuota"] == ["150%"] and s["IOWeight"] == ["100"]
    assert s["IOReadBandwidthMax"] == [f"/dev/block/8:0 {10 << 20}"]
    assert s["LimitNOFILE"] == ["1024:4096"] and s["LimitCORE"] == ["0"]
    assert s["User"] == ["1000"] and s["Group"] == ["1000"] and s["SupplementaryGroups"] == ["27"]
    assert s["PrivateNetwork"] == ["yes"] and s["PrivateIPC"] == ["yes"]
    assert s["ProtectHostname"] == ["yes"] and s["PrivateMounts"] == ["yes"]
    assert s["ProtectKernelModules"] == ["yes"]
    text_lines = "\n".join(lines)
    for what in ("argument conditions of socket", "kill-process for ptrace in an allow-list",
                 "a pid namespace", "log_denials"):
        assert f"export systemd: cannot express {what}" in text_lines, (what, text_lines)


def test_systemd_deny_list_policy_with_errno_and_kill_suffixes() -> None:
    p = make_policy([rule("ptrace", KILL), rule("mount", errno(EPERM)),
                     rule("personality", errno(EPERM), arg(0, "ne", 0)),
                     rule("kexec_load", errno(ENOSYS)), rule("execve", errno(EPERM))],
                    default=ALLOW, sc_architectures=("native", "x86"))
    text, lines = systemd_export(p, machine="x86_64")
    s = _settings(text)
    assert s["SystemCallFilter"] == [
        "~ptrace:kill mount:EPERM personality:EPERM kexec_load:ENOSYS execve:EPERM"]
    assert s["SystemCallArchitectures"] == ["native x86"]
    assert "SystemCallErrorNumber" not in s
    joined = "\n".join(lines)
    assert "personality" in joined and "blocked whatever its arguments" in joined
    assert "blocking execve" in joined  # systemd's @default set


def test_systemd_audit_mode_logs_instead_of_filtering() -> None:
    p = make_policy([rule("read"), rule("write")], default=errno(EPERM), mode=Mode.AUDIT,
                    **FULL)
    text, lines = systemd_export(p)
    s = _settings(text)
    assert "SystemCallFilter" not in s
    assert s["SystemCallLog"] == ["~read write"]
    assert "MemoryMax" not in s and "CapabilityBoundingSet" not in s
    assert any("audit mode" in line for line in lines)


def test_systemd_keep_nothing_empties_the_bounding_set() -> None:
    text, _ = systemd_export(make_policy(capabilities=CapabilityPolicy(keep=frozenset())))
    assert "CapabilityBoundingSet=\n" in text and "AmbientCapabilities" not in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_default_set_matches_the_installed_systemd() -> None:
    out = subprocess.run(["systemd-analyze", "syscall-filter", "@default"],
                         capture_output=True, text=True, check=True).stdout
    installed = {line.strip() for line in out.splitlines()
                 if line.strip() and not line.strip().startswith(("#", "@"))}
    assert len(installed) > 30
    assert installed == SYSTEMD_DEFAULT_SET


def test_systemd_clone_namespace_guard_becomes_restrict_namespaces() -> None:
    ns_flags = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
    p = make_policy([rule("read"), rule("clone", ALLOW, arg(0, "masked_eq", 0, mask=ns_flags)),
                     rule("unshare")])
    text, lines = systemd_export(p)
    s = _settings(text)
    assert s["RestrictNamespaces"] == ["~mnt cgroup uts ipc user pid net"]
    assert "clone" in s["SystemCallFilter"][0].split()
    assert not any("argument conditions of clone" in line for line in lines)
    assert any("also restricts unshare" in line for line in lines)
    # Any other condition on clone is not a namespace guard.
    p = make_policy([rule("clone", ALLOW, arg(0, "masked_eq", 0, mask=0x100))])
    text, lines = systemd_export(p)
    assert "RestrictNamespaces" not in text
    assert any("argument conditions of clone" in line for line in lines)


# -- hole 14: a non-root user holds only its ambient capabilities ------------

DEFAULT_LIKE = CapabilityPolicy(keep=frozenset({0, 1, 6, 7, 10}))  # CHOWN DAC_OVERRIDE SETGID SETUID NBS


def test_every_target_says_a_non_root_user_holds_only_ambient_capabilities() -> None:
    """`extends: default` plus a non-root user: the Kubernetes export used to
    add all 14 kept capabilities with no warning. Now no target gives the
    user a capability the policy does not list as ambient, and those that
    cannot say `ambient` (Docker, Kubernetes) say so."""
    from enforcer.emit.oci import oci_patch

    p = make_policy([rule("read")], capabilities=DEFAULT_LIKE, user=UserPolicy(uid=999, gid=999))
    kube, lines = kubernetes_export(p)
    caps = kube.pod["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"]}
    assert any("kept capabilities a non-root user does not hold (CAP_CHOWN" in line for line in lines)
    docker, lines = docker_export(p)
    assert "--cap-add" not in docker.flags and "ALL" in docker.flags
    assert any("left out" in line and "CAP_SETUID" in line for line in lines)
    oci, _ = oci_patch(p)
    sets = oci["process"]["capabilities"]
    assert sets["bounding"] == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_SETGID", "CAP_SETUID",
                                "CAP_NET_BIND_SERVICE"]
    assert sets["effective"] == sets["permitted"] == sets["inheritable"] == sets["ambient"] == []
    text, _ = systemd_export(p)
    assert "AmbientCapabilities" not in text and "CapabilityBoundingSet=CAP_CHOWN" in text


def test_explicit_ambient_is_exported_and_warned_where_it_cannot_be() -> None:
    caps = CapabilityPolicy(keep=DEFAULT_LIKE.keep, ambient=frozenset({10}))
    p = make_policy([rule("read")], capabilities=caps, user=UserPolicy(uid=999, gid=999))
    kube, lines = kubernetes_export(p)
    assert kube.pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == [
        "NET_BIND_SERVICE"]
    assert any("ambient capabilities for a non-root user (CAP_NET_BIND_SERVICE)" in line
               and "never to ambient" in line for line in lines)
    text, _ = systemd_export(p)
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE\n" in text
    # As root nothing changes: the kept set is held, nothing is ambient.
    root = make_policy([rule("read")], capabilities=caps)
    kube, lines = kubernetes_export(root)
    assert len(kube.pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]) == 5
    assert not any("ambient" in line for line in lines)
