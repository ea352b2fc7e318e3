"""Unit tests of the apply side that need no privileges: kernel constants
against the kernel headers and libseccomp, the cgroup v2 driver against a
directory tree, the audit record parser, the command line, the messages."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess

import pytest

from enforcer import exitcodes
from enforcer.apply import _sys
from enforcer.apply.audit import AUDIT_SECCOMP, parse_messages
from enforcer.apply.cgroups import CgroupV1, CgroupV2, choose_driver
from enforcer.apply.cgroups import v2 as v2mod
from enforcer.apply.creds import check_ids, target_sets
from enforcer.apply.supervise import exit_code_for_failure, human_bytes, status_to_code
from enforcer.commands.run import UsageError, parse_argv
from enforcer.errors import ApplyError
from enforcer.plan import CapabilityPlan, CgroupPlan, IoDevicePlan, UserPlan

# -- constants ---------------------------------------------------------------

HEADER_CONSTANTS = {
    "CLONE_NEWNS": "linux/sched.h", "CLONE_NEWCGROUP": "linux/sched.h",
    "CLONE_NEWUTS": "linux/sched.h", "CLONE_NEWIPC": "linux/sched.h",
    "CLONE_NEWUSER": "linux/sched.h", "CLONE_NEWPID": "linux/sched.h",
    "CLONE_NEWNET": "linux/sched.h",
    "MS_RDONLY": "sys/mount.h", "MS_NOSUID": "sys/mount.h", "MS_NODEV": "sys/mount.h",
    "MS_NOEXEC": "sys/mount.h", "MS_REMOUNT": "sys/mount.h", "MS_NOATIME": "sys/mount.h",
    "MS_NODIRATIME": "sys/mount.h", "MS_BIND": "sys/mount.h", "MS_REC": "sys/mount.h",
    "MS_PRIVATE": "sys/mount.h", "MS_RELATIME": "sys/mount.h",
    "MS_STRICTATIME": "sys/mount.h", "MNT_DETACH": "sys/mount.h",
    "MOUNT_ATTR_RDONLY": "linux/mount.h", "AT_RECURSIVE": "linux/fcntl.h",
    "AT_FDCWD": "linux/fcntl.h", "AT_EMPTY_PATH": "linux/fcntl.h",
    "OPEN_TREE_CLONE": "linux/mount.h", "MOVE_MOUNT_F_EMPTY_PATH": "linux/mount.h",
    "FSCONFIG_SET_STRING": "linux/mount.h", "FSCONFIG_CMD_CREATE": "linux/mount.h",
    "PR_SET_PDEATHSIG": "linux/prctl.h", "PR_SET_KEEPCAPS": "linux/prctl.h",
    "PR_SET_DUMPABLE": "linux/prctl.h", "POLLIN": "poll.h", "POLLHUP": "poll.h",
    "PR_CAPBSET_READ": "linux/prctl.h", "PR_CAPBSET_DROP": "linux/prctl.h",
    "PR_SET_NO_NEW_PRIVS": "linux/prctl.h", "PR_CAP_AMBIENT": "linux/prctl.h",
    "PR_CAP_AMBIENT_RAISE": "linux/prctl.h", "PR_CAP_AMBIENT_CLEAR_ALL": "linux/prctl.h",
    "LINUX_CAPABILITY_VERSION_3": "linux/capability.h",
    "SECCOMP_SET_MODE_FILTER": "linux/seccomp.h", "CLOSE_RANGE_CLOEXEC": "linux/close_range.h",
}


@pytest.fixture(scope="module")
def header_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("consts")
    headers = sorted(set(HEADER_CONSTANTS.values()))
    # sys/mount.h and linux/mount.h clash; the linux/ one only for its own names.
    src = ["#define _GNU_SOURCE", "#include <stdio.h>", "#include <sys/mount.h>",
           "#include <fcntl.h>", "#include <sched.h>"]
    src += [f"#include <{h}>" for h in headers if h not in ("sys/mount.h", "linux/mount.h",
                                                            "linux/fcntl.h", "linux/sched.h")]
    src += ["#ifndef MOUNT_ATTR_RDONLY", "#include <linux/mount.h>", "#endif",
            "int main(void) {"]
    expr = {"LINUX_CAPABILITY_VERSION_3": "_LINUX_CAPABILITY_VERSION_3"}
    src += [f'  printf("{n} %lld\\n", (long long)({expr.get(n, n)}));' for n in HEADER_CONSTANTS]
    src += ["  return 0; }"]
    (d / "c.c").write_text("\n".join(src))
    subprocess.run(["gcc", "-o", str(d / "c"), str(d / "c.c")], check=True)
    out = subprocess.run([str(d / "c")], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_constants_match_kernel_headers(header_values: dict[str, int]) -> None:
    wrong = {n: (getattr(_sys, n), v) for n, v in header_values.items() if getattr(_sys, n) != v}
    assert wrong == {}


def test_seccomp_flags_match_headers(tmp_path: os.PathLike[str]) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    src = ('#include <stdio.h>\n#include <linux/seccomp.h>\nint main(void){printf("%d %d %d",'
           'SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW);}')
    c = os.path.join(tmp_path, "f.c")
    open(c, "w").write(src)
    subprocess.run(["gcc", "-o", c + ".out", c], check=True)
    out = subprocess.run([c + ".out"], capture_output=True, text=True).stdout.split()
    assert [int(x) for x in out] == [_sys.SECCOMP_FILTER_FLAGS[k]
                                     for k in ("tsync", "log", "spec_allow")]


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_syscall_numbers_match_libseccomp(arch: str) -> None:
    sc = pytest.importorskip("pyseccomp")
    a = {"x86_64": sc.Arch.X86_64, "aarch64": sc.Arch.AARCH64}[arch]
    table = _sys._SYSCALLS[arch]
    assert {n: sc.resolve_syscall(a, n) for n in table} == table


# -- cgroup drivers against a directory tree -----------------------------------


def fake_kernel_mkdir(path: str) -> None:
    """What the kernel does on mkdir in cgroupfs: the interface files appear."""
    os.makedirs(path)
    for name in ("cgroup.procs", "cgroup.subtree_control", "cgroup.kill", "memory.max",
                 "memory.swap.max", "pids.max", "cpu.max", "io.max", "memory.events",
                 "pids.events"):
        open(os.path.join(path, name), "w").close()


@pytest.fixture
def v2_tree(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> str:
    root = os.path.join(tmp_path, "cgroup")
    os.makedirs(root)
    open(os.path.join(root, "cgroup.controllers"), "w").write("cpuset cpu io memory pids\n")
    open(os.path.join(root, "cgroup.subtree_control"), "w").close()
    open(os.path.join(root, "cgroup.procs"), "w").close()

    def mkdir(path: str) -> None:
        if os.path.exists(path):
            raise ApplyError("cgroup", path, errno.EEXIST)
        fake_kernel_mkdir(path)

    monkeypatch.setattr(v2mod, "make_dir", mkdir)
    return root


def test_v2_driver_lifecycle(v2_tree: str) -> None:
    plan = CgroupPlan(memory_max=64 << 20, memory_swap_max=0, pids_max=32,
                      cpu_quota_us=50000, cpu_period_us=100000)
    drv = choose_driver(plan, "w1", root=v2_tree, parent="/enforcer")
    assert isinstance(drv, CgroupV2)
    drv.create()
    drv.apply_limits()
    wl = os.path.join(v2_tree, "enforcer", "w1")
    assert open(f"{wl}/memory.max").read() == "67108864"
    assert open(f"{wl}/cpu.max").read() == "50000 100000"
    for sub in (v2_tree, os.path.join(v2_tree, "enforcer")):
        assert open(f"{sub}/cgroup.subtree_control").read() == "+memory +pids +cpu"
    drv.add(424242)
    assert open(f"{wl}/cgroup.procs").read() == "424242"
    open(f"{wl}/memory.events", "w").write("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    open(f"{wl}/pids.events", "w").write("max 5\n")
    ev = drv.events()
    assert (ev.oom_kills, ev.pids_max_hits) == (1, 5)
    assert drv.record_paths() == {"": "/enforcer/w1"}
    # Emulate the kernel emptying the cgroup, then removal.
    for name in os.listdir(wl):
        os.unlink(os.path.join(wl, name))
    drv.remove()
    assert not os.path.exists(wl)


def test_v2_missing_controller_is_refused(v2_tree: str) -> None:
    open(os.path.join(v2_tree, "cgroup.controllers"), "w").write("cpu pids\n")
    drv = choose_driver(CgroupPlan(memory_max=1 << 20), "w2", root=v2_tree)
    with pytest.raises(ApplyError) as e:
        drv.create()
    assert "memory" in str(e.value) and "cgroup.controllers" in str(e.value)


def test_v2_write_error_names_file_and_value(v2_tree: str) -> None:
    drv = choose_driver(CgroupPlan(io_weight=7), "w3", root=v2_tree, parent="/enforcer")
    drv.create()
    with pytest.raises(ApplyError) as e:
        drv.apply_limits()  # io.weight does not exist in the fake tree
    msg = str(e.value)
    assert msg.startswith("cgroup: ") and "enforcer/w3/io.weight" in msg and "'default 7'" in msg
    assert "ENOENT" in msg


def test_v2_io_max_is_written_one_device_per_write(v2_tree: str) -> None:
    plan = CgroupPlan(io_devices=(IoDevicePlan("8:0", read_bps=1 << 20),
                                  IoDevicePlan("8:16", write_iops=50)))
    drv = choose_driver(plan, "w4", root=v2_tree, parent="/enforcer")
    drv.create()
    writes: list[bytes] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", write)
        drv.apply_limits()
    assert writes == [b"8:0 rbps=1048576", b"8:16 wiops=50"]


def test_choose_v1_on_hybrid_tree(tmp_path: os.PathLike[str]) -> None:
    root = str(tmp_path)
    for c in ("memory", "pids"):
        os.makedirs(f"{root}/{c}")
        open(f"{root}/{c}/cgroup.procs", "w").close()
    drv = choose_driver(CgroupPlan(memory_max=1 << 20), "x",
                        root=root, parent="/enforcer")
    assert isinstance(drv, CgroupV1)
    assert drv.dir("memory") == f"{root}/memory/enforcer/x"
    with pytest.raises(ApplyError) as e:
        choose_driver(CgroupPlan(io_weight=100), "x", root=root)
    assert "blkio" in str(e.value)


# -- audit records --------------------------------------------------------------


def nlmsg(mtype: int, text: str) -> bytes:
    body = text.encode() + b"\0"
    length = 16 + len(body)
    return struct.pack("=IHHII", length, mtype, 0, 0, 0) + body + b"\0" * (-length % 4)


def test_audit_parser() -> None:
    rec = ('audit(1700000000.123:42): auid=0 uid=0 gid=0 ses=1 pid=4242 comm="python3" '
           'exe="/usr/bin/python3.11" sig=31 arch=c000003e syscall=101 compat=0 '
           'ip=0x7f code=0x80000000')
    data = nlmsg(1300, "type=SYSCALL noise") + nlmsg(AUDIT_SECCOMP, rec)
    [r] = parse_messages(data)
    assert (r.pid, r.syscall, r.arch, r.sig, r.code) == (4242, 101, 0xC000003E, 31, 0x80000000)


# -- command line, messages, creds arithmetic ------------------------------------


def test_parse_argv() -> None:
    a = parse_argv(["--policy", "web-server", "--mode=audit", "--exec", "--name", "w", "--",
                    "ls", "-l", "--", "x"])
    assert (a.policy, a.mode, a.exec_, a.name, a.command) == ("web-server", "audit", True, "w",
                                                             ["ls", "-l", "--", "x"])
    assert parse_argv(["true"]).policy == "sandbox"  # the host sandbox, see policies/README.md
    for bad in ([], ["--policy"], ["--bogus", "--", "x"], ["--mode", "lax", "--", "x"],
                ["--name", "../x", "--", "x"]):
        with pytest.raises(UsageError):
            parse_argv(bad)


def test_exit_codes_and_messages() -> None:
    assert exit_code_for_failure(ApplyError("exec", "x", errno.ENOENT)) == exitcodes.NOT_FOUND
    assert exit_code_for_failure(ApplyError("exec", "x", errno.EACCES)) == 126
    assert exit_code_for_failure(ApplyError("mounts", "x", errno.EPERM)) == 125
    assert status_to_code(7 << 8) == 7 and status_to_code(31) == 128 + 31
    assert human_bytes(64 << 20) == "64 MiB" and human_bytes(1 << 30) == "1 GiB"
    assert str(ApplyError("mounts", "mount /x", errno.ENOENT)) == \
        "mounts: mount /x: ENOENT (No such file or directory)"


def test_relative_capabilities() -> None:
    caps = CapabilityPlan(0, 0, 0, 0, 0, relative=True, drop=0b0110, add=0b1000)
    bnd, eff, perm, inh, amb = target_sets(caps, (0b1111, 0b1111, 0b0001), 0b1111)
    assert (bnd, eff, perm, inh, amb) == (0b1001, 0b1001, 0b1001, 0b1001, 0)


def test_uid_minus_one_is_refused() -> None:
    with pytest.raises(ApplyError) as e:
        check_ids(UserPlan(uid=0xFFFFFFFF, gid=0))
    assert e.value.step == "user"
    check_ids(UserPlan(uid=65534, gid=65534, groups=(65534,)))
