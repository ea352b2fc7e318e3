"""The pieces behind `enforcer run`'s explanations, without a kernel:
refusal counting and its lines, the notes after a failed exit, the TCP
listener table, and mount-point creation inside a tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enforcer.apply.audit import SeccompRecord, parse_record
from enforcer.apply.exit_notes import _command_line_paths, hidden_path_notes, own_status_note
from enforcer.apply.refusals import RET_ERRNO, RET_KILL_PROCESS, RET_LOG, Refusals, action_of
from enforcer.apply.unreachable import listening_ports
from enforcer.errors import ApplyError
from enforcer.plan import PLAN_FORMAT, MountOp, Plan

NAMES = {61: "wait4", 74: "fsync", 165: "mount"}
X86_64 = 0xC000003E


def rec(pid: int, nr: int, code: int, ses: int = 7, arch: int = X86_64) -> SeccompRecord:
    return SeccompRecord(pid=pid, syscall=nr, arch=arch, sig=31 if code == RET_KILL_PROCESS else 0,
                         code=code, ses=ses)


def test_record_parses_the_session() -> None:
    text = ("audit(1.2:3): auid=0 uid=0 gid=0 ses=42 subj=unconfined pid=9 comm=\"x\" "
            "exe=\"/x\" sig=0 arch=c000003e syscall=165 compat=0 ip=0x1 code=0x50000")
    r = parse_record(text)
    assert r is not None and (r.pid, r.syscall, r.ses, r.code) == (9, 165, 42, RET_ERRNO)
    unset = parse_record(text.replace("ses=42", "ses=4294967295"))
    assert unset is not None and unset.ses == -1


def test_lines_count_per_syscall_kills_first_and_name_pids() -> None:
    r = Refusals(session=7, pids=set(), names=NAMES)
    for _ in range(20):
        r.add(rec(4241, 61, RET_ERRNO))
    r.add(rec(4242, 74, RET_KILL_PROCESS))
    r.add(rec(9999, 61, RET_ERRNO, ses=8))  # another workload's session
    r.add(rec(4241, 61, 0x7FFF0000))  # allowed: not a refusal
    assert r.lines("redis") == [
        "refused by policy 'redis': fsync ×1 (killed, pid 4242)",
        "refused by policy 'redis': wait4 ×20 (errno, pid 4241)"]
    # The kill the SIGSYS line explains is not repeated.
    assert r.lines("redis", leave_out=r.kill_of(4242)) == [
        "refused by policy 'redis': wait4 ×20 (errno, pid 4241)"]


def test_many_pids_and_many_syscalls_are_capped() -> None:
    r = Refusals(session=7, pids=set(), names={})
    for pid in range(10, 15):
        r.add(rec(pid, 500, RET_ERRNO))
    assert r.lines("p") == ["refused by policy 'p': syscall 500 ×5 (errno, pids 10, 11, 12 "
                            "and 2 more)"]
    for nr in range(30):
        r.add(rec(1, 600 + nr, RET_ERRNO))
    lines = r.lines("p")
    assert len(lines) == 21 and lines[-1].startswith("refused by policy 'p': 11 more syscalls")


def test_without_a_session_pids_decide_and_log_counts_only_in_audit_mode() -> None:
    r = Refusals(session=None, pids={5}, names=NAMES, audit_mode=False)
    r.add(rec(5, 165, RET_LOG, ses=-1))
    r.add(rec(6, 165, RET_ERRNO, ses=-1))
    assert r.lines("p") == []
    audit = Refusals(session=None, pids={5}, names=NAMES, audit_mode=True)
    audit.add(rec(5, 165, RET_LOG, ses=-1))
    assert audit.lines("p") == ["would be refused by policy 'p' (audit mode): mount ×1 "
                                "(logged, pid 5)"]


def test_non_native_arch_is_named_as_such() -> None:
    r = Refusals(session=7, pids=set(), names=NAMES)
    r.add(rec(1, 165, RET_ERRNO, arch=0x40000003))
    assert r.lines("p") == ["refused by policy 'p': syscall 165 of arch 0x40000003 ×1 "
                            "(errno, pid 1)"]
    assert action_of(0x00030000) == "trapped" and action_of(0) == "killed"


def test_own_status_note_only_for_126_and_127() -> None:
    assert own_status_note(127 << 8, ["/bin/sh", "-c", "x"]) == (
        "the workload (sh) ran and exited with status 127 itself; it is not enforcer's "
        "'command not found', which has a line of its own")
    assert "cannot execute" in (own_status_note(126 << 8, ["x"]) or "")
    assert own_status_note(1 << 8, ["x"]) is None
    assert own_status_note(9, ["x"]) is None  # killed by a signal


def test_command_line_paths() -> None:
    assert _command_line_paths(["nginx", "-c", "/etc/nginx/../nginx/x.conf", "--root=/srv/a",
                                "relative", "-p/x"]) == ["/etc/nginx/x.conf", "/srv/a"]


def _plan(*mounts: MountOp) -> Plan:
    return Plan(format=PLAN_FORMAT, enforcer_version="t", policy_name="t", policy_hash="0" * 64,
                mode="enforce", seccomp=None, capabilities=None, mounts=mounts)


def test_hidden_path_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from enforcer.apply import exit_notes

    monkeypatch.setattr(exit_notes, "SCRATCH_PLACES", ("/var/tmp",))  # tmp_path is in /tmp
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("x")
    plan = _plan(MountOp("make_private", "/"), MountOp("tmpfs", str(conf)),
                 MountOp("tmpfs", "/var/tmp"))
    notes = hidden_path_notes(plan, ["srv", "-c", str(conf / "a.conf"), "/var/tmp/not-there-x"])
    assert notes == [
        f"note: {conf}/a.conf on the command line is hidden by the policy's tmpfs at {conf} "
        f"(the workload saw an empty {conf}): if the workload needs it, bind it "
        f"(filesystem.bind: [{{source: {conf}/a.conf, target: {conf}/a.conf}}]) or drop the "
        f"tmpfs (filesystem.tmpfs_remove: [{conf}])"]
    # Not on the command line: the directory's entries are named instead
    # (but never for scratch places like /tmp).
    assert hidden_path_notes(plan, ["srv"]) == [
        f"note: the policy's tmpfs at {conf} hides the host's 1 entry there (a.conf): if the "
        f"workload needs it, bind it (filesystem.bind: [{{source: {conf}, target: {conf}}}]) "
        f"or drop the tmpfs (filesystem.tmpfs_remove: [{conf}])"]


def test_listening_ports_reads_the_namespace_tables() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert s.getsockname()[1] in listening_ports(os.getpid())
    assert listening_ports(2 ** 22 + 12345) == []  # no such process


def test_mount_point_made_inside_the_tree_never_through_a_link(tmp_path: Path) -> None:
    from enforcer.apply.mount_targets import Targets

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "var").symlink_to("/etc")            # resolves to root/etc inside the tree
    (root / "tmp").symlink_to("/nowhere")        # leads nowhere inside the tree
    (root / "run").symlink_to(str(outside))      # by its host path: nowhere inside
    ops = (MountOp("tmpfs", f"{root}/var/lib/app"), MountOp("tmpfs", f"{root}/tmp/x"),
           MountOp("tmpfs", f"{root}/run/x"), MountOp("pivot_root", str(root)))
    t = Targets(ops)
    fd = t.open(ops[0], create="dir")
    assert fd is not None
    os.close(fd)
    assert (root / "etc" / "lib" / "app").is_dir()
    with pytest.raises(ApplyError) as e:
        t.open(ops[1], create="dir")
    assert str(e.value) == (f"mounts: tmpfs /tmp/x in the rootfs {root}: ENOENT (No such file "
                            "or directory): the rootfs's symlink leads nowhere inside it; "
                            "enforcer creates no mount point through it")
    with pytest.raises(ApplyError, match="tmpfs /run/x in the rootfs"):
        t.open(ops[2], create="dir")
    assert list(outside.iterdir()) == [] and not os.path.lexists("/nowhere")
    # On the host (no rootfs), only below a tmpfs the Plan mounted.
    host = Targets((MountOp("tmpfs", str(tmp_path / "nope" / "x")),))
    with pytest.raises(ApplyError, match="makes mount points only inside a rootfs or a tmpfs"):
        host.open(MountOp("tmpfs", str(tmp_path / "nope" / "x")), create="dir")
    assert not (tmp_path / "nope").exists()


def test_errno_is_read_from_the_plans_filter_and_enosys_only_after_a_failure() -> None:
    import errno
    import tempfile

    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    f.add_rule(sc.ERRNO(errno.EPERM), "mount")
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.add_rule(sc.ERRNO(errno.EPERM), "socket", sc.Arg(0, sc.EQ, 2))
    with tempfile.TemporaryFile() as tf:
        f.export_bpf(tf)
        tf.seek(0)
        bpf = tf.read()
    nr = {name: sc.resolve_syscall(sc.Arch.NATIVE, name) for name in ("mount", "clone3", "socket")}
    r = Refusals(session=7, pids=set(), names={v: k for k, v in nr.items()}, bpf=bpf)
    for name in ("mount", "clone3", "socket"):
        r.add(rec(3, nr[name], RET_ERRNO))
    # socket's errno depends on its arguments: only "errno" can be said.
    assert r.lines("p", failed=False) == ["refused by policy 'p': mount ×1 (EPERM, pid 3)",
                                          "refused by policy 'p': socket ×1 (errno, pid 3)"]
    assert "refused by policy 'p': clone3 ×1 (ENOSYS, pid 3)" in r.lines("p", failed=True)
