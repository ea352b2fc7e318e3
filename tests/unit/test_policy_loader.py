"""load_policy(): shipped policies, the merge rules of `extends`, origins,
names -> numbers, and the contract with the compiler (model.py)."""

from __future__ import annotations

import hashlib
import os
import pwd
from pathlib import Path

import pytest

from enforcer.errors import PolicyErrors
from enforcer.policy.loader import load_policy, policies_dir, resolve_policy_source
from enforcer.policy.model import Action, ActionKind, ArgOp, Mode, Policy
from tests.policy_helpers import SHIPPED, write_policy

EPERM = Action(ActionKind.ERRNO, 1)
ALLOW = Action(ActionKind.ALLOW)


def rules_for(policy: Policy, name: str) -> list:
    return [r for r in policy.syscalls.rules if r.syscall == name]


def uncond(policy: Policy, name: str) -> Action | None:
    found = [r.action for r in rules_for(policy, name) if not r.args]
    assert len(found) <= 1
    return found[0] if found else None


def errors_of(path: Path | str) -> list[str]:
    with pytest.raises(PolicyErrors) as info:
        load_policy(str(path))
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize("name", ["default", "restricted", "web-server", "batch-job"])
def test_shipped_policies_load_by_name_and_path(name: str) -> None:
    by_name = load_policy(name)
    by_path = load_policy(str(policies_dir() / f"{name}.yaml"))
    assert by_name == by_path
    assert by_name.name == name
    assert resolve_policy_source(name) == str((policies_dir() / f"{name}.yaml").resolve())
    assert len(SHIPPED) >= 4


def test_package_path_reaches_the_policies() -> None:
    assert (policies_dir() / "default.yaml").is_file()
    assert policies_dir().name == "policies"


def test_default_policy_is_docker_like() -> None:
    p = load_policy("default")
    assert p.syscalls.default_action == EPERM
    assert uncond(p, "read") == ALLOW and uncond(p, "ptrace") == EPERM
    assert uncond(p, "mount") == EPERM and uncond(p, "bpf") == EPERM
    assert uncond(p, "clone3") == Action(ActionKind.ERRNO, 38)
    clone = rules_for(p, "clone")
    assert len(clone) == 1 and clone[0].args[0].op is ArgOp.MASKED_EQ and clone[0].args[0].value == 0
    assert {r.args[0].value for r in rules_for(p, "personality")} == {0, 8, 0x20000, 0x20008, 0xFFFFFFFF}
    assert p.capabilities.keep == frozenset({0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31})
    assert "/proc/kcore" in p.filesystem.masked_paths
    assert not p.resources.any_cgroup_limit
    assert p.no_new_privileges and p.mode is Mode.ENFORCE


def test_restricted_policy_is_tight() -> None:
    p = load_policy("restricted")
    assert p.user is not None and (p.user.uid, p.user.gid) == (65534, 65534)
    assert p.capabilities.keep == frozenset()
    assert p.filesystem.read_only_root and p.filesystem.tmpfs[0].path == "/tmp"
    assert p.syscalls.architectures == ()  # [native]: the model's "native only"
    assert p.origins["syscalls.architectures"].line > 0
    for name in ("ptrace", "mount", "bpf", "io_uring_setup", "userfaultfd", "keyctl",
                 "perf_event_open", "unshare", "setns", "init_module", "kexec_load"):
        action = uncond(p, name)
        assert action is not None and action.blocks, name
    assert uncond(p, "ptrace") == Action(ActionKind.KILL_PROCESS)
    assert p.resources.memory_max == 512 * 2**20 and p.resources.pids_max == 256


def test_web_server_extends_default() -> None:
    p = load_policy("web-server")
    assert [os.path.basename(s) for s, _ in p.sources] == ["default.yaml", "web-server.yaml"]
    assert p.capabilities.keep == frozenset({10})
    assert uncond(p, "bind") == ALLOW and uncond(p, "listen") == ALLOW and uncond(p, "accept4") == ALLOW
    assert uncond(p, "setuid") == EPERM  # the child's deny beats the parent's allow
    assert p.resources.memory_max == 2**30 and p.resources.cpu_quota_us == 200_000
    assert p.origins["syscalls.default"].file.endswith("default.yaml")
    assert p.origins["resources.memory.max"].file.endswith("web-server.yaml")


def test_sources_have_sha256_child_last(tmp_path: Path) -> None:
    base = write_policy(tmp_path, "base.yaml", "name: base\nmode: audit\n")
    child = write_policy(tmp_path, "child.yaml", "name: child\nextends: base.yaml\n")
    p = load_policy(str(child))
    assert p.sources == (
        (str(base), hashlib.sha256(base.read_bytes()).hexdigest()),
        (str(child), hashlib.sha256(child.read_bytes()).hexdigest()),
    )


def test_mode_override(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "p.yaml", "name: p\nsyscalls: {default: kill-process}\n")
    assert load_policy(str(path)).mode is Mode.ENFORCE
    audited = load_policy(str(path), mode="audit")
    assert audited.mode is Mode.AUDIT
    # The loader does not rewrite actions; the compiler does that for audit.
    assert audited.syscalls.default_action == Action(ActionKind.KILL_PROCESS)


def test_merge_rules(tmp_path: Path) -> None:
    write_policy(tmp_path, "parent.yaml", """\
name: parent
description: the parent
mode: audit
syscalls:
  default: errno EPERM
  allow: [read, write, ptrace]
  deny: [mount, "@keyring"]
  rules:
    - {syscalls: [socket], action: allow, args: [{index: 0, op: eq, value: AF_UNIX}]}
capabilities: {keep: [CHOWN, NET_RAW, KILL]}
filesystem:
  read_only_paths: [/etc, /usr]
  tmpfs: [{path: /tmp, size: 10Mi}, {path: /run, size: 1Mi}]
resources: {memory: {max: 1Gi, swap: 0}, pids: {max: 10}}
rlimits: {nofile: 100, core: 0}
user: {uid: 1000, gid: 1000, groups: [5]}
namespaces: [mount, pid]
""")
    child = write_policy(tmp_path, "child.yaml", """\
name: child
extends: parent.yaml
syscalls:
  allow: [mount]
  deny: [ptrace]
  rules:
    - {syscalls: [socket], action: allow, args: [{index: 0, op: eq, value: AF_INET}]}
capabilities: {drop: [NET_RAW], add: [net_bind_service]}
filesystem:
  read_only_paths: [/opt, /etc]
  tmpfs: [{path: /tmp, size: 20Mi}]
resources: {memory: {max: 2Gi}}
rlimits: {NOFILE: {soft: 50, hard: 200}}
user: {uid: 2000}
namespaces: [ipc, mount]
""")
    p = load_policy(str(child))
    assert p.name == "child" and p.description == ""  # never inherited
    assert p.mode is Mode.AUDIT  # scalar inherited
    assert uncond(p, "mount") == ALLOW and uncond(p, "ptrace") == EPERM  # the child decides
    assert uncond(p, "read") == ALLOW and uncond(p, "keyctl") == EPERM
    socket_values = [r.args[0].value for r in rules_for(p, "socket")]
    assert socket_values == [1, 2]  # parent's rules first, then the child's
    assert p.capabilities.keep == frozenset({0, 5, 10})
    assert p.filesystem.read_only_paths == ("/etc", "/usr", "/opt")  # union, in order
    assert {t.path: t.size for t in p.filesystem.tmpfs} == {"/tmp": 20 * 2**20, "/run": 2**20}
    assert p.resources.memory_max == 2 * 2**30 and p.resources.memory_swap_max == 0  # per field
    assert p.resources.pids_max == 10
    assert {r.resource: (r.soft, r.hard) for r in p.rlimits} == {"NOFILE": (50, 200), "CORE": (0, 0)}
    assert p.user is not None and (p.user.uid, p.user.gid, p.user.groups) == (2000, 2000, ())  # replaced
    assert p.namespaces == ("mount", "pid", "ipc")
    assert p.origins["resources.memory.max"].file.endswith("child.yaml")
    assert p.origins["resources.memory.swap"].file.endswith("parent.yaml")
    assert p.origins["filesystem.read_only_paths[/etc]"].file.endswith("parent.yaml")
    assert p.origins["mode"].line == 3


def test_relative_capabilities_merge(tmp_path: Path) -> None:
    write_policy(tmp_path, "a.yaml", "name: a\ncapabilities: {drop: [ALL], add: [CHOWN, KILL]}\n")
    b = write_policy(tmp_path, "b.yaml", "name: b\nextends: a.yaml\ncapabilities: {drop: [kill], add: [cap_fowner]}\n")
    p = load_policy(str(b))
    assert p.capabilities.keep is None
    assert p.capabilities.add == frozenset({0, 3})
    assert 5 in p.capabilities.drop and 0 not in p.capabilities.drop


def test_multiple_parents_and_diamond(tmp_path: Path) -> None:
    write_policy(tmp_path, "root.yaml", "name: root\nsyscalls: {default: errno EPERM, allow: [read]}\n")
    write_policy(tmp_path, "left.yaml", "name: left\nextends: root.yaml\nsyscalls: {allow: [write]}\n")
    write_policy(tmp_path, "right.yaml", "name: right\nextends: [root.yaml]\nsyscalls: {deny: [write]}\n")
    top = write_policy(tmp_path, "top.yaml", "name: top\nextends: [left.yaml, right.yaml]\n")
    p = load_policy(str(top))
    assert [os.path.basename(s) for s, _ in p.sources] == ["root.yaml", "left.yaml", "right.yaml", "top.yaml"]
    assert uncond(p, "write") == EPERM  # right is applied after left


def test_explicit_name_beats_group_in_one_file(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "p.yaml", """\
name: p
syscalls:
  default: errno EPERM
  allow: ["@system-service"]
  deny: [setuid]
  rules:
    - {syscalls: [clone], action: allow, args: [{index: 0, op: masked_eq, mask: CLONE_NEWUSER, value: 0}]}
""")
    p = load_policy(str(path))
    assert uncond(p, "setuid") == EPERM
    assert uncond(p, "clone") is None and len(rules_for(p, "clone")) == 1
    assert rules_for(p, "setuid")[0].via == "setuid"
    assert rules_for(p, "read")[0].via == "@system-service"
    assert rules_for(p, "read")[0].origin is not None and rules_for(p, "read")[0].origin.line == 4


def test_group_members_missing_on_target_arch_are_left_out(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "p.yaml",
                        "name: p\nsyscalls: {architectures: [aarch64], allow: ['@file-system']}\n")
    p = load_policy(str(path))
    names = {r.syscall for r in p.syscalls.rules}
    assert "openat" in names and "open" not in names
    assert p.syscalls.architectures == ("aarch64",)


def test_name_on_one_of_several_arches_is_valid(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "p.yaml",
                        "name: p\nsyscalls: {architectures: [x86_64, aarch64], allow: [open]}\n")
    assert uncond(load_policy(str(path)), "open") == ALLOW


def test_all_errors_reported_together(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "p.yaml", "name: p\nsyscalls: {allow: [wirte]}\nmode: enforcing\n"
                                            "capabilities: {keep: [FOO]}\n")
    errs = errors_of(path)
    assert len(errs) == 3
    assert [e.split(":")[1] for e in errs] == ["2", "3", "4"]


def test_user_names_resolve_on_host(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    path = write_policy(tmp_path, "p.yaml", "name: p\nuser: {uid: nobody}\n")
    u = load_policy(str(path)).user
    assert u is not None and (u.uid, u.gid, u.user_name) == (nobody.pw_uid, nobody.pw_gid, "nobody")


def test_user_names_resolve_in_rootfs(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:4242:4343::/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\napp:x:4343:\nextra:x:5000:\n")
    path = write_policy(tmp_path, "p.yaml",
                        f"name: p\nfilesystem: {{rootfs: {rootfs}}}\nuser: {{uid: app, groups: [extra, 7]}}\n")
    u = load_policy(str(path)).user
    assert u is not None and (u.uid, u.gid, u.groups) == (4242, 4343, (5000, 7))
    bad = write_policy(tmp_path, "q.yaml", f"name: q\nfilesystem: {{rootfs: {rootfs}}}\nuser: {{uid: nobody}}\n")
    assert "does not exist on" in errors_of(bad)[0]


def test_sizes_durations_and_modes(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "p.yaml", """\
name: p
resources:
  memory: {max: 1.5Gi, swap: 1G}
  cpu: {quota: 50ms, period: 100ms}
  io: {weight: 500, devices: [{device: 8:0, read_bps: 10Mi, write_iops: 100}]}
filesystem:
  tmpfs:
    - {path: /a, mode: 1777}
    - {path: /b, mode: "0755"}
    - {path: /c, mode: 0o700, options: [ro]}
rlimits: {stack: 8Mi, rlimit_nproc: unlimited}
""")
    p = load_policy(str(path))
    assert p.resources.memory_max == int(1.5 * 2**30) and p.resources.memory_swap_max == 10**9
    assert (p.resources.cpu_quota_us, p.resources.cpu_period_us) == (50_000, 100_000)
    assert p.resources.io_devices[0].device == "8:0"  # not the YAML 1.1 integer 480
    assert [t.mode for t in p.filesystem.tmpfs] == [0o1777, 0o755, 0o700]
    assert {r.resource: r.soft for r in p.rlimits} == {"STACK": 8 * 2**20, "NPROC": -1}


def test_actions_in_every_spelling(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "p.yaml", """\
name: p
syscalls:
  default: kill
  rules:
    - {syscalls: [read], action: errno 13}
    - {syscalls: [write], action: {action: errno, errno: EACCES}}
    - {syscalls: [close], action: kill-thread}
    - {syscalls: [fsync], action: log}
    - {syscalls: [dup], action: trap}
""")
    p = load_policy(str(path))
    assert p.syscalls.default_action == Action(ActionKind.KILL_PROCESS)
    assert uncond(p, "read") == uncond(p, "write") == Action(ActionKind.ERRNO, 13)
    assert uncond(p, "close") == Action(ActionKind.KILL_THREAD)
    assert uncond(p, "fsync") == Action(ActionKind.LOG) and uncond(p, "dup") == Action(ActionKind.TRAP)


def test_deny_action_defaults(tmp_path: Path) -> None:
    a = write_policy(tmp_path, "a.yaml", "name: a\nsyscalls: {default: allow, deny: [ptrace]}\n")
    assert uncond(load_policy(str(a)), "ptrace") == EPERM
    b = write_policy(tmp_path, "b.yaml", "name: b\nsyscalls: {default: kill-process, deny: [ptrace]}\n")
    assert uncond(load_policy(str(b)), "ptrace") == Action(ActionKind.KILL_PROCESS)
    c = write_policy(tmp_path, "c.yaml", "name: c\nsyscalls: {deny_action: errno ENOSYS, deny: [ptrace]}\n")
    assert uncond(load_policy(str(c)), "ptrace") == Action(ActionKind.ERRNO, 38)


def test_minimal_policy_defaults(tmp_path: Path) -> None:
    p = load_policy(str(write_policy(tmp_path, "p.yaml", "name: minimal\n")))
    assert p.syscalls.default_action == ALLOW and p.syscalls.rules == ()
    assert p.syscalls.architectures == () and p.syscalls.log_denials
    assert p.syscalls.unknown_action == Action(ActionKind.ERRNO, 38)
    assert p.no_new_privileges and p.user is None and p.capabilities.keep is None


def test_spec_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare name is a shipped or admin policy, never a file in the working
    directory (hole 9); a path names its file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENFORCER_POLICY_DIR", str(tmp_path / "admin"))
    write_policy(tmp_path, "mine", "name: mine\n")
    with pytest.raises(PolicyErrors) as info:
        resolve_policy_source("mine")
    assert "never a file in the working directory" in str(info.value) and "./mine" in str(info.value)
    assert resolve_policy_source("./mine") == str(tmp_path / "mine")
    with pytest.raises(PolicyErrors) as info:
        resolve_policy_source("nothing-here")
    assert "default" in str(info.value) and str(tmp_path / "admin") in str(info.value)


def test_admin_policy_directory_resolves_names_but_never_shadows_shipped_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = tmp_path / "admin"
    admin.mkdir()
    monkeypatch.setenv("ENFORCER_POLICY_DIR", str(admin))
    write_policy(admin, "team.yaml", "name: team\nextends: restricted\n")
    write_policy(admin, "restricted.yaml", "name: restricted\nsyscalls: {default: allow}\n")
    assert resolve_policy_source("team") == str(admin / "team.yaml")
    assert resolve_policy_source("restricted") == str(policies_dir() / "restricted.yaml")
    assert load_policy("team").syscalls.default_action.blocks


@pytest.mark.parametrize("spec, why", [
    ("../up.yaml", "climbs out"),
    ("sub/../../up.yaml", "climbs out"),
    ("/etc/shadow", "not a policy file"),
    ("notes/todo.txt", "not a policy file"),
    ("notes.txt", "no policy named"),
    ("sibling", "no policy named"),
    ("link/x.yaml", "leads outside"),
])
def test_extends_refuses_what_is_not_a_policy_in_reach(tmp_path: Path, spec: str, why: str) -> None:
    (tmp_path / "outside").mkdir()
    write_policy(tmp_path / "outside", "x.yaml", "name: x\n")
    team = tmp_path / "team"
    team.mkdir()
    write_policy(tmp_path, "up.yaml", "name: up\n")
    write_policy(team, "sibling", "name: sibling\n")
    (team / "link").symlink_to(tmp_path / "outside")
    top = write_policy(team, "top.yaml", f"name: top\nextends: {spec}\n")
    with pytest.raises(PolicyErrors) as info:
        load_policy(str(top))
    assert len(info.value.errors) == 1
    err = info.value.errors[0]
    assert err.location is not None and err.location.line == 2 and why in err.message, err


def test_extends_spec_for_is_a_name_or_an_absolute_path(tmp_path: Path) -> None:
    """What `enforcer record` writes under `extends:` loads from anywhere:
    a shipped policy by name, any other file by its absolute path (even one
    beside the output, which a relative path would tie to that directory)."""
    from enforcer.policy.loader import extends_spec_for, resolve_policy_source

    assert extends_spec_for(resolve_policy_source("restricted")) == "restricted"
    (tmp_path / "bases").mkdir()
    beside = write_policy(tmp_path, "bases/b.yaml", "name: b\n")
    assert extends_spec_for(str(beside)) == str(beside)
    # A file named like a shipped policy is not that policy.
    lookalike = write_policy(tmp_path, "default.yaml", "name: default\n")
    assert extends_spec_for(str(lookalike)) == str(lookalike)
    # Through a symlink: the file itself, never the link's relative spelling.
    (tmp_path / "link.yaml").symlink_to(beside)
    assert extends_spec_for(str(tmp_path / "link.yaml")) == str(beside)


def test_ambient_capabilities_are_explicit_and_inherited_with_care(tmp_path: Path) -> None:
    """`ambient` must be kept; a child's keep resets it; a drop removes from it."""
    base = write_policy(tmp_path, "base.yaml", "name: base\ncapabilities:\n"
                                               "  keep: [NET_BIND_SERVICE, KILL]\n"
                                               "  ambient: [NET_BIND_SERVICE, KILL]\n")
    assert load_policy(str(base)).capabilities.ambient == {10, 5}
    dropped = write_policy(tmp_path, "dropped.yaml", "name: d\nextends: base.yaml\n"
                                                     "capabilities: {drop: [KILL]}\n")
    assert load_policy(str(dropped)).capabilities.ambient == {10}
    rekept = write_policy(tmp_path, "rekept.yaml", "name: r\nextends: base.yaml\n"
                                                   "capabilities: {keep: [NET_BIND_SERVICE]}\n")
    assert load_policy(str(rekept)).capabilities.ambient == frozenset()
    web = load_policy("web-server").capabilities
    assert web.keep == web.ambient == {10}
    assert load_policy("default").capabilities.ambient == frozenset()


@pytest.mark.parametrize("text, why", [
    ("capabilities:\n  keep: [KILL]\n  ambient: [SETUID]\n", "CAP_SETUID is not kept"),
    ("capabilities:\n  drop: [ALL]\n  add: [KILL]\n  ambient: [KILL]\n", "needs an absolute"),
])
def test_ambient_errors_name_the_line(tmp_path: Path, text: str, why: str) -> None:
    p = write_policy(tmp_path, "p.yaml", "name: p\n" + text)
    with pytest.raises(PolicyErrors) as info:
        load_policy(str(p))
    err = info.value.errors[0]
    assert why in err.message and err.location is not None and err.location.line >= 3, err


def test_bind_and_tmpfs_remove_merge(tmp_path: Path) -> None:
    """filesystem.bind merges by target (the child's entry wins);
    tmpfs_remove drops an inherited tmpfs, after which a writable path
    below it is no longer hidden."""
    write_policy(tmp_path, "base.yaml", (
        "name: base\nfilesystem:\n  tmpfs: [/tmp, /run]\n"
        "  bind:\n    - {source: /srv/a, target: /data}\n    - {source: /srv/c, target: /conf}\n"))
    child = write_policy(tmp_path, "child.yaml", (
        "name: child\nextends: base.yaml\nfilesystem:\n  tmpfs_remove: [/tmp]\n"
        "  writable_paths: [/tmp/app]\n"
        "  bind:\n    - {source: /srv/b, target: /data, read_only: true}\n"))
    p = load_policy(str(child))
    assert [t.path for t in p.filesystem.tmpfs] == ["/run"]
    assert {(b.source, b.target, b.read_only) for b in p.filesystem.bind} == {
        ("/srv/b", "/data", True), ("/srv/c", "/conf", False)}
    assert p.origins["filesystem.tmpfs_remove[/tmp]"].line == 4
    assert p.origins["filesystem.bind[/data]"].line == 7


def test_bind_inside_a_tmpfs_is_fine(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "p.yaml", (
        "name: p\nextends: restricted\nfilesystem:\n"
        "  bind:\n    - {source: /etc/hostname, target: /tmp/conf/hostname, read_only: true}\n"))
    assert load_policy(str(path)).filesystem.bind[0].target == "/tmp/conf/hostname"


def test_rootfs_user_database_is_read_inside_the_rootfs(tmp_path: Path) -> None:
    """An image's etc/passwd that is a symlink to a host file is resolved
    inside the image (where it leads nowhere), never on the host."""
    host_file = tmp_path / "host-passwd"
    host_file.write_text("evil:x:4242:4242::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to(str(host_file))
    (root / "etc" / "group").write_text("app:x:1000:\n")
    path = write_policy(tmp_path, "p.yaml", (
        f"name: p\nfilesystem:\n  rootfs: {root}\nuser: {{uid: evil, gid: app}}\n"))
    with pytest.raises(PolicyErrors) as e:
        load_policy(str(path))
    assert f"user 'evil' does not exist on {root}/etc" in str(e.value)
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").write_text("evil:x:4242:4242::/:/bin/sh\n")
    user = load_policy(str(path)).user
    assert user is not None and (user.uid, user.gid) == (4242, 1000)
