"""enforcer record without a kernel: learning, grouping, writing, merging,
and the audit-stream accounting. (tests/integration/test_record_*.py record
real workloads.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enforcer.policy.loader import load_policy
from enforcer.record.collector import CollectorError, SessionCollector
from enforcer.record.learn import base_answer, choose_groups, group_members, learn
from enforcer.record.merge import merge
from enforcer.record.recorder import RecordError, recording_policy
from enforcer.record.render import Provenance, policy_name_for, read_metadata, render
from record_helpers import allowed_names, audit_datagram, seccomp_record

X86 = ("x86_64",)


@pytest.fixture(scope="module")
def restricted():  # type: ignore[no-untyped-def]
    return load_policy("restricted")


# -- what the base allows -----------------------------------------------------


def test_base_answers(restricted) -> None:  # type: ignore[no-untyped-def]
    assert base_answer(restricted, "read").verdict == "allow"
    clone = base_answer(restricted, "clone")
    assert clone.verdict == "conditional" and clone.rules and all(r.args for r in clone.rules)
    assert base_answer(restricted, "ptrace").verdict == "blocked"  # kill-process rule
    assert "kill-process" in base_answer(restricted, "ptrace").why
    assert base_answer(restricted, "mount").verdict == "blocked"  # deny @mount
    assert base_answer(restricted, "io_setup").verdict == "blocked"  # default errno EPERM
    assert "default" in base_answer(restricted, "io_setup").why


def test_learn_never_allows_more_than_the_base(restricted) -> None:  # type: ignore[no-untyped-def]
    got = learn({"read": 5, "write": 2, "ptrace": 1, "mount": 3}, restricted)
    assert got.allow == {"read": 5, "write": 2}
    assert set(got.left_out) == {"ptrace", "mount"}
    assert got.left_out["mount"][0] == 3


def test_clone3_becomes_clone_with_the_base_conditions(restricted) -> None:  # type: ignore[no-untyped-def]
    got = learn({"clone3": 4, "read": 1}, restricted)
    assert "clone3" in got.left_out and "ENOSYS" in got.left_out["clone3"][1]
    assert [r.syscall for r, _, _ in got.rules] == ["clone"]
    rule = got.rules[0][0]
    assert rule.args and rule.args[0].op.value == "masked_eq"
    assert got.allowed_names() == {"read", "clone"}


def test_base_with_allow_default_allows_everything_seen(tmp_path: Path) -> None:
    p = tmp_path / "open.yaml"
    p.write_text("name: open\n")
    got = learn({"ptrace": 1, "read": 2}, load_policy(str(p)))
    assert got.allow == {"ptrace": 1, "read": 2} and not got.left_out


def test_groups_only_when_every_member_was_seen() -> None:
    members = group_members("signal", X86)
    assert members and "sigreturn" not in members  # i386-only name left out on x86_64
    names = set(members) | {"read"}
    assert ("signal", members) in choose_groups(names, X86)
    names.discard(sorted(members)[0])
    assert all(g != "signal" for g, _ in choose_groups(names, X86))


def test_nested_groups_pick_the_largest() -> None:
    every = set()
    for g in ("basic-io", "file-system"):
        every |= group_members(g, X86)
    chosen = [g for g, _ in choose_groups(every, X86)]
    assert "basic-io" in chosen and "file-system" in chosen


# -- the written file -----------------------------------------------------------


def provenance(base: str = "restricted", **kw: object) -> Provenance:
    d: dict[str, object] = dict(base=base, host_arch="x86_64", arches_seen=("x86_64",),
                                default_action="errno EPERM", records=10,
                                runs=[{"when": "2026-01-01T00:00:00Z", "command": "demo --x",
                                       "records": 10, "processes": 1, "exit_status": 0}])
    d.update(kw)
    return Provenance(**d)  # type: ignore[arg-type]


def test_rendered_policy_loads_and_allows_exactly_what_was_learned(tmp_path: Path,
                                                                   restricted) -> None:  # type: ignore[no-untyped-def]
    seen = {n: 3 for n in group_members("signal", X86)}
    seen.update({"read": 7, "write": 1, "clone3": 2, "ptrace": 1})
    got = learn(seen, restricted)
    text = render(got, provenance(), name="demo", arches=X86, when="now")
    out = tmp_path / "demo.yaml"
    out.write_text(text)
    policy = load_policy(str(out))
    assert allowed_names(policy) == got.allowed_names()
    assert "ptrace" not in allowed_names(policy) and "mount" not in allowed_names(policy)
    assert '- "@signal"' in text  # every member seen -> the group
    assert "- read             # 7" in text or "- read  # 7" in text or "# 7" in text
    assert "inherit: false" in text and "default: errno EPERM" in text
    assert "#   ptrace (1):" in text
    assert "demo --x" in text  # the header names the command
    meta = read_metadata(text, "demo.yaml")
    assert meta["base"] == "restricted" and meta["counts"]["read"] == 7
    assert policy.filesystem.read_only_root  # the base's other rules still apply


def test_other_default_action(tmp_path: Path, restricted) -> None:  # type: ignore[no-untyped-def]
    text = render(learn({"read": 1}, restricted), provenance(default_action="kill-process"),
                  name="k", arches=X86, when="now")
    (tmp_path / "k.yaml").write_text(text)
    assert str(load_policy(str(tmp_path / "k.yaml")).syscalls.default_action) == "kill-process"


def test_policy_name_from_file_name() -> None:
    assert policy_name_for("/x/Web Server.yaml") == "web-server"
    assert policy_name_for("/x/___.yaml") == "recorded"


def test_recording_policy_logs_everything_and_keeps_the_rest(restricted) -> None:  # type: ignore[no-untyped-def]
    rec = recording_policy(restricted)
    assert rec.syscalls.rules == () and rec.syscalls.default_action.kind.value == "log"
    assert rec.syscalls.architectures == restricted.syscalls.architectures
    assert rec.capabilities == restricted.capabilities and rec.user == restricted.user
    assert rec.filesystem == restricted.filesystem and rec.resources == restricted.resources


# -- merging ------------------------------------------------------------------------

# Two recordings written by hand, as `enforcer record` writes them.
REC_A = """\
# enforcer-record: {"version":1,"base":"restricted","host_arch":"x86_64","arches_seen":["x86_64"],"default_action":"errno EPERM","records":30,"counts":{"read":10,"write":5,"exit_group":1,"clone":2},"left_out":{"clone3":[2,"gets unknown"]},"runs":[{"command":"a"}]}
name: rec-a
extends: restricted
syscalls:
  inherit: false
  default: errno EPERM
  allow: [read, write, exit_group]
  rules:
    - syscalls: [clone]
      action: allow
      args:
        - {index: 0, op: masked_eq, value: 0, mask: 0x7e020000}
"""
REC_B = """\
# enforcer-record: {"version":1,"base":"restricted","host_arch":"x86_64","arches_seen":["x86_64"],"default_action":"errno EPERM","records":20,"counts":{"read":3,"openat":4,"exit_group":1},"left_out":{"ptrace":[1,"blocked"]},"runs":[{"command":"b"}]}
name: rec-b
extends: restricted
syscalls:
  inherit: false
  default: errno EPERM
  allow: [read, openat, exit_group]
"""


def write_recs(tmp: Path, **texts: str) -> list[str]:
    paths = []
    for name, text in texts.items():
        p = tmp / f"{name}.yaml"
        p.write_text(text)
        paths.append(str(p))
    return paths


def test_merge_allows_the_union_and_nothing_else(tmp_path: Path) -> None:
    a, b = write_recs(tmp_path, a=REC_A, b=REC_B)
    out = str(tmp_path / "c.yaml")
    learned, prov = merge([a, b])
    text = render(learned, prov, name="c", arches=X86, when="now")
    Path(out).write_text(text)
    pa, pb, pc = (load_policy(p) for p in (a, b, out))
    assert allowed_names(pc) == allowed_names(pa) | allowed_names(pb)
    assert allowed_names(pc) == {"read", "write", "exit_group", "openat", "clone"}
    # clone keeps its condition, and no other rule appears
    assert [(r.syscall, bool(r.args)) for r in pc.syscalls.rules if r.syscall == "clone"] == \
        [("clone", True)]
    meta = read_metadata(text, out)
    assert meta["counts"] == {"read": 13, "write": 5, "exit_group": 2, "openat": 4, "clone": 2}
    assert meta["records"] == 50 and len(meta["runs"]) == 2
    assert set(meta["left_out"]) == {"clone3", "ptrace"}
    assert str(pc.syscalls.default_action) == "errno EPERM"


def test_merge_reads_what_the_file_allows_not_just_its_metadata(tmp_path: Path) -> None:
    # A reviewer removed `write` from A by hand; the count line still has it.
    edited = REC_A.replace("allow: [read, write, exit_group]", "allow: [read, exit_group]")
    a, b = write_recs(tmp_path, a=edited, b=REC_B)
    learned, _ = merge([a, b])
    assert "write" not in learned.allowed_names()


def test_merge_refuses_different_bases(tmp_path: Path) -> None:
    other = REC_B.replace('"base":"restricted"', '"base":"default"').replace(
        "extends: restricted", "extends: default")
    a, b = write_recs(tmp_path, a=REC_A, b=other)
    with pytest.raises(RecordError, match="different bases"):
        merge([a, b])


def test_merge_refuses_different_architectures(tmp_path: Path) -> None:
    other = REC_B.replace('"host_arch":"x86_64"', '"host_arch":"aarch64"')
    a, b = write_recs(tmp_path, a=REC_A, b=other)
    with pytest.raises(RecordError, match="different architectures"):
        merge([a, b])


def test_merge_refuses_files_that_are_not_recordings(tmp_path: Path) -> None:
    a, b = write_recs(tmp_path, a=REC_A, b="name: plain\nextends: restricted\n")
    with pytest.raises(RecordError, match="not written by `enforcer record`"):
        merge([a, b])


# -- the audit stream ------------------------------------------------------------------


def test_collector_counts_by_session_and_action() -> None:
    c = SessionCollector()
    c.feed(audit_datagram(seccomp_record(1, ses=7, pid=100, nr=0)))
    c.feed(audit_datagram(seccomp_record(2, ses=7, pid=101, nr=0)))
    c.feed(audit_datagram(seccomp_record(3, ses=7, pid=101, nr=1)))
    c.feed(audit_datagram(seccomp_record(4, ses=8, pid=200, nr=1)))  # someone else
    c.feed(audit_datagram(seccomp_record(5, ses=7, pid=101, nr=11, code="0x80000000")))
    c.feed(audit_datagram("audit(1.0:6): op=login", mtype=1006))  # not seccomp: ignored
    c.feed(audit_datagram("garbage"))
    mine = c.session(7)
    assert mine.calls == {(0xC000003E, 0): 2, (0xC000003E, 1): 1}
    assert mine.other_actions == {(0xC000003E, 11, "kill-process"): 1}
    assert mine.pids == {100, 101} and mine.records == 4
    assert c.session(8).records == 1 and c.malformed == 1
    assert c.session(99).records == 0


def test_collector_fails_closed_on_overrun() -> None:
    c = SessionCollector()
    c.dropped, c.received = 3, 10  # the socket's drop counter, read when it closed
    with pytest.raises(CollectorError, match=r"dropped 3 audit record\(s\).*10 records were read"):
        c.check_complete()


def test_metadata_must_be_present_and_valid() -> None:
    with pytest.raises(ValueError):
        read_metadata("name: x\n", "x.yaml")
    with pytest.raises(ValueError):
        read_metadata("# enforcer-record: {nope\n", "x.yaml")
    assert read_metadata("# enforcer-record: " + json.dumps({"version": 1}) + "\n", "x")["version"] == 1


def test_command_with_newlines_and_odd_base_paths_stay_valid_yaml(tmp_path: Path,
                                                                  restricted) -> None:  # type: ignore[no-untyped-def]
    base = tmp_path / "my base: v2.yaml"
    base.write_text("name: my-base\nextends: restricted\n")
    prov = provenance(base="my base: v2.yaml",
                      runs=[{"command": "python3 -c 'import os\nprint(1)'", "records": 1}])
    text = render(learn({"read": 1}, restricted), prov, name="odd", arches=X86, when="now")
    (tmp_path / "odd.yaml").write_text(text)
    policy = load_policy(str(tmp_path / "odd.yaml"))
    assert allowed_names(policy) == {"read"}
    assert "import os\\nprint(1)" in text


def test_log_action_must_be_enabled(tmp_path: Path) -> None:
    from enforcer.record.collector import check_log_action_enabled

    on = tmp_path / "on"
    on.write_text("kill_process kill_thread trap errno user_notif trace log\n")
    check_log_action_enabled(str(on))
    off = tmp_path / "off"
    off.write_text("kill_process kill_thread trap errno\n")
    with pytest.raises(CollectorError, match="does not list `log`"):
        check_log_action_enabled(str(off))


def test_cli_usage_errors() -> None:
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "enforcer", "record", *args],
                              capture_output=True, text=True, timeout=60)

    r = run("-o", "x.yaml")
    assert r.returncode == 2 and "no command given" in r.stderr
    r = run("--merge", "a.yaml", "b.yaml", "-o", "x.yaml", "--", "true")
    assert r.returncode == 1 and "--merge takes recordings" in r.stderr
    r = run("--name", "Bad Name", "-o", "x.yaml", "--", "true")
    assert r.returncode == 1 and "--name" in r.stderr
    r = run("--merge", "only-one.yaml", "-o", "x.yaml")
    assert r.returncode == 1 and "at least two" in r.stderr


@pytest.mark.parametrize("name", ["true", "null", "1e3", "0x10", "no", "web"])
def test_policy_names_yaml_would_misread_are_quoted(tmp_path: Path, restricted,  # type: ignore[no-untyped-def]
                                                    name: str) -> None:
    text = render(learn({"read": 1}, restricted), provenance(), name=name, arches=X86, when="now")
    (tmp_path / "n.yaml").write_text(text)
    assert load_policy(str(tmp_path / "n.yaml")).name == name


def test_merged_recording_of_a_base_beside_it_loads_from_another_directory(
        tmp_path: Path) -> None:
    """`extends` in what `record` writes is a name or an absolute path, never
    relative to where it was written: the file works once copied elsewhere.
    (Before: `extends: bases/team.yaml`, and loading the copy failed with
    "policy file bases/team.yaml does not exist".)"""
    import shutil
    import subprocess
    import sys

    here, elsewhere = tmp_path / "recorded-here", tmp_path / "elsewhere"
    (here / "bases").mkdir(parents=True)
    elsewhere.mkdir()
    (here / "bases" / "team.yaml").write_text("name: team\nextends: restricted\n")
    texts = {n: t.replace('"base":"restricted"', '"base":"bases/team.yaml"')
             .replace("extends: restricted", "extends: bases/team.yaml")
             for n, t in (("a", REC_A), ("b", REC_B))}
    a, b = write_recs(here, **texts)
    r = subprocess.run([sys.executable, "-m", "enforcer", "record", "--merge", a, b,
                        "-o", "merged.yaml"], capture_output=True, text=True, timeout=120,
                       cwd=here)
    assert r.returncode == 0, r.stderr
    text = (here / "merged.yaml").read_text()
    team = str((here / "bases" / "team.yaml").resolve())
    assert f"extends: {team}\n" in text
    assert read_metadata(text, "merged.yaml")["base"] == team
    copy = elsewhere / "merged.yaml"
    shutil.copy(here / "merged.yaml", copy)
    r = subprocess.run([sys.executable, "-m", "enforcer", "check", "merged.yaml"],
                       capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert "team.yaml" in load_policy(str(copy)).sources[1][0]


def test_merged_recording_of_a_shipped_base_names_it(tmp_path: Path) -> None:
    from enforcer.policy.loader import resolve_policy_source

    shipped = resolve_policy_source("restricted")
    a, b = write_recs(tmp_path, a=REC_A.replace('"base":"restricted"', f'"base":"{shipped}"'),
                      b=REC_B.replace('"base":"restricted"', f'"base":"{shipped}"'))
    _, prov = merge([a, b])
    assert prov.base == "restricted"  # the shipped file, reached by its path: its name
