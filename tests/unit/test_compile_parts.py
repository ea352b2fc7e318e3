"""Capabilities, mounts, cgroups, user, rlimits and the assembled Plan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enforcer.apply.cgroups import v1_files, v2_files
from enforcer.compile import compile_policy, policy_hash, resolve_user
from enforcer.compile.caps import DOCKER_DEFAULT_CAPS, compile_caps, mask_of
from enforcer.compile.cgroups import compile_cgroups, resolve_device
from enforcer.compile.mounts import DEFAULT_MASKED_PATHS, compile_mounts
from enforcer.errors import CompileError
from enforcer.kernel.cgroup import bfq_weight, blkio_weight
from enforcer.plan import CgroupPlan, IoDevicePlan, plan_from_json
from enforcer.kernel.capabilities import CAPABILITIES
from enforcer.policy.model import (
    BindMount,
    CapabilityPolicy,
    FilesystemPolicy,
    IoDeviceLimit,
    Mode,
    Policy,
    ResourcePolicy,
    Rlimit,
    TmpfsMount,
    UserPolicy,
)

from tests.compile_helpers import rule, syscall_policy

NET_BIND_SERVICE, SYS_ADMIN, CHOWN = 10, 21, 0

# -- capabilities -----------------------------------------------------------------


def test_keep_as_root_has_no_ambient() -> None:
    p = compile_caps(CapabilityPolicy(keep=frozenset({NET_BIND_SERVICE})), uid=None)
    assert p is not None and not p.relative
    assert p.bounding == p.permitted == p.effective == p.inheritable == 1 << 10
    assert p.ambient == 0
    assert compile_caps(CapabilityPolicy(keep=frozenset({10})), uid=0).ambient == 0  # type: ignore[union-attr]


def test_non_root_holds_only_the_explicit_ambient_list() -> None:
    """Hole 14: kept capabilities are a non-root user's ceiling (bounding),
    not what it holds; only `ambient` is raised, and permitted, effective and
    inheritable are exactly that (no_new_privs then caps file capabilities)."""
    p = compile_caps(CapabilityPolicy(keep=frozenset({NET_BIND_SERVICE, CHOWN}),
                                      ambient=frozenset({NET_BIND_SERVICE})), uid=1000)
    assert p is not None and p.bounding == (1 << 10) | 1
    assert p.ambient == p.permitted == p.effective == p.inheritable == 1 << 10


def test_non_root_without_ambient_holds_nothing() -> None:
    p = compile_caps(CapabilityPolicy(keep=frozenset({CHOWN, 6, 7})), uid=1000)
    assert p is not None and p.bounding == 1 | 1 << 6 | 1 << 7
    assert (p.ambient, p.permitted, p.effective, p.inheritable) == (0, 0, 0, 0)


def test_keep_nothing_drops_everything() -> None:
    p = compile_caps(CapabilityPolicy(keep=frozenset()), uid=None)
    assert p is not None and (p.bounding, p.permitted, p.effective, p.ambient) == (0, 0, 0, 0)


def test_relative() -> None:
    p = compile_caps(CapabilityPolicy(drop=frozenset({CHOWN}), add=frozenset({SYS_ADMIN})), None)
    assert p is not None and p.relative
    assert p.drop == 1 and p.add == 1 << 21
    assert p.bounding == (mask_of(DOCKER_DEFAULT_CAPS) & ~1) | (1 << 21)
    assert p.ambient == 0 and p.inheritable == 0


def test_no_capability_rules_means_no_plan() -> None:
    assert compile_caps(CapabilityPolicy(), None) is None


def test_docker_default_caps() -> None:
    names = {k for k, v in CAPABILITIES.items() if v in DOCKER_DEFAULT_CAPS}
    assert len(names) == 14 and "CAP_NET_RAW" in names and "CAP_SYS_ADMIN" not in names


# -- mounts ---------------------------------------------------------------------------


def kinds(ops: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(o.kind, o.path) for o in ops]


def test_mount_order() -> None:
    ops = compile_mounts(FilesystemPolicy(
        read_only_root=True, read_only_paths=("/etc",), writable_paths=("/var/lib/app", "/var"),
        tmpfs=(TmpfsMount("/tmp", size=1 << 20, mode=0o1777, options=("nosuid",)),),
        hidden_paths=("/root",), masked_paths=("/proc/kcore",)))
    assert kinds(ops) == [
        ("make_private", "/"), ("readonly", "/"), ("readonly", "/etc"), ("writable", "/var"),
        ("tmpfs", "/tmp"), ("hide", "/root"), ("mask", "/proc/kcore"),
        ("writable", "/var/lib/app")]
    tmpfs = ops[4]
    assert (tmpfs.size, tmpfs.mode, tmpfs.options) == (1 << 20, 0o1777, ("nosuid",))


def test_children_come_after_parents() -> None:
    ops = compile_mounts(FilesystemPolicy(read_only_paths=("/a/b/c", "/a"),
                                          writable_paths=("/a/b",)))
    assert kinds(ops)[1:] == [("readonly", "/a"), ("writable", "/a/b"), ("readonly", "/a/b/c")]


def test_default_masked_set_is_optional_and_user_paths_are_not() -> None:
    ops = compile_mounts(FilesystemPolicy(masked_paths=("default", "/proc/kcore", "/srv/x")))
    masks = {o.path: o.optional for o in ops if o.kind == "mask"}
    assert set(DEFAULT_MASKED_PATHS) <= set(masks)
    assert all(masks[p] for p in DEFAULT_MASKED_PATHS)
    assert masks["/srv/x"] is False
    assert len([o for o in ops if o.path == "/proc/kcore"]) == 1


def test_default_masked_set_expanded_by_the_loader_stays_optional() -> None:
    # The loader hands the compiler the expanded list, not the word.
    ops = compile_mounts(FilesystemPolicy(masked_paths=DEFAULT_MASKED_PATHS + ("/srv/y",)))
    masks = {o.path: o.optional for o in ops if o.kind == "mask"}
    assert all(masks[p] for p in DEFAULT_MASKED_PATHS) and masks["/srv/y"] is False
    assert "/proc/timer_stats" in masks  # gone since Linux 4.11: must be optional


def test_shipped_masked_paths_are_optional_where_they_may_be_missing() -> None:
    loader = pytest.importorskip("enforcer.policy.loader")
    from enforcer.compile import compile_policy as comp

    for name in loader.shipped_names():
        plan = comp(loader.load_policy(name))
        for op in plan.mounts:
            if op.kind == "mask" and not op.optional:
                assert op.path not in DEFAULT_MASKED_PATHS, (name, op.path)


def test_duplicates_are_merged() -> None:
    ops = compile_mounts(FilesystemPolicy(read_only_root=True, read_only_paths=("/", "/etc", "/etc/")))
    assert kinds(ops) == [("make_private", "/"), ("readonly", "/"), ("readonly", "/etc")]


@pytest.mark.parametrize("fs", [
    FilesystemPolicy(read_only_paths=("/data",), writable_paths=("/data",)),
    FilesystemPolicy(tmpfs=(TmpfsMount("/x"),), hidden_paths=("/x",)),
    FilesystemPolicy(read_only_root=True, writable_paths=("/",)),
    FilesystemPolicy(tmpfs=(TmpfsMount("/x", size=1), TmpfsMount("/x", size=2))),
])
def test_conflicts_are_errors(fs: FilesystemPolicy) -> None:
    with pytest.raises(CompileError, match="filesystem"):
        compile_mounts(fs)


def test_relative_path_is_an_error() -> None:
    with pytest.raises(CompileError, match="absolute"):
        compile_mounts(FilesystemPolicy(read_only_paths=("etc",)))


def test_rootfs_prefixes_paths_and_pivots_last() -> None:
    ops = compile_mounts(FilesystemPolicy(rootfs="/srv/root", read_only_root=True,
                                          tmpfs=(TmpfsMount("/tmp"),)))
    # A rootfs gets /dev, /proc and a read-only /sys of its own (depth 1,
    # after the read-only root, before anything below them).
    assert kinds(ops) == [("make_private", "/"), ("bind", "/srv/root"),
                          ("readonly", "/srv/root"), ("devices", "/srv/root/dev"),
                          ("proc", "/srv/root/proc"), ("sysfs", "/srv/root/sys"),
                          ("tmpfs", "/srv/root/tmp"), ("pivot_root", "/srv/root")]
    assert ops[1].source == "/srv/root"


def test_rootfs_keeps_the_policys_own_dev() -> None:
    ops = compile_mounts(FilesystemPolicy(rootfs="/srv/root", tmpfs=(TmpfsMount("/dev"),)))
    assert ("tmpfs", "/srv/root/dev") in kinds(ops)
    assert ("devices", "/srv/root/dev") not in kinds(ops)


def test_bind_targets_follow_the_tmpfs_above_them() -> None:
    ops = compile_mounts(FilesystemPolicy(
        read_only_root=True, tmpfs=(TmpfsMount("/tmp"),),
        bind=(BindMount("/srv/conf", "/tmp/app/conf", read_only=True),
              BindMount("/srv/data", "/data"))))
    assert kinds(ops) == [("make_private", "/"), ("readonly", "/"), ("bind", "/data"),
                          ("tmpfs", "/tmp"), ("bind", "/tmp/app/conf")]
    assert ops[2].source == "/srv/data" and ops[2].options == ()
    assert ops[4].source == "/srv/conf" and ops[4].options == ("ro",)


def test_no_filesystem_rules_no_mounts() -> None:
    assert compile_mounts(FilesystemPolicy()) == []


def test_default_masked_paths_that_are_not_optional_exist_here() -> None:
    # The optional flag is what makes a missing path harmless; check that at
    # least the core ones exist on a normal Linux so masking is real.
    assert os.path.exists("/proc/kcore") or os.path.exists("/proc/timer_list")


# -- cgroups --------------------------------------------------------------------------


def test_cgroup_limits_are_stored_once_in_the_policys_units() -> None:
    cg = compile_cgroups(ResourcePolicy(memory_max=256 << 20, memory_swap_max=64 << 20,
                                        pids_max=128, cpu_quota_us=150_000, cpu_period_us=100_000,
                                        io_weight=200))
    assert cg == CgroupPlan(memory_max=256 << 20, memory_swap_max=64 << 20, pids_max=128,
                            cpu_quota_us=150_000, cpu_period_us=100_000, io_weight=200)


def test_cgroup_files_rendered_by_the_drivers() -> None:
    cg = compile_cgroups(ResourcePolicy(memory_max=256 << 20, memory_swap_max=64 << 20,
                                        pids_max=128, cpu_quota_us=150_000, cpu_period_us=100_000,
                                        io_weight=200))
    assert v2_files(cg) == {"memory.max": (str(256 << 20),), "memory.swap.max": (str(64 << 20),),
                            "pids.max": ("128",), "cpu.max": ("150000 100000",),
                            "io.weight": ("default 200",)}
    assert v1_files(cg) == {
        "memory": {"memory.limit_in_bytes": (str(256 << 20),),
                   "memory.memsw.limit_in_bytes": (str(320 << 20),)},
        "pids": {"pids.max": ("128",)},
        "cpu": {"cpu.cfs_period_us": ("100000",), "cpu.cfs_quota_us": ("150000",)},
        "blkio": {"blkio.weight": ("1000",)},
    }
    # the memory limit is written before memsw (the kernel keeps memsw >= limit)
    assert list(v1_files(cg)["memory"]) == ["memory.limit_in_bytes",
                                            "memory.memsw.limit_in_bytes"]


def test_swap_without_memory_on_v1_is_noted() -> None:
    notes: list[str] = []
    cg = compile_cgroups(ResourcePolicy(memory_swap_max=0), notes)
    assert v2_files(cg) == {"memory.swap.max": ("0",)} and "memory" not in v1_files(cg)
    assert notes and "swap" in notes[0]


def test_io_weight_scales_map_default_to_default() -> None:
    """The policy's weight is on the cgroup v2 scale (1..10000, default 100);
    v1/OCI blkio weights run 10..1000 with default 500 and BFQ's 1..1000
    with default 100 (see enforcer/kernel/cgroup.py)."""
    assert blkio_weight(100) == 500 and blkio_weight(1) == 10 and blkio_weight(10000) == 1000
    assert blkio_weight(200) == 1000 and blkio_weight(50) == 250
    assert bfq_weight(100) == 100 and bfq_weight(1) == 1 and bfq_weight(10000) == 1000
    assert bfq_weight(50) == 50 and bfq_weight(5050) == 550


def test_io_devices(tmp_path: Path) -> None:
    cg = compile_cgroups(ResourcePolicy(io_devices=(
        IoDeviceLimit("8:0", read_bps=10 << 20, write_iops=1000),
        IoDeviceLimit("8:16", write_bps=5))))
    assert cg.io_devices == (IoDevicePlan("8:0", read_bps=10 << 20, write_iops=1000),
                             IoDevicePlan("8:16", write_bps=5))
    # one line per device: each is its own write(2) (apply/cgroups/base.py)
    assert v2_files(cg)["io.max"] == (f"8:0 rbps={10 << 20} wiops=1000", "8:16 wbps=5")
    assert v1_files(cg)["blkio"] == {"blkio.throttle.read_bps_device": (f"8:0 {10 << 20}",),
                                     "blkio.throttle.write_bps_device": ("8:16 5",),
                                     "blkio.throttle.write_iops_device": ("8:0 1000",)}


def _a_block_device() -> str | None:
    for name in sorted(os.listdir("/sys/class/block")):
        path = f"/dev/{name}"
        if os.path.exists(path):
            return path
    return None


def test_dev_path_resolved_to_major_minor() -> None:
    dev = _a_block_device()
    if dev is None:
        pytest.skip("no block device node here")
    st = os.stat(dev)
    assert resolve_device(dev) == f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def test_bad_devices() -> None:
    with pytest.raises(CompileError, match="not a block device"):
        resolve_device("/dev/null")
    with pytest.raises(CompileError, match="No such file"):
        resolve_device("/dev/does-not-exist")
    with pytest.raises(CompileError, match="neither"):
        resolve_device("sda")
    with pytest.raises(CompileError, match="twice"):
        compile_cgroups(ResourcePolicy(io_devices=(IoDeviceLimit("8:0", read_bps=1),
                                                   IoDeviceLimit("8:0", write_bps=1))))


# -- user, rlimits -------------------------------------------------------------------


def test_user_names_resolved_in_rootfs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    u = resolve_user(UserPolicy(user_name="app"), str(tmp_path))
    assert u is not None and (u.uid, u.gid) == (1234, 4321)
    u = resolve_user(UserPolicy(user_name="app", group_name="staff", groups=(7,)), str(tmp_path))
    assert u is not None and (u.uid, u.gid, u.groups) == (1234, 50, (7,))
    with pytest.raises(CompileError, match="no user 'nope'"):
        resolve_user(UserPolicy(user_name="nope"), str(tmp_path))


def test_numeric_user_without_gid() -> None:
    u = resolve_user(UserPolicy(uid=0), None)
    assert u is not None and u.gid == 0
    u = resolve_user(UserPolicy(uid=54321), None)
    assert u is not None and u.gid == 54321


def test_rlimits() -> None:
    p = Policy(name="r", rlimits=(Rlimit("NOFILE", 1024, 4096), Rlimit("core", 0, 0),
                                   Rlimit("NPROC", (1 << 64) - 1, -1)))
    plan = compile_policy(p)
    assert [(r.resource, r.soft, r.hard) for r in plan.rlimits] == [
        ("NOFILE", 1024, 4096), ("CORE", 0, 0), ("NPROC", -1, -1)]
    with pytest.raises(CompileError, match="soft"):
        compile_policy(Policy(name="r", rlimits=(Rlimit("NOFILE", 10, 5),)))
    with pytest.raises(CompileError, match="not a resource limit"):
        compile_policy(Policy(name="r", rlimits=(Rlimit("BOGUS", 1, 1),)))


# -- the whole Plan ------------------------------------------------------------------


def full_policy(mode: Mode = Mode.ENFORCE) -> Policy:
    base = syscall_policy(rule("read"), rule("write"), name="full")
    return Policy(
        name="full", mode=mode, syscalls=base.syscalls,
        capabilities=CapabilityPolicy(keep=frozenset({NET_BIND_SERVICE}),
                                      ambient=frozenset({NET_BIND_SERVICE})),
        filesystem=FilesystemPolicy(read_only_root=True, tmpfs=(TmpfsMount("/tmp"),),
                                    masked_paths=("default",)),
        resources=ResourcePolicy(memory_max=1 << 28, pids_max=64),
        rlimits=(Rlimit("NOFILE", 64, 64),), user=UserPolicy(uid=1000, gid=1000),
        namespaces=("pid",))


def test_plan_round_trips_through_json() -> None:
    plan = compile_policy(full_policy())
    assert plan_from_json(plan.to_json()) == plan
    assert plan.mode == "enforce" and plan.policy_name == "full"
    assert plan.capabilities is not None and plan.capabilities.ambient == 1 << 10
    assert plan.namespaces == ("mount", "pid")  # added: mounts need a private namespace
    assert any("added `mount`" in n for n in plan.notes)
    assert plan.user is not None and plan.user.uid == 1000
    assert plan.seccomp is not None and plan.seccomp.filter.bpf


def test_audit_plan_leaves_out_what_cannot_log() -> None:
    plan = compile_policy(full_policy(), mode="audit")
    assert plan.mode == "audit"
    assert plan.capabilities is None and plan.mounts == () and plan.cgroup.empty
    assert plan.rlimits == () and plan.user is None and plan.namespaces == ()
    assert plan.no_new_privileges  # lets a non-root workload load the filter
    assert [n for n in plan.notes if n.startswith("audit mode")] == [
        "audit mode: capabilities, mounts, cgroup limits, rlimits, user, namespaces are not "
        "applied; syscalls that the policy blocks are logged (SCMP_ACT_LOG) and allowed"]
    assert not any("added `mount`" in n for n in plan.notes)
    assert plan.seccomp is not None and plan.seccomp.default_action == "log"
    assert plan_from_json(plan.to_json()) == plan


def test_relative_add_for_non_root_user_is_noted() -> None:
    p = Policy(name="r", capabilities=CapabilityPolicy(add=frozenset({NET_BIND_SERVICE})),
               user=UserPolicy(uid=1000, gid=1000))
    assert any("does not survive execve" in n for n in compile_policy(p).notes)
    p = Policy(name="r", capabilities=CapabilityPolicy(keep=frozenset({NET_BIND_SERVICE})),
               user=UserPolicy(uid=1000, gid=1000))
    assert not any("execve" in n for n in compile_policy(p).notes)


def test_policy_hash() -> None:
    a = Policy(name="a", sources=(("/x.yaml", "1" * 64),))
    b = Policy(name="a", sources=(("/y.yaml", "1" * 64),))
    c = Policy(name="a", sources=(("/x.yaml", "2" * 64),))
    assert policy_hash(a) == policy_hash(b) != policy_hash(c)
    assert policy_hash(Policy(name="a")) != policy_hash(Policy(name="b"))


def test_oci_seccomp_is_filled_by_the_compiler() -> None:
    from enforcer.emit.oci import oci_seccomp

    policy = full_policy()
    plan = compile_policy(policy)
    assert plan.seccomp is not None
    assert plan.seccomp.oci["defaultAction"] == "SCMP_ACT_ERRNO"
    assert plan.seccomp.oci == oci_seccomp(policy)  # what `export` writes
