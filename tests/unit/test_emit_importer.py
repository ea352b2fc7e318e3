"""enforcer.importer.docker_seccomp: resolution rules and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enforcer.importer.docker_seccomp import (
    Resolution,
    SeccompImportError,
    convert,
    import_profile,
    policy_name,
)
from enforcer.policy.loader import load_policy
from enforcer.policy.model import ActionKind, ArgOp

from tests.paths import DOCKER_DEFAULT_SECCOMP as FIXTURE  # noqa: E402
DOCKER_CAPS = frozenset("CAP_" + c for c in (
    "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP "
    "NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE").split())
RES = Resolution(caps=DOCKER_CAPS, arch="x86_64", kernel=(6, 1))


def _profile(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO",
                            "architectures": ["SCMP_ARCH_X86_64"],
                            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}
    base.update(kw)
    return base


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    return path


def test_simple_profile_round_trips_through_the_loader(tmp_path: Path) -> None:
    data = _profile(defaultErrnoRet=13, syscalls=[
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 0xF, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}]},
    ], flags=["SECCOMP_FILTER_FLAG_LOG"])
    text, notes = import_profile(str(_write(tmp_path, data)), arch="x86_64", kernel=(6, 1))
    assert notes == []
    out = tmp_path / "p.yaml"
    out.write_text(text)
    policy = load_policy(str(out))
    sp = policy.syscalls
    assert sp.default_action.kind is ActionKind.ERRNO and sp.default_action.errno == 13
    assert sp.log_denials is True
    by_name = {r.syscall: r for r in sp.rules}
    assert by_name["read"].action.kind is ActionKind.ALLOW
    assert by_name["ptrace"].action.kind is ActionKind.KILL_PROCESS
    sock = by_name["socket"]
    assert [(a.index, a.op, a.value, a.mask) for a in sock.args] == [
        (0, ArgOp.EQ, 2, None), (1, ArgOp.MASKED_EQ, 1, 0xF)]


def test_docker_default_resolution_by_caps_and_arch() -> None:
    data = json.loads(FIXTURE.read_text())
    default = convert(data, RES)
    assert default.architectures == ("x86_64", "x86", "x32")
    assert "chroot" in default.allow  # CAP_SYS_CHROOT is a Docker default
    assert "arch_prctl" in default.allow  # includes.arches amd64
    assert "bpf" not in default.allow and "mount" not in default.allow
    assert "riscv_flush_icache" not in default.allow  # another arch's entry
    clone = [r for r in default.rules if r.syscalls == ("clone",)]
    assert len(clone) == 1 and clone[0].args == ((0, "masked_eq", 0, 0x7E020000),)
    assert any(r.syscalls == ("clone3",) and r.action == "errno ENOSYS" for r in default.rules)

    admin = convert(data, Resolution(caps=DOCKER_CAPS | {"CAP_SYS_ADMIN"}, arch="x86_64",
                                     kernel=(6, 1)))
    assert {"mount", "clone", "clone3", "unshare"} <= set(admin.allow)
    assert not [r for r in admin.rules if "clone" in r.syscalls or "clone3" in r.syscalls]

    old_kernel = convert(data, Resolution(caps=DOCKER_CAPS, arch="x86_64", kernel=(4, 4)))
    assert "ptrace" in default.allow and "ptrace" not in old_kernel.allow  # minKernel 4.8


def test_aarch64_resolution_uses_its_archmap_entry() -> None:
    data = json.loads(FIXTURE.read_text())
    arm = convert(data, Resolution(caps=DOCKER_CAPS, arch="aarch64", kernel=(6, 1)))
    assert arm.architectures == ("aarch64", "arm")
    assert "arch_prctl" not in arm.allow and "cacheflush" in arm.allow


def test_rules_equal_to_the_default_are_left_out() -> None:
    data = _profile(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                              {"names": ["mount"], "action": "SCMP_ACT_ERRNO"}])
    result = convert(data, RES)
    assert result.allow == ["read"] and result.rules == []


def test_same_index_twice_becomes_one_rule_per_condition() -> None:
    data = _profile(syscalls=[{"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
        {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
        {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]}])
    result = convert(data, RES)
    assert [r.args for r in result.rules] == [((0, "eq", 2, None),), ((0, "eq", 10, None),)]


def test_unknown_names_are_left_out_with_a_note() -> None:
    data = _profile(syscalls=[{"names": ["read", "no_such_call"], "action": "SCMP_ACT_ALLOW"}])
    result = convert(data, RES)
    assert result.allow == ["read"]
    assert result.notes == ["syscalls[0]: no_such_call left out: not a syscall on this "
                            "architecture (x86_64; runc leaves it out too)"]


def test_names_newer_than_libseccomp_are_kept_and_said_so() -> None:
    """Issue 17: listmount is x86_64 syscall 458; saying "not a syscall" was false."""
    data = _profile(syscalls=[{"names": ["read", "listmount", "setxattrat", "riscv_hwprobe"],
                               "action": "SCMP_ACT_ALLOW"}])
    result = convert(data, RES)
    assert result.allow == ["read", "listmount", "setxattrat"]
    assert result.notes == [
        "syscalls[0]: listmount on x86_64: unknown to libseccomp 2.5.4; compiled by number "
        "from enforcer's table (kernel 6.12)",
        "syscalls[0]: setxattrat on x86_64: unknown to libseccomp 2.5.4; compiled by number "
        "from enforcer's table (kernel 6.13)",
        "syscalls[0]: riscv_hwprobe left out: not a syscall on this architecture (x86_64; "
        "runc leaves it out too)"]


@pytest.mark.parametrize("mutate, path, words", [
    (lambda d: d.update(defaultAction="SCMP_ACT_EXPLODE"), "defaultAction", "unknown action"),
    (lambda d: d["syscalls"][0].update(action="SCMP_ACT_BOGUS"), "syscalls[0].action",
     "unknown action"),
    (lambda d: d["syscalls"][0].update(action="SCMP_ACT_TRACE"), "syscalls[0].action",
     "cannot be expressed"),
    (lambda d: d.update(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]),
     "architectures[1]", "unknown architecture"),
    (lambda d: d["syscalls"][0].update(args=[{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]),
     "syscalls[0].args[0].op", "unknown operator"),
    (lambda d: d["syscalls"][0].update(args=[{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]),
     "syscalls[0].args[0].index", "outside 0..5"),
    (lambda d: d["syscalls"][0].update(includes={"arches": ["vax"]}),
     "syscalls[0].includes.arches[0]", "unknown architecture"),
    (lambda d: d["syscalls"][0].update(excludes={"caps": ["CAP_FLY"]}),
     "syscalls[0].excludes.caps[0]", "unknown capability"),
    (lambda d: d["syscalls"][0].update(includes={"minKernel": "four"}),
     "syscalls[0].includes.minKernel", "MAJOR.MINOR"),
    (lambda d: d.update(flags=["SECCOMP_FILTER_FLAG_MAGIC"]), "flags[0]", "unknown flag"),
    (lambda d: d["syscalls"][0].update(action="SCMP_ACT_NOTIFY"), "syscalls[0].action",
     "notification listener"),
    (lambda d: d.update(listenerPath=["/run/agent.sock"]), "listenerPath", "a string"),
    (lambda d: d.update(surprise=1), "surprise", "unknown field"),
    (lambda d: d["syscalls"][0].update(errnoRet=5), "syscalls[0].errnoRet", "only meaningful"),
    (lambda d: d["syscalls"][0].update(errno="EACCES"), "syscalls[0].errno", "only meaningful"),
    (lambda d: d.update(defaultErrno="EPREM"), "defaultErrno", "unknown errno name"),
    (lambda d: d.update(defaultErrno="errno"), "defaultErrno", "unknown errno name"),
    (lambda d: d.update(defaultErrno="ENOSYS", defaultErrnoRet=1), "defaultErrno",
     "ENOSYS is 38, but defaultErrnoRet says 1"),
    (lambda d: d["syscalls"][0].update(action="SCMP_ACT_ERRNO", errno=13), "syscalls[0].errno",
     "an errno name"),
    (lambda d: d["syscalls"][0].update(includes={"minKernel": "6.1", "kernel": "6"}),
     "syscalls[0].includes.kernel", "unknown field"),
    (lambda d: d["archMap"][0].update(sub=[]) if "archMap" in d else d.update(
        archMap=[{"architecture": "SCMP_ARCH_X86_64", "sub": []}], architectures=None),
     "archMap[0].sub", "unknown field"),
])
def test_bad_input_names_the_json_path(mutate: Any, path: str, words: str) -> None:
    data = _profile()
    mutate(data)
    with pytest.raises(SeccompImportError) as e:
        convert(data, RES, source="p.json")
    message = str(e.value)
    assert message.startswith(f"p.json: {path}: "), message
    assert words in message and "nothing written" in message


def test_bad_arch_in_an_entry_for_another_arch_is_still_an_error() -> None:
    data = _profile(archMap=[{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []},
                             {"architecture": "SCMP_ARCH_PDP11"}])
    del data["architectures"]
    with pytest.raises(SeccompImportError, match=r"archMap\[1\]\.architecture"):
        convert(data, RES)


def test_two_unconditional_actions_keep_the_first_as_libseccomp_does() -> None:
    """libseccomp keeps the first unconditional rule of a syscall (runc adds
    the entries in order); containers/common's profile relies on it."""
    data = _profile(syscalls=[{"names": ["ptrace"], "action": "SCMP_ACT_ALLOW"},
                              {"names": ["ptrace"], "action": "SCMP_ACT_KILL"},
                              {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                               "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}]}])
    result = convert(data, RES)
    assert result.allow == ["ptrace"] and result.rules == []
    assert any(n.startswith("syscalls[1]: ptrace kill-thread left out: syscalls[0]")
               for n in result.notes), result.notes
    assert any(n.startswith("syscalls[2]: conditional ptrace rule") for n in result.notes)


def test_errno_by_name_as_containers_common_writes_it() -> None:
    data = _profile(defaultErrno="ENOSYS", syscalls=[
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errno": "EACCES"},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errno": "EPERM", "errnoRet": 1},
        {"names": ["kcmp"], "action": "SCMP_ACT_ERRNO", "errno": "", "errnoRet": 22}])
    result = convert(data, RES)
    assert result.default == "errno ENOSYS"
    assert {r.syscalls: r.action for r in result.rules} == {
        ("ptrace",): "errno EACCES", ("bpf",): "errno EPERM", ("kcmp",): "errno EINVAL"}


def test_fields_that_decide_nothing_are_accepted_with_a_note() -> None:
    data = _profile(listenerPath="/run/agent.sock", listenerMetadata="x", comment="c",
                    syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "y"}])
    result = convert(data, RES)
    assert result.allow == ["read"]
    assert [n.split(":")[0] for n in result.notes] == ["listenerPath", "listenerMetadata"]


def test_min_kernel_includes_and_excludes() -> None:
    data = _profile(syscalls=[
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mseal"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.10"}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "4.8"}}])
    old = convert(data, Resolution(caps=DOCKER_CAPS, arch="x86_64", kernel=(4, 4)))
    new = convert(data, Resolution(caps=DOCKER_CAPS, arch="x86_64", kernel=(6, 12)))
    assert old.allow == ["read", "ptrace"]
    assert new.allow == ["read", "mseal"]


def test_not_json_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(SeccompImportError, match="not valid JSON"):
        import_profile(str(path))


def test_policy_name_from_file_name() -> None:
    assert policy_name("/x/Docker_Default.JSON") == "docker_default"
    assert policy_name("/x/--.json") == "imported"
    assert len(policy_name("/x/" + "a" * 100 + ".json")) == 63


def test_scmp_arch_native_is_the_resolved_architecture() -> None:
    result = convert(_profile(architectures=["SCMP_ARCH_NATIVE", "SCMP_ARCH_X86"]), RES)
    assert result.architectures == ("x86_64", "x86")
