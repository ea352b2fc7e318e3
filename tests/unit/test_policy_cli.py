"""The policy verbs through the real CLI: check, lint, explain, groups,
schema, features."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from enforcer.policy import lint as lint_mod
from enforcer.policy import make_schema
from enforcer.policy.loader import load_policy
from tests.policy_helpers import REPO, SHIPPED, run_cli, write_policy


def test_check_shipped_policies_exit_0() -> None:
    proc = run_cli("check", *[str(p.relative_to(REPO)) for p in SHIPPED])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": ok (") == len(SHIPPED) >= 4


def test_schema_verb_prints_the_shipped_schema() -> None:
    proc = run_cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads((REPO / "enforcer" / "policy" / "schema.json").read_text())


def test_schema_file_is_generated_from_the_validator_tables() -> None:
    assert make_schema.render() == (REPO / "enforcer" / "policy" / "schema.json").read_text(), \
        "run: python -m enforcer.policy.make_schema"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_policy_validates_against_schema(path: Path) -> None:
    schema = json.loads((REPO / "enforcer" / "policy" / "schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))


def test_schema_rejects_what_the_loader_rejects_by_shape() -> None:
    schema = json.loads((REPO / "enforcer" / "policy" / "schema.json").read_text())
    v = jsonschema.Draft202012Validator(schema)
    bad = [
        {"name": "x", "syscals": {}},
        {"name": "x", "mode": "enforcing"},
        {"name": "x", "syscalls": {"rules": [{"syscalls": ["socket"], "action": "allow",
                                              "args": [{"index": 6, "op": "eq", "value": 1}]}]}},
        {"name": "x", "resources": {"memory": {"max": "512MB"}}},
        {"name": "x", "capabilities": {"keep": ["CHOWN"], "drop": ["ALL"]}},
        {"description": "no name"},
    ]
    for doc in bad:
        assert list(v.iter_errors(doc)), doc


def lint_score(spec: str) -> float:
    proc = run_cli("lint", "--json", spec)
    assert proc.returncode == 0, proc.stderr
    return float(json.loads(proc.stdout)[0]["score"])


def test_lint_scores_of_shipped_policies() -> None:
    restricted, default = lint_score("restricted"), lint_score("default")
    assert restricted <= 2.0
    assert default > restricted
    assert lint_score("web-server") <= default


def test_lint_sys_admin_and_mount_scores_at_least_8(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "admin.yaml", """\
name: admin
extends: restricted
capabilities: {keep: [SYS_ADMIN]}
syscalls:
  allow: [mount, umount2]
""")
    proc = run_cli("lint", str(path))
    assert proc.returncode == 0
    m = re.search(r"exposure (\d+\.\d)/10", proc.stdout)
    assert m and float(m.group(1)) >= 8.0, proc.stdout
    assert "keeps CAP_SYS_ADMIN" in proc.stdout and "allows mount, umount2" in proc.stdout
    assert f"{path.name}:3:" in proc.stdout  # the finding names where it was written


def test_lint_ranks_a_non_root_user_keeping_defaults_capabilities_worse_than_default(
        tmp_path: Path) -> None:
    """Hole 14: `extends: default` plus a non-root user kept CAP_SETUID,
    CAP_DAC_OVERRIDE & co. and scored *better* than default (no runs-as-root
    finding). Root-equivalent capabilities of a non-root user weigh heavily:
    kept but not held (bounding only) 0.4, held (ambient) 0.7."""
    kept = write_policy(tmp_path, "kept.yaml", "name: kept\nextends: default\n"
                                               "user: {uid: 999, gid: 999}\n")
    held = write_policy(tmp_path, "held.yaml", "name: held\nextends: default\n"
                                               "user: {uid: 999, gid: 999}\n"
                                               "capabilities:\n  ambient: [SETUID, NET_RAW]\n")
    none = write_policy(tmp_path, "none.yaml", "name: none\nextends: default\n"
                                               "user: {uid: 999, gid: 999}\ncapabilities: {keep: []}\n")
    default = lint_score("default")
    assert lint_score(str(kept)) > default
    assert lint_score(str(held)) > lint_score(str(kept))
    assert lint_score(str(none)) < default
    report = lint_mod.lint(load_policy(str(kept)))
    finding = next(f for f in report.findings if f.id == "non-root-keeps-root-capabilities")
    assert finding.weight == 0.4 and "CAP_SETUID" in finding.message and "CAP_KILL" not in finding.message
    assert any("never holds them" in f.message for f in report.contradictions)
    report = lint_mod.lint(load_policy(str(held)))
    finding = next(f for f in report.findings if f.id == "non-root-holds-root-capabilities")
    assert finding.weight == 0.7 and "CAP_SETUID" in finding.message and "NET_RAW" not in finding.message
    assert finding.origin is not None and finding.origin.line == 5


def test_lint_fail_above(tmp_path: Path) -> None:
    assert run_cli("lint", "--fail-above", "2", "restricted").returncode == 0
    proc = run_cli("lint", "--fail-above", "2", "default")
    assert proc.returncode == 1 and "above --fail-above 2" in proc.stdout
    assert run_cli("lint", "--fail-above", "11", "default").returncode == 2


def test_lint_reports_contradictions_and_shadowed_rules(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "odd.yaml", """\
name: odd
syscalls:
  default: errno EPERM
  allow: [read, write, socket]
  deny: [ptrace, process_vm_readv, process_vm_writev, kcmp]
  rules:
    - {syscalls: [socket], action: allow, args: [{index: 0, op: eq, value: AF_INET}]}
    - {syscalls: [connect], action: allow, args: [{index: 0, op: eq, value: 3}]}
    - {syscalls: [connect], action: errno EACCES, args: [{index: 0, op: eq, value: 3}]}
capabilities: {keep: [SYS_PTRACE]}
""")
    report = lint_mod.lint(load_policy(str(path)))
    contradictions = [f.message for f in report.contradictions]
    assert any("keeps CAP_SYS_PTRACE but denies every syscall" in m for m in contradictions)
    shadowed = [(f.message, f.origin.line if f.origin else 0) for f in report.shadowed]
    assert any("socket" in m and line == 7 for m, line in shadowed), shadowed
    assert any("connect" in m and line == 9 for m, line in shadowed), shadowed
    proc = run_cli("lint", str(path))
    assert "contradictions:" in proc.stdout and "shadowed rules:" in proc.stdout


def test_lint_audit_mode_and_allow_default(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "open.yaml", "name: open\nmode: audit\nno_new_privileges: false\n"
                                                "syscalls: {architectures: [native, x86, x32]}\n")
    report = lint_mod.lint(load_policy(str(path)))
    ids = {f.id for f in report.findings}
    assert {"mode-audit", "syscalls-default-allow", "no-new-privileges-off", "arch-x86", "arch-x32",
            "syscall-ptrace", "syscall-bpf", "caps-not-pinned", "writable-root"} <= ids
    assert report.score >= 9.9


def test_explain_shows_origins(tmp_path: Path) -> None:
    write_policy(tmp_path, "base.yaml", "name: base\nresources:\n  pids: {max: 64}\n")
    child = write_policy(tmp_path, "child.yaml", "name: child\nextends: base.yaml\n"
                                                 "resources:\n  memory: {max: 64Mi}\n")
    proc = run_cli("explain", "child.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert rows["resources.memory.max"].split()[1] == "64Mi"
    assert rows["resources.memory.max"].endswith("child.yaml:4:17")
    assert rows["resources.pids.max"].endswith("base.yaml:3:15")
    assert rows["no_new_privileges"].endswith("(built-in default)")
    data = json.loads(run_cli("explain", "--json", "child.yaml", cwd=tmp_path).stdout)
    fields = {f["field"]: f for f in data["fields"]}
    assert fields["resources.pids.max"] == {"field": "resources.pids.max", "value": "64",
                                            "origin": "base.yaml:3:15"}
    assert [Path(s["path"]).name for s in data["sources"]] == ["base.yaml", "child.yaml"]
    del child


def test_explain_syscall_table() -> None:
    proc = run_cli("explain", "default")
    assert proc.returncode == 0
    out = proc.stdout
    # The vocabulary of check, lint and diff (issue 19): before, check said
    # "376 syscall rules" while explain said "288 allowed, 59 denied".
    counts = re.search(r"^syscalls: (\d+) syscalls allowed, (\d+) allowed under argument checks, "
                       r"(\d+) denied \(of (\d+) on \w+\)$", out, re.M)
    assert counts, out
    allowed, conditional, denied, known = map(int, counts.groups())
    assert conditional == 2 and allowed + conditional + denied == known
    check = run_cli("check", "default").stdout
    assert f"{allowed} syscalls allowed, {conditional} allowed under argument checks, {denied} denied" \
        in check, check
    lint_doc = json.loads(run_cli("lint", "--json", "default").stdout)[0]
    surface = next(f for f in lint_doc["findings"] if f["id"] == "syscall-surface")
    assert surface["message"].startswith(f"allows {allowed} of {known} syscalls (+{conditional} ")
    assert re.search(r"^  a syscall no rule names: errno EPERM \(syscalls.default, ", out, re.M)
    assert re.search(r"^clone\s+allow\s+arg0 & 0x7e020000 == 0x0\s+clone\s+policies/default.yaml:\d+:\d+",
                     out, re.M), out
    assert re.search(r"^ptrace\s+errno EPERM\s+-\s+@debug\s+policies/default.yaml:", out, re.M)
    every = run_cli("explain", "--all-syscalls", "restricted").stdout
    assert re.search(r"^ptrace\s+denied$", every, re.M) and re.search(r"^read\s+allowed$", every, re.M)
    assert re.search(r"^getpid\s+allowed$", every, re.M)
    assert re.search(r"^socket\s+conditional$", every, re.M)  # the family allow-list


def test_explain_json_lists_rules() -> None:
    data = json.loads(run_cli("explain", "--json", "restricted").stdout)
    by_name = {r["syscall"]: r for r in data["syscalls"]}
    assert by_name["ptrace"]["action"] == "kill-process" and by_name["ptrace"]["via"] == "@debug"


def test_groups_verb() -> None:
    proc = run_cli("groups")
    assert proc.returncode == 0 and "@system-service" in proc.stdout and "@basic-io" in proc.stdout
    one = run_cli("groups", "@mount")
    assert "pivot_root" in one.stdout
    data = json.loads(run_cli("groups", "--json").stdout)
    assert {g["name"] for g in data} >= {"@privileged", "@network", "@debug"}
    assert run_cli("groups", "@netwrk").returncode == 2


def test_features_verb() -> None:
    proc = run_cli("features", "--json")
    assert proc.returncode == 0, proc.stderr
    f = json.loads(proc.stdout)
    with open("/proc/sys/kernel/seccomp/actions_avail") as fh:
        assert f["seccomp_actions"] == fh.read().split()
    assert f["cgroup_mode"] in ("v1", "v2", "hybrid", "none")
    assert re.fullmatch(r"\d+\.\d+\.\d+", f["libseccomp_version"])
    assert f["landlock_abi"] is None or f["landlock_abi"] >= 1
    text = run_cli("features").stdout
    assert "seccomp actions" in text and "landlock" in text and "libseccomp" in text


def test_cgroup_layout_from_fixture_tables(tmp_path: Path) -> None:
    from enforcer.policy.features import cgroup_layout

    cases = {
        "v2": "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n",
        "v1": "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n",
        "hybrid": "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
                  "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n",
        "none": "proc /proc proc rw 0 0\n",
    }
    for expected, table in cases.items():
        path = tmp_path / f"mounts-{expected}"
        path.write_text(table)
        assert cgroup_layout(str(path))[0] == expected
    assert cgroup_layout(str(tmp_path / "mounts-v1"))[2] == ("memory", "pids")


def test_policy_modules_do_not_load_at_cli_help() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0 and "check" in proc.stdout


def test_policies_readme_lists_every_shipped_policy_with_its_score() -> None:
    readme = (REPO / "policies" / "README.md").read_text()
    for path in SHIPPED:
        name = path.stem
        assert f"## {name}" in readme, name
        m = re.search(rf"^\| `{re.escape(name)}` \| (\d+\.\d) \|", readme, re.M)
        assert m, f"{name} missing from the README table"
        assert float(m.group(1)) == lint_mod.lint(load_policy(name)).score, name


def test_explain_wraps_long_values() -> None:
    """The capability row of `default` was over 200 characters."""
    out = run_cli("explain", "default").stdout
    table = out.split("\n\n")[1].splitlines()
    assert max(len(line) for line in table) < 140, max(table, key=len)
    start = next(i for i, line in enumerate(table) if line.startswith("capabilities.keep "))
    assert table[start + 1].startswith(" " * 50) and "CAP_" in table[start + 1]
    kept = " ".join(line.split("policies/")[0] for line in table[start:start + 4])
    assert all(f"CAP_{c}" in kept for c in ("CHOWN", "SETFCAP", "AUDIT_WRITE", "NET_RAW"))
    assert max(len(line) for line in out.splitlines()[:4]) < 120
