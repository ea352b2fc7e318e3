"""The `landlock` section from YAML to the kernel's arguments: reading one
file, merging an extends chain, compiling into the Plan, loading a Plan
strictly, fitting it to a kernel ABI (best effort / refusal), and the
rights table checked against the running kernel and its header."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from enforcer import landlock as ll
from enforcer.compile import compile_policy
from enforcer.errors import PlanError, PolicyErrors
from enforcer.plan import PLAN_FORMAT, LandlockPlan, LandlockRule, Plan, plan_from_json, replace
from enforcer.policy.loader import load_policy
from enforcer.policy.model import LandlockPath, LandlockPolicy
from tests.policy_helpers import write_policy

ISSUE_EXAMPLE = """
landlock:
  abi: 4
  filesystem:
    read:    [/usr, /etc/app]
    write:   [/var/lib/app]
    execute: [/usr/bin]
  network:
    bind:    [8080]               # TCP ports (ABI >= 4)
    connect: [5432, 443]
  scope: [signal, abstract-unix-socket]   # ABI >= 6: no signals or abstract sockets outside the domain
"""


def load(tmp_path: Path, text: str, name: str = "p") -> LandlockPolicy | None:
    return load_policy(str(write_policy(tmp_path, f"{name}.yaml", f"name: {name}\n{text}"))).landlock


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PolicyErrors) as info:
        load_policy(str(write_policy(tmp_path, "bad.yaml", f"name: bad\n{text}")))
    return [str(e) for e in info.value.errors]


# -- reading ---------------------------------------------------------------------


def test_issue_example_reads_as_written(tmp_path: Path) -> None:
    lp = load(tmp_path, ISSUE_EXAMPLE)
    assert lp == LandlockPolicy(
        abi=4, read=(LandlockPath("/usr"), LandlockPath("/etc/app")),
        write=(LandlockPath("/var/lib/app"),), execute=(LandlockPath("/usr/bin"),),
        bind=(8080,), connect=(443, 5432), scope=("signal", "abstract-unix-socket"))


def test_no_section_means_no_landlock(tmp_path: Path) -> None:
    assert load(tmp_path, "mode: enforce\n") is None


def test_absent_network_denies_every_port_and_any_leaves_it_open(tmp_path: Path) -> None:
    lp = load(tmp_path, "landlock:\n  filesystem: {read: /}\n  network: {connect: any}\n")
    assert lp is not None and lp.bind == () and lp.connect is None
    plan = compile_policy(load_policy(str(tmp_path / "p.yaml"))).landlock
    assert plan is not None and plan.handled_net == ll.NET_BIND_TCP


def test_optional_paths_and_single_strings(tmp_path: Path) -> None:
    lp = load(tmp_path, "landlock:\n  filesystem:\n    read: /usr\n"
                        "    write: [{path: /run/app, optional: true}, {path: /srv, optional: false}]\n"
                        "  scope: signal\n")
    assert lp is not None
    assert lp.read == (LandlockPath("/usr"),)
    assert lp.write == (LandlockPath("/run/app", True), LandlockPath("/srv", False))
    assert lp.scope == ("signal",)


@pytest.mark.parametrize("text, line, message", [
    ("landlock:\n  filesystem: {read: [usr]}\n", 3,
     "must be an absolute path (starting with /), not 'usr'"),
    ("landlock:\n  filesystem: {read: [/a/../b]}\n", 3, "must not contain '..'"),
    ("landlock:\n  filesystem: {reed: [/a]}\n", 3, "did you mean 'read'?"),
    ("landlock:\n  network: {bind: [65536]}\n", 3, "must be between 0 and 65535, not 65536"),
    ("landlock:\n  network: {bind: [80, 80]}\n", 3, "port 80 is listed twice"),
    ("landlock:\n  network: {connect: anything}\n", 3, "list of TCP port numbers (0-65535) or `any`"),
    ("landlock:\n  scope: [signals]\n", 3, "unknown landlock scope 'signals'; did you mean 'signal'?"),
    ("landlock:\n  abi: 0\n", 3, "landlock.abi must be between 1 and 99"),
    ("landlock:\n  filesystem: {write: [{optional: true}]}\n", 3, "needs `path:`"),
    ("landlock:\n  filesystem: {read: [/a, /a]}\n", 3, "/a is listed twice"),
    ("no_new_privileges: false\nlandlock: {filesystem: {read: [/]}}\n", 2,
     "landlock needs no_new_privileges: true"),
])
def test_errors_name_file_line_and_what_is_allowed(tmp_path: Path, text: str, line: int,
                                                   message: str) -> None:
    found = errors(tmp_path, text)
    assert any(f"bad.yaml:{line}:" in e and message in e for e in found), found


# -- extends -----------------------------------------------------------------------


def test_extends_unions_grants_keeps_the_highest_abi_and_required_wins(tmp_path: Path) -> None:
    write_policy(tmp_path, "parent.yaml", "name: parent\nlandlock:\n  abi: 6\n"
                 "  filesystem: {read: [/usr, {path: /opt, optional: true}]}\n"
                 "  network: {bind: [80]}\n  scope: [signal]\n")
    lp = load(tmp_path, "extends: ./parent.yaml\nlandlock:\n  abi: 4\n"
                        "  filesystem: {read: [/opt, /etc]}\n  network: {bind: [443]}\n"
                        "  scope: [abstract-unix-socket]\n", "child")
    assert lp is not None
    assert lp.abi == 6
    assert lp.read == (LandlockPath("/usr"), LandlockPath("/opt"), LandlockPath("/etc"))
    assert lp.bind == (80, 443) and lp.connect == ()
    assert lp.scope == ("signal", "abstract-unix-socket")


def test_inherit_false_replaces_the_parents_grants(tmp_path: Path) -> None:
    write_policy(tmp_path, "parent.yaml", "name: parent\nlandlock:\n"
                 "  filesystem: {read: [/], execute: [/]}\n  network: {bind: any}\n"
                 "  scope: [signal]\n")
    lp = load(tmp_path, "extends: ./parent.yaml\nlandlock:\n  inherit: false\n"
                        "  filesystem: {read: [/srv]}\n  network: {bind: [8080]}\n", "child")
    assert lp is not None
    assert lp.read == (LandlockPath("/srv"),) and lp.execute == ()
    assert lp.bind == (8080,)
    assert lp.scope == ("signal",)  # scopes only restrict: still inherited


def test_any_in_a_parent_leaves_the_port_list_open(tmp_path: Path) -> None:
    write_policy(tmp_path, "parent.yaml", "name: parent\nlandlock: {network: {connect: any}}\n")
    lp = load(tmp_path, "extends: ./parent.yaml\nlandlock: {network: {connect: [443]}}\n", "c")
    assert lp is not None and lp.connect is None


def test_shipped_policies_with_landlock() -> None:
    for name in ("web-server", "batch-job"):
        lp = load_policy(name).landlock
        assert lp is not None, name
        assert set(lp.scope) == {"signal", "abstract-unix-socket"}
        assert lp.abi is None  # best effort: they must run on older kernels too
    assert load_policy("default").landlock is None
    assert load_policy("restricted").landlock is None


# -- compile and the Plan ------------------------------------------------------------


def test_compile_gives_rights_per_path(tmp_path: Path) -> None:
    write_policy(tmp_path, "c.yaml", "name: c\nlandlock:\n  filesystem:\n"
                 "    read: [/usr, /srv/app/]\n    write: [/srv/app]\n    execute: [/usr]\n"
                 "  network: {bind: [8080], connect: any}\n  scope: [signal]\n")
    plan = compile_policy(load_policy(str(tmp_path / "c.yaml")))
    assert plan.landlock == LandlockPlan(
        min_abi=0,
        rules=(LandlockRule("/srv/app", ll.GRANT_READ | ll.GRANT_WRITE),
               LandlockRule("/usr", ll.GRANT_READ | ll.GRANT_EXECUTE)),
        handled_net=ll.NET_BIND_TCP, bind=(8080,), connect=(), scopes=ll.SCOPE_SIGNAL)
    assert not plan.landlock.rules[0].access & (ll.FS_MAKE_CHAR | ll.FS_MAKE_BLOCK)


def test_audit_mode_leaves_landlock_out_with_a_note(tmp_path: Path) -> None:
    write_policy(tmp_path, "a.yaml", "name: a\nmode: audit\nlandlock: {filesystem: {read: [/]}}\n")
    plan = compile_policy(load_policy(str(tmp_path / "a.yaml")))
    assert plan.landlock is None
    assert any("landlock" in n and n.startswith("audit mode:") for n in plan.notes)


def sample_plan() -> Plan:
    return Plan(format=PLAN_FORMAT, enforcer_version="t", policy_name="t", policy_hash="0" * 64,
                mode="enforce", seccomp=None, capabilities=None,
                landlock=LandlockPlan(min_abi=4, rules=(LandlockRule("/usr", 12, True),),
                                      handled_net=3, bind=(80,), connect=(443,), scopes=2))


def test_plan_round_trip_and_old_plans_without_landlock() -> None:
    plan = sample_plan()
    assert plan_from_json(plan.to_json()) == plan
    old = json.loads(replace(plan, landlock=None).to_json())["plan"]
    del old["landlock"]
    from enforcer.plan import plan_from_dict

    assert plan_from_dict(old).landlock is None


@pytest.mark.parametrize("change, message", [
    (lambda d: d["landlock"].update(extra=1), "unknown field(s) ['extra']"),
    (lambda d: d["landlock"]["rules"][0].update(path="usr"), "is not absolute"),
    (lambda d: d["landlock"].update(bind=[70000]), "is not a TCP port"),
    (lambda d: d["landlock"].update(scopes=-1), "is not a 64-bit mask"),
    (lambda d: d["landlock"]["rules"][0].pop("optional"), "missing field 'optional'"),
])
def test_plan_loading_is_strict(change: object, message: str) -> None:
    from enforcer.plan import plan_from_dict

    d = json.loads(sample_plan().to_json())["plan"]
    change(d)  # type: ignore[operator]
    with pytest.raises(PlanError) as info:
        plan_from_dict(d)
    assert message in str(info.value)


# -- fitting a Plan to a kernel ---------------------------------------------------------


def test_every_right_the_abi_knows_is_handled() -> None:
    plan = sample_plan().landlock
    assert plan is not None
    eff = ll.effective(plan, 7)
    assert eff.handled_fs == (1 << 16) - 1 and eff.handled_net == 3 and eff.scoped == 2
    assert eff.dropped == [] and ll.best_effort_line(eff) is None
    assert eff.restrict_flags == ll.RESTRICT_SELF_LOG_NEW_EXEC_ON
    assert eff.ports == [(ll.NET_BIND_TCP, 80), (ll.NET_CONNECT_TCP, 443)]
    # A newer kernel is used at the level this enforcer knows.
    assert ll.effective(plan, 9).handled_fs == eff.handled_fs


def test_best_effort_names_what_an_older_kernel_cannot_enforce() -> None:
    plan = replace(sample_plan().landlock, min_abi=0, scopes=3)  # type: ignore[type-var]
    eff = ll.effective(plan, 3)
    assert eff.handled_fs == (1 << 15) - 1 and eff.handled_net == 0 and eff.scoped == 0
    assert eff.rules == [(12, "/usr", True)] and eff.ports == [] and eff.restrict_flags == 0
    assert ll.best_effort_line(eff) == (
        "landlock: best effort: this kernel has Landlock ABI 3; not enforced: filesystem rights "
        "ioctl_dev (ABI 5); network rules (ABI 4); scope abstract_unix_socket, signal (ABI 6)")
    eff1 = ll.effective(replace(plan, rules=(LandlockRule("/a", ll.GRANT_WRITE),)), 1)
    assert eff1.rules == [(ll.GRANT_WRITE & ((1 << 13) - 1), "/a", False)]
    assert "refer (ABI 2), truncate (ABI 3), ioctl_dev (ABI 5)" in ll.best_effort_line(eff1)
    none = ll.effective(plan, 0)
    assert none.handled_fs == 0 and ll.best_effort_line(none) == (
        "landlock: best effort: this kernel has no Landlock; not enforced: everything "
        "(no Landlock on this kernel)")


def test_rights_above_the_required_abi_are_best_effort() -> None:
    """The issue's example: `abi: 4` with scopes (ABI 6). A kernel with ABI
    5 meets the minimum: it starts, and the scopes are reported dropped."""
    plan = replace(sample_plan().landlock, scopes=3)  # type: ignore[type-var]
    eff = ll.effective(plan, 5)
    assert eff.scoped == 0 and eff.handled_net == 3
    assert ll.best_effort_line(eff) == ("landlock: best effort: this kernel has Landlock ABI 5; "
                                        "not enforced: scope abstract_unix_socket, signal (ABI 6)")


def test_abi_above_the_kernel_is_refused() -> None:
    plan = sample_plan().landlock
    assert plan is not None
    with pytest.raises(ll.AbiTooOld) as info:
        ll.effective(plan, 3)
    assert str(info.value) == ("the policy requires Landlock ABI 4 (landlock.abi); "
                               "this kernel has ABI 3")


# -- the table against the kernel and its header ---------------------------------------


def _kernel_abi() -> int:
    from enforcer.apply.landlock import kernel_abi

    abi = kernel_abi()
    if abi == 0:
        pytest.skip("this kernel has no Landlock")
    return abi


def _create(fs: int, net: int = 0, scoped: int = 0) -> int:
    """landlock_create_ruleset: 0, or the errno."""
    from enforcer.apply import _sys
    from enforcer.apply.landlock import _RulesetAttr

    attr = _RulesetAttr(fs, net, scoped)
    ret = _sys.libc().syscall(ctypes.c_long(_sys.nr("landlock_create_ruleset")), ctypes.byref(attr),
                              ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ret < 0:
        return ctypes.get_errno()
    os.close(ret)
    return 0


def test_rights_table_matches_the_running_kernel() -> None:
    """The kernel takes exactly the rights the table says its ABI has: every
    one of them, and not one bit more (EINVAL)."""
    abi = min(_kernel_abi(), ll.KNOWN_ABI)
    fs, net, scoped = ll.fs_rights(abi), ll.net_rights(abi), ll.scopes(abi)
    assert _create(fs, net, scoped) == 0
    assert _create(fs | (fs + 1), net, scoped) == errno.EINVAL
    if net:
        assert _create(fs, net | (net + 1), scoped) == errno.EINVAL
    if scoped:
        assert _create(fs, net, scoped | (scoped + 1)) == errno.EINVAL


def test_constants_match_the_kernel_header(tmp_path: Path) -> None:
    """Every constant the installed <linux/landlock.h> defines (it may be
    older than the kernel) has our value."""
    names = {f"LANDLOCK_ACCESS_FS_{n.upper()}": bit for bit, n in ll.FS_NAMES.items()}
    names.update({f"LANDLOCK_ACCESS_NET_{n.upper()}": bit for bit, n in ll.NET_NAMES.items()})
    names.update({f"LANDLOCK_SCOPE_{n.upper()}": bit for bit, n in ll.SCOPE_NAMES.items()})
    names.update(LANDLOCK_CREATE_RULESET_VERSION=ll.CREATE_RULESET_VERSION,
                 LANDLOCK_RULE_PATH_BENEATH=ll.RULE_PATH_BENEATH,
                 LANDLOCK_RULE_NET_PORT=ll.RULE_NET_PORT,
                 LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF=ll.RESTRICT_SELF_LOG_SAME_EXEC_OFF,
                 LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON=ll.RESTRICT_SELF_LOG_NEW_EXEC_ON,
                 LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF=ll.RESTRICT_SELF_LOG_SUBDOMAINS_OFF)
    # enum members (rule types) are not macros: print them unconditionally
    # only where the header has them.
    lines = ["#include <stdio.h>", "#include <linux/landlock.h>", "int main(void) {"]
    for name in names:
        if name.startswith("LANDLOCK_RULE_"):
            continue
        lines.append(f'#ifdef {name}\nprintf("{name} %llu\\n", (unsigned long long)({name}));\n#endif')
    lines += ['printf("LANDLOCK_RULE_PATH_BENEATH %d\\n", LANDLOCK_RULE_PATH_BENEATH);', "}"]
    src = tmp_path / "h.c"
    src.write_text("\n".join(lines))
    subprocess.run(["gcc", "-o", str(tmp_path / "h"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "h")], capture_output=True, text=True, check=True).stdout
    seen = dict(line.split() for line in out.splitlines())
    assert len(seen) >= 10  # at least ABI 1's rights and the rule type
    for name, value in seen.items():
        assert int(value) == names[name], name


# -- check, explain, lint, diff, export ---------------------------------------------


def test_lint_counts_broad_grants(tmp_path: Path) -> None:
    from enforcer.policy.lint import lint

    def report(text: str) -> tuple[float, dict[str, float]]:
        r = lint(load_policy(str(write_policy(
            tmp_path, "l.yaml", f"name: l\nextends: restricted\nfilesystem: {{read_only_root: false}}\n"
                                f"{text}"))))
        return r.score, {f.id: f.weight for f in r.findings}

    bare_score, bare = report("")
    broad_score, broad = report("landlock:\n  filesystem: {read: [/], write: [/, /etc], "
                                "execute: [/]}\n")
    tight_score, tight = report("landlock:\n  filesystem: {read: [/usr], write: [/srv/data], "
                                "execute: [/usr/bin]}\n")
    # write to / leaves the root writable; execute on / runs what it wrote there
    assert broad["writable-root"] == 0.2 and broad["landlock-write-system"] == 0.1
    assert "landlock-execute-everywhere" in broad
    # narrow grants: writes are confined and nothing written can run
    assert "writable-root" not in tight and "runs-what-it-writes" not in tight
    assert bare["writable-root"] == 0.2
    assert tight_score < bare_score <= broad_score
    # execute granted where it writes: counted
    _, both = report("landlock:\n  filesystem: {read: [/], write: [/srv/data], execute: [/srv]}\n")
    assert both["runs-what-it-writes"] == 0.1


def test_explain_diff_and_export_show_the_section(tmp_path: Path) -> None:
    from enforcer.emit import docker, kubernetes, oci, systemd
    from enforcer.policy.diff import diff_policies
    from enforcer.policy.explain import field_rows

    old = load_policy(str(write_policy(tmp_path, "o.yaml", "name: o\n" + ISSUE_EXAMPLE)))
    new_text = ISSUE_EXAMPLE.replace("[5432, 443]", "[5432]").replace("[/var/lib/app]",
                                                                       "[/var/lib/app, /tmp]")
    new = load_policy(str(write_policy(tmp_path, "n.yaml", "name: n\n" + new_text)))
    rows = {k: (v, o) for k, v, o in field_rows(old)}
    assert rows["landlock.abi"][0] == "4"
    assert rows["landlock.filesystem.write[/var/lib/app]"][1].endswith("o.yaml:7:15")
    assert rows["landlock.network.connect"][0] == "443, 5432"
    assert [str(d) for d in diff_policies(old, new)] == [
        "landlock: write paths only in NEW: /tmp",
        "landlock: connect ports only in OLD: 443"]
    for module, fn, target in ((docker, "docker_export", "docker"),
                               (kubernetes, "kubernetes_export", "kubernetes"),
                               (oci, "oci_patch", "oci"), (systemd, "systemd_export", "systemd")):
        export = getattr(module, fn, None)
        assert export is not None, f"{module.__name__}.{fn}"
        _, lines = export(old)
        assert any(line.startswith(f"export {target}: cannot express landlock (read /usr, "
                                   "/etc/app; write /var/lib/app; execute /usr/bin; bind 8080; "
                                   "connect 443, 5432; scope signal, abstract-unix-socket)")
                   for line in lines), lines
