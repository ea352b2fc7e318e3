"""enforcer.emit.oci: the OCI linux.seccomp object and the config.json patch."""

from __future__ import annotations

from enforcer.emit.oci import merge_patch, oci_patch, oci_seccomp, oci_seccomp_checked
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
from tests.emit_helpers import ALLOW, ENOSYS, EPERM, KILL, arg, errno, make_policy, rule


def test_default_errno_and_native_arch_only() -> None:
    out = oci_seccomp(make_policy([rule("read"), rule("write")]), machine="x86_64")
    assert out["defaultAction"] == "SCMP_ACT_ERRNO"
    assert out["defaultErrnoRet"] == EPERM
    assert out["architectures"] == ["SCMP_ARCH_X86_64"]
    # runc < 1.2 refuses any flags: only on request.
    assert "flags" not in out
    assert oci_seccomp(make_policy([rule("read")]), with_flags=True)["flags"] == [
        "SECCOMP_FILTER_FLAG_LOG"]
    assert out["syscalls"][0] == {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}


def test_named_architectures_and_no_log_flag() -> None:
    p = make_policy([rule("read")], sc_architectures=("native", "x86", "x32"),
                    sc_log_denials=False)
    out = oci_seccomp(p, machine="x86_64", with_flags=True)
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert "flags" not in out  # log_denials is off


def test_masked_eq_puts_mask_in_value_and_value_in_value_two() -> None:
    clone_newuser_newns = 0x10000000 | 0x00020000
    p = make_policy([rule("clone", errno(EPERM),
                          arg(0, "masked_eq", clone_newuser_newns, mask=clone_newuser_newns)),
                     rule("read")], default=ALLOW)
    entries = oci_seccomp(p)["syscalls"]
    clone = next(e for e in entries if e["names"] == ["clone"])
    assert clone["args"] == [{"index": 0, "value": clone_newuser_newns,
                              "valueTwo": clone_newuser_newns, "op": "SCMP_CMP_MASKED_EQ"}]
    assert clone["action"] == "SCMP_ACT_ERRNO" and clone["errnoRet"] == EPERM
    # `read` has the default action (allow): no entry for it.
    assert all(e["names"] != ["read"] for e in entries)


def test_64bit_values_survive() -> None:
    p = make_policy([rule("personality", ALLOW, arg(0, "eq", 0xFFFFFFFF)),
                     rule("mmap", ALLOW, arg(2, "le", 0xFFFF_FFFF_FFFF_FFFE))])
    entries = oci_seccomp(p)["syscalls"]
    assert entries[0]["args"][0]["value"] == 0xFFFFFFFF
    assert entries[1]["args"][0]["value"] == 0xFFFF_FFFF_FFFF_FFFE
    assert entries[1]["args"][0]["op"] == "SCMP_CMP_LE"


def test_clone3_gets_enosys_when_the_default_blocks() -> None:
    entries = oci_seccomp(make_policy([rule("read")]))["syscalls"]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS} in entries
    allowed = oci_seccomp(make_policy([rule("clone3")]))["syscalls"]
    assert [e for e in allowed if "clone3" in e["names"]] == [
        {"names": ["clone3"], "action": "SCMP_ACT_ALLOW"}]


def test_audit_mode_turns_blocking_actions_into_log() -> None:
    p = make_policy([rule("read"), rule("ptrace", KILL)], default=errno(EPERM), mode=Mode.AUDIT)
    out = oci_seccomp(p)
    assert out["defaultAction"] == "SCMP_ACT_LOG"
    assert "defaultErrnoRet" not in out
    actions = {n: e["action"] for e in out["syscalls"] for n in e["names"]}
    # ptrace and clone3 now share the default (log): no entries of their own.
    assert actions == {"read": "SCMP_ACT_ALLOW"}
    p = make_policy([rule("ptrace", KILL), rule("mount", errno(EPERM))], default=ALLOW,
                    mode=Mode.AUDIT)
    out = oci_seccomp(p)
    assert out["defaultAction"] == "SCMP_ACT_ALLOW"
    assert out["syscalls"] == [{"names": ["ptrace", "mount"], "action": "SCMP_ACT_LOG"}]


def test_grouping_keeps_order_and_splits_on_action_change() -> None:
    p = make_policy([rule("read"), rule("ptrace", KILL), rule("write"), rule("kexec_load", KILL)],
                    default=errno(EPERM))
    entries = oci_seccomp(p)["syscalls"]
    assert [e["names"] for e in entries] == [["read"], ["ptrace"], ["write"], ["kexec_load"],
                                             ["clone3"]]
    assert entries[1]["action"] == "SCMP_ACT_KILL_PROCESS"


def test_same_index_twice_allow_rule_is_left_out_and_reported() -> None:
    p = make_policy([rule("socket", ALLOW, arg(0, "ge", 2), arg(0, "le", 10))],
                    sc_log_denials=False)
    out, lines = oci_seccomp_checked(p)
    assert all("socket" not in e["names"] for e in out["syscalls"])
    assert len(lines) == 1 and lines[0].startswith("export oci: cannot express syscall socket")
    assert "left out" in lines[0]


def test_same_index_twice_blocking_rule_is_kept_and_reported() -> None:
    p = make_policy([rule("socket", errno(EPERM), arg(0, "ge", 2), arg(0, "le", 10))], default=ALLOW)
    out, lines = oci_seccomp_checked(p, with_flags=True)
    assert any(e["names"] == ["socket"] and len(e["args"]) == 2 for e in out["syscalls"])
    assert "blocks more" in lines[0]


def test_unknown_action_other_than_enosys_is_reported() -> None:
    p = make_policy([rule("read")], sc_unknown_action=errno(EPERM))
    out, lines = oci_seccomp_checked(p, with_flags=True)
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM} in out["syscalls"]
    assert any("syscalls.unknown" in line and "ENOSYS" in line for line in lines)


def test_patch_full_policy() -> None:
    p = make_policy(
        [rule("read")],
        capabilities=CapabilityPolicy(keep=frozenset({10, 0}), ambient=frozenset({10})),
        no_new_privileges=True,
        filesystem=FilesystemPolicy(
            read_only_root=True, read_only_paths=("/etc",),
            tmpfs=(TmpfsMount("/tmp", size=64 << 20, mode=0o1777, options=("nosuid", "nodev")),),
            masked_paths=("/proc/kcore",), hidden_paths=("/root",)),
        resources=ResourcePolicy(memory_max=256 << 20, memory_swap_max=0, pids_max=128,
                                 cpu_quota_us=150_000, cpu_period_us=100_000, io_weight=100,
                                 io_devices=(IoDeviceLimit("8:0", read_bps=10 << 20),)),
        rlimits=(Rlimit("NOFILE", 1024, 4096), Rlimit("NPROC", -1, -1)),
        user=UserPolicy(uid=1000, gid=1000, groups=(1000, 27)),
        namespaces=("mount", "net"),
    )
    patch, lines = oci_patch(p)
    caps = patch["process"]["capabilities"]
    # A non-root user holds only its ambient list; the kept set bounds it.
    assert caps["bounding"] == ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]
    for key in ("effective", "permitted", "inheritable", "ambient"):
        assert caps[key] == ["CAP_NET_BIND_SERVICE"]
    assert patch["process"]["noNewPrivileges"] is True
    assert patch["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096},
        {"type": "RLIMIT_NPROC", "soft": 2**64 - 1, "hard": 2**64 - 1}]
    assert patch["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 27]}
    assert patch["root"] == {"readonly": True}
    assert patch["mounts"] == [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                "options": ["nosuid", "nodev", "mode=1777", "size=67108864"]}]
    linux = patch["linux"]
    assert linux["readonlyPaths"] == ["/etc"]
    assert linux["maskedPaths"] == ["/proc/kcore", "/root"]
    assert linux["resources"]["memory"] == {"limit": 256 << 20, "swap": 256 << 20}
    assert linux["resources"]["pids"] == {"limit": 128}
    assert linux["resources"]["cpu"] == {"quota": 150_000, "period": 100_000}
    assert linux["resources"]["blockIO"] == {
        # io weight 100 (the v2 default) is blkio weight 500 (the v1 default):
        # enforcer/kernel/cgroup.py; `enforcer run` writes the same 500.
        "weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 10 << 20}]}
    assert linux["namespaces"] == [{"type": "mount"}, {"type": "network"}]
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    # The hidden path and (without --seccomp-flags) the log flag are all OCI
    # cannot say exactly.
    assert len(lines) == 2, lines
    assert "log_denials" in lines[0] and "runc before 1.2" in lines[0]
    assert "hidden path /root" in lines[1]
    patch, lines = oci_patch(p, with_flags=True)
    assert patch["linux"]["seccomp"]["flags"] == ["SECCOMP_FILTER_FLAG_LOG"]
    assert len(lines) == 1


def test_relative_caps_resolved_against_docker_defaults_and_reported() -> None:
    p = make_policy(capabilities=CapabilityPolicy(drop=frozenset({13}), add=frozenset({12})))
    patch, lines = oci_patch(p)
    bounding = patch["process"]["capabilities"]["bounding"]
    assert "CAP_NET_RAW" not in bounding and "CAP_NET_ADMIN" in bounding
    assert "CAP_CHOWN" in bounding
    assert any("drop/add" in line for line in lines)


def test_writable_paths_and_unresolvable_device_are_reported() -> None:
    p = make_policy(filesystem=FilesystemPolicy(read_only_root=True, writable_paths=("/var/lib/app",)),
                    resources=ResourcePolicy(io_devices=(IoDeviceLimit("/dev/nonexistent-disk",
                                                                       read_bps=1),)))
    patch, lines = oci_patch(p)
    assert any("writable path /var/lib/app" in line for line in lines)
    assert any("/dev/nonexistent-disk" in line for line in lines)
    assert "blockIO" not in patch["linux"].get("resources", {})


def test_merge_patch_keeps_namespace_paths_and_replaces_mounts() -> None:
    config = {"process": {"args": ["sh"], "capabilities": {"bounding": ["CAP_KILL"]}},
              "mounts": [{"destination": "/proc", "type": "proc"},
                         {"destination": "/tmp", "type": "bind"}],
              "linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}]}}
    patch, _ = oci_patch(make_policy(namespaces=("net", "pid"), filesystem=FilesystemPolicy(
        tmpfs=(TmpfsMount("/tmp"),)), capabilities=CapabilityPolicy(keep=frozenset({5}))))
    merged = merge_patch(config, patch)
    assert merged["process"]["args"] == ["sh"]
    assert merged["process"]["capabilities"]["bounding"] == ["CAP_KILL"]
    assert merged["linux"]["namespaces"] == [{"type": "network", "path": "/run/netns/x"},
                                             {"type": "pid"}]
    assert [m["destination"] for m in merged["mounts"]] == ["/proc", "/tmp"]
    assert merged["mounts"][1]["type"] == "tmpfs"


def test_patch_leaves_capabilities_alone_when_the_policy_is_silent() -> None:
    patch, _ = oci_patch(make_policy([rule("read")]))
    assert "capabilities" not in patch["process"]


def test_patch_in_audit_mode_is_seccomp_only() -> None:
    p = make_policy([rule("read")], mode=Mode.AUDIT,
                    capabilities=CapabilityPolicy(keep=frozenset({10})),
                    filesystem=FilesystemPolicy(read_only_root=True),
                    resources=ResourcePolicy(pids_max=10), user=UserPolicy(uid=1, gid=1),
                    namespaces=("net",))
    patch, lines = oci_patch(p)
    assert set(patch) == {"process", "linux"}
    assert patch["process"] == {"noNewPrivileges": True}
    assert set(patch["linux"]) == {"seccomp"}
    assert patch["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_LOG"
    assert any("audit mode" in line for line in lines)
