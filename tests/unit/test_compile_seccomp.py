"""The compiled seccomp filter, read back through a BPF interpreter."""

from __future__ import annotations

import errno

import pytest

from enforcer.compile import seccomp as S
from enforcer.errors import CompileError
from enforcer.policy.model import Action, ActionKind, Mode

from tests.compile_helpers import (
    ALLOW,
    AUDIT_ARCH_I386,
    KILL,
    RET_ALLOW,
    RET_ERRNO,
    RET_KILL_PROCESS,
    RET_LOG,
    cond,
    const_allow,
    decode,
    errno_action,
    rule,
    run_bpf,
    syscall_policy,
)

pytestmark = pytest.mark.skipif(S.native_arch() != "x86_64", reason="x86_64 syscall numbers")

NR = {"read": 0, "write": 1, "getpid": 39, "getppid": 110, "getuid": 102, "ptrace": 101,
      "personality": 135, "clone": 56, "clone3": 435, "socket": 41}
EPERM = RET_ERRNO | errno.EPERM
ENOSYS = RET_ERRNO | errno.ENOSYS


def basic_policy(**kw: object) -> object:
    return syscall_policy(
        rule("read"), rule("write"), rule("getpid"),
        rule("personality", ALLOW, cond(0, "eq", 0x1_0000_0000)),
        rule("getppid", ALLOW, cond(0, "masked_eq", 0x10020000, 0x10020000)),
        rule("ptrace", KILL),
        **kw)


@pytest.fixture(scope="module")
def bpf() -> bytes:
    return S.export_bpf(basic_policy())  # type: ignore[arg-type]


def test_allowed_and_default(bpf: bytes) -> None:
    assert run_bpf(bpf, NR["read"]) == RET_ALLOW
    assert run_bpf(bpf, NR["getpid"]) == RET_ALLOW
    assert run_bpf(bpf, NR["getuid"]) == EPERM
    assert run_bpf(bpf, NR["ptrace"]) == RET_KILL_PROCESS


def test_other_arch_is_killed(bpf: bytes) -> None:
    # i386 via int 0x80 arrives with AUDIT_ARCH_I386: bad arch -> kill.
    assert run_bpf(bpf, 20, arch=AUDIT_ARCH_I386) == RET_KILL_PROCESS


def test_x32_is_killed(bpf: bytes) -> None:
    for nr in (0x40000000 | NR["getpid"], 0x40000000 | 0, 0x40000000 | 512, 0x7FFFFFFF):
        assert run_bpf(bpf, nr) == RET_KILL_PROCESS, hex(nr)
    # nr == -1 (a tracer skipping a syscall) is not x32: default action.
    assert run_bpf(bpf, -1) == EPERM


def test_x32_admitted_when_asked() -> None:
    bpf = S.export_bpf(syscall_policy(rule("getpid"), architectures=("x86_64", "x32")))
    assert run_bpf(bpf, 0x40000000 | NR["getpid"]) == RET_ALLOW
    assert run_bpf(bpf, 0x40000000 | NR["getuid"]) == EPERM
    assert run_bpf(bpf, 20, arch=AUDIT_ARCH_I386) == RET_KILL_PROCESS


def test_x86_admitted_when_asked() -> None:
    bpf = S.export_bpf(syscall_policy(rule("getpid"), architectures=("native", "x86")))
    assert run_bpf(bpf, 20, arch=AUDIT_ARCH_I386) == RET_ALLOW  # getpid is 20 on i386
    assert run_bpf(bpf, 24, arch=AUDIT_ARCH_I386) == EPERM  # getuid
    assert run_bpf(bpf, 0x40000000 | NR["getpid"]) == RET_KILL_PROCESS  # x32 still killed


def test_64bit_argument_comparison(bpf: bytes) -> None:
    p = NR["personality"]
    assert run_bpf(bpf, p, args=(0x1_0000_0000,)) == RET_ALLOW
    # The low 32 bits alone must not match.
    assert run_bpf(bpf, p, args=(0,)) == EPERM
    assert run_bpf(bpf, p, args=(0x2_0000_0000,)) == EPERM


@pytest.mark.parametrize("op,value,yes,no", [
    ("gt", 0xFFFF_FFFF, [0x1_0000_0000, 2**64 - 1], [0xFFFF_FFFF, 0]),
    ("ge", 0x1_0000_0000, [0x1_0000_0000, 0x1_0000_0001], [0xFFFF_FFFF]),
    ("lt", 0x1_0000_0000, [0xFFFF_FFFF, 0], [0x1_0000_0000, 0x2_0000_0001]),
    ("le", 0x1_0000_0000, [0x1_0000_0000, 5], [0x1_0000_0001]),
    ("ne", 0x1_0000_0005, [5, 0x2_0000_0005], [0x1_0000_0005]),
    ("eq", 2**64 - 1, [2**64 - 1], [0xFFFF_FFFF, 2**63]),
])
def test_64bit_ops(op: str, value: int, yes: list[int], no: list[int]) -> None:
    bpf = S.export_bpf(syscall_policy(rule("getuid", ALLOW, cond(1, op, value))))
    for v in yes:
        assert run_bpf(bpf, NR["getuid"], args=(0, v)) == RET_ALLOW, (op, hex(v))
    for v in no:
        assert run_bpf(bpf, NR["getuid"], args=(0, v)) == EPERM, (op, hex(v))


def test_masked_eq_multi_flag(bpf: bytes) -> None:
    g = NR["getppid"]
    assert run_bpf(bpf, g, args=(0x10020000,)) == RET_ALLOW
    assert run_bpf(bpf, g, args=(0x10020000 | 0x11,)) == RET_ALLOW  # other bits ignored
    assert run_bpf(bpf, g, args=(0x10000000,)) == EPERM  # one flag of two
    assert run_bpf(bpf, g, args=(0x00020000,)) == EPERM
    assert run_bpf(bpf, g, args=(0,)) == EPERM


def test_masked_eq_high_word() -> None:
    bpf = S.export_bpf(syscall_policy(
        rule("getuid", errno_action(errno.EACCES), cond(0, "masked_eq", 0x1_0000_0001,
                                                          0x1_0000_0001)),
        default=ALLOW))
    assert run_bpf(bpf, NR["getuid"], args=(0x1_0000_0001,)) == RET_ERRNO | errno.EACCES
    assert run_bpf(bpf, NR["getuid"], args=(0xF_0000_00F1,)) == RET_ERRNO | errno.EACCES
    assert run_bpf(bpf, NR["getuid"], args=(1,)) == RET_ALLOW
    assert run_bpf(bpf, NR["getuid"], args=(0x1_0000_0000,)) == RET_ALLOW


def test_masked_eq_value_outside_mask_is_an_error() -> None:
    with pytest.raises(CompileError, match="outside"):
        S.export_bpf(syscall_policy(rule("getuid", ALLOW, cond(0, "masked_eq", 3, 1))))


def test_clone3_gets_enosys_when_not_allowed(bpf: bytes) -> None:
    assert run_bpf(bpf, NR["clone3"]) == ENOSYS


def test_clone3_blocked_by_a_group_still_gets_enosys() -> None:
    bpf = S.export_bpf(syscall_policy(rule("clone3", errno_action(errno.EPERM), via="@process"),
                                      default=ALLOW))
    # A @group's deny would give EPERM, which breaks glibc's fallback to clone.
    assert run_bpf(bpf, NR["clone3"]) == ENOSYS


def test_clone3_named_by_policy_is_respected() -> None:
    bpf = S.export_bpf(syscall_policy(rule("clone3", errno_action(errno.EACCES))))
    assert run_bpf(bpf, NR["clone3"]) == RET_ERRNO | errno.EACCES
    bpf = S.export_bpf(syscall_policy(rule("clone3")))
    assert run_bpf(bpf, NR["clone3"]) == RET_ALLOW


def test_clone3_with_unknown_action_from_policy() -> None:
    p = syscall_policy(rule("getpid"), unknown_action=errno_action(errno.EOPNOTSUPP))
    assert run_bpf(S.export_bpf(p), NR["clone3"]) == RET_ERRNO | errno.EOPNOTSUPP


def test_numbers_newer_than_libseccomp_get_unknown_action(bpf: bytes) -> None:
    top = max(S.native_syscall_table())
    assert run_bpf(bpf, top) == EPERM  # known to libseccomp: the default
    assert run_bpf(bpf, top + 1) == ENOSYS
    assert run_bpf(bpf, top + S.UNKNOWN_HEADROOM) == ENOSYS
    assert run_bpf(bpf, top + S.UNKNOWN_HEADROOM + 1) == EPERM


def test_denylist_policy_adds_no_unknown_rules() -> None:
    bpf = S.export_bpf(syscall_policy(rule("ptrace", errno_action(errno.EPERM)), default=ALLOW))
    top = max(S.native_syscall_table())
    assert run_bpf(bpf, top + 1) == RET_ALLOW
    assert run_bpf(bpf, NR["clone3"]) == RET_ALLOW
    assert len(decode(bpf)) < 20


def test_unconditional_allows_are_cacheable_by_the_kernel(bpf: bytes) -> None:
    """Every syscall allowed without conditions is constant-allow for the
    kernel's action cache; conditional and denied ones are not."""
    for name in ("read", "write", "getpid"):
        assert const_allow(bpf, NR[name]), name
    for name in ("personality", "getppid", "getuid", "ptrace", "clone3"):
        assert not const_allow(bpf, NR[name]), name


def test_large_policy_allows_are_all_cacheable() -> None:
    table = S.native_syscall_table()
    allowed = [n for n in sorted(table.values())
               if n not in ("ptrace", "personality", "socket", "clone", "clone3", "kexec_load")]
    rules = [rule(n) for n in allowed[:300]]
    rules += [rule("socket", ALLOW, cond(0, "eq", 2)), rule("socket", ALLOW, cond(0, "eq", 10)),
              rule("personality", ALLOW, cond(0, "eq", 0)),
              rule("clone", ALLOW, cond(0, "masked_eq", 0, 0x7E020000))]
    bpf = S.export_bpf(syscall_policy(*rules))
    by_name = {v: k for k, v in table.items()}
    for n in allowed[:300]:
        assert const_allow(bpf, by_name[n]), n
    assert run_bpf(bpf, NR["socket"], args=(2,)) == RET_ALLOW
    assert run_bpf(bpf, NR["socket"], args=(1,)) == EPERM
    # binary tree: a few dozen instructions deep at most, not hundreds
    assert len(decode(bpf)) < 4096


def test_no_instruction_pointer_loads(bpf: bytes) -> None:
    # offset 8 is seccomp_data.instruction_pointer
    assert not any(code == 0x20 and k in (8, 12) for code, _, _, k in decode(bpf))


def test_audit_mode_logs_instead_of_blocking() -> None:
    p = basic_policy()
    bpf = S.export_bpf(p, Mode.AUDIT)  # type: ignore[arg-type]
    assert run_bpf(bpf, NR["getuid"]) == RET_LOG
    assert run_bpf(bpf, NR["ptrace"]) == RET_LOG
    assert run_bpf(bpf, NR["read"]) == RET_ALLOW
    assert run_bpf(bpf, 0x40000000 | 39) == RET_LOG
    assert run_bpf(bpf, 20, arch=AUDIT_ARCH_I386) == RET_LOG
    assert run_bpf(bpf, NR["clone3"]) == RET_LOG


def test_actions() -> None:
    bpf = S.export_bpf(syscall_policy(
        rule("getuid", Action(ActionKind.TRAP)), rule("getgid", Action(ActionKind.KILL_THREAD)),
        rule("getpid", Action(ActionKind.LOG)), default=Action(ActionKind.KILL_PROCESS)))
    assert run_bpf(bpf, NR["getuid"]) == 0x00030000
    assert run_bpf(bpf, 104) == 0  # getgid: kill thread
    assert run_bpf(bpf, NR["getpid"]) == RET_LOG
    assert run_bpf(bpf, NR["read"]) == RET_KILL_PROCESS


def test_rule_equal_to_default_is_harmless() -> None:
    bpf = S.export_bpf(syscall_policy(rule("getuid", errno_action(errno.EPERM)), rule("read")))
    assert run_bpf(bpf, NR["getuid"]) == EPERM


def test_pfc_shows_rules() -> None:
    pfc = S.export_pfc(basic_policy())  # type: ignore[arg-type]
    assert 'filter for syscall "ptrace"' in pfc
    assert "action KILL_PROCESS;" in pfc  # the invalid-architecture action
    assert "$a0.hi32 == 1" in pfc


def test_compile_seccomp_plan() -> None:
    res = S.compile_seccomp(basic_policy())  # type: ignore[arg-type]
    plan = res.plan
    assert plan.native_arch == "x86_64"
    assert plan.architectures == ("x86_64",)
    assert plan.default_action == "errno EPERM"
    assert plan.filter.flags == ("log",)
    assert plan.syscall_names[101] == "ptrace"
    assert plan.syscall_names[0] == "read"
    assert plan.filter.bpf == S.export_bpf(basic_policy())  # type: ignore[arg-type]


def test_log_flag_follows_policy() -> None:
    p = syscall_policy(rule("read"), log_denials=False)
    assert S.compile_seccomp(p).plan.filter.flags == ()


def test_multi_arch_keeps_unknown_handling_on_native() -> None:
    res = S.compile_seccomp(syscall_policy(rule("getpid"), architectures=("x86_64", "x86")))
    assert any("native architecture only" in n for n in res.notes)
    assert res.plan.architectures == ("x86_64", "x86")
    bpf = res.plan.filter.bpf
    top = max(S.native_syscall_table())
    assert run_bpf(bpf, top + 1) == ENOSYS
    assert run_bpf(bpf, NR["clone3"]) == ENOSYS
    assert run_bpf(bpf, 435, arch=AUDIT_ARCH_I386) == ENOSYS  # clone3 on i386 too
    assert run_bpf(bpf, 20, arch=AUDIT_ARCH_I386) == RET_ALLOW
    assert const_allow(bpf, NR["getpid"])


def test_foreign_arch_only_is_noted() -> None:
    res = S.compile_seccomp(syscall_policy(rule("getpid"), architectures=("aarch64",)))
    assert any("does not admit this host's architecture" in n for n in res.notes)
    assert run_bpf(res.plan.filter.bpf, NR["getpid"]) == RET_KILL_PROCESS


def test_unknown_architecture_is_an_error() -> None:
    with pytest.raises(CompileError, match="architecture"):
        S.export_bpf(syscall_policy(rule("read"), architectures=("vax",)))


def test_libseccomp_version_matches_cache_probe() -> None:
    from enforcer.planstore import libseccomp_version

    assert S.libseccomp_version() == libseccomp_version()
    assert tuple(int(x) for x in libseccomp_version().split(".")) >= (2, 5, 0)


def test_shipped_policies_unconditional_allows_all_cached() -> None:
    """Every shipped policy: each syscall allowed without conditions is one
    the kernel's action cache takes (issue 8 point 3)."""
    loader = pytest.importorskip("enforcer.policy.loader")
    names = loader.shipped_names()
    if not names:
        pytest.skip("no shipped policies yet")
    by_name = {v: k for k, v in S.native_syscall_table().items()}
    for name in names:
        policy = loader.load_policy(name)
        bpf = S.export_bpf(policy)
        conditional = {r.syscall for r in policy.syscalls.rules if r.args}
        allowed = {r.syscall for r in policy.syscalls.rules
                   if not r.args and r.action.kind is ActionKind.ALLOW} - conditional
        checked = [s for s in allowed if s in by_name]
        assert checked, name
        assert [s for s in checked if not const_allow(bpf, by_name[s])] == [], name


def test_overlapping_conditional_rules_are_noted() -> None:
    allow_1 = rule("getuid", ALLOW, cond(0, "eq", 1))
    deny_arg1 = rule("getuid", errno_action(errno.EACCES), cond(1, "eq", 2))
    assert S.overlapping_rules((allow_1, deny_arg1)) == [(allow_1, deny_arg1)]
    res = S.compile_seccomp(syscall_policy(allow_1, deny_arg1))
    assert any("decides which applies" in n for n in res.notes)


@pytest.mark.parametrize("a,b", [
    (cond(0, "eq", 1), cond(0, "eq", 2)),
    (cond(0, "lt", 10), cond(0, "ge", 10)),
    (cond(0, "masked_eq", 1, 1), cond(0, "masked_eq", 0, 1)),
    (cond(0, "eq", 2), cond(0, "masked_eq", 1, 1)),
    (cond(0, "ne", 5), cond(0, "eq", 5)),
])
def test_exclusive_conditions_are_not_noted(a: object, b: object) -> None:
    r1 = rule("getuid", ALLOW, a)  # type: ignore[arg-type]
    r2 = rule("getuid", errno_action(errno.EACCES), b)  # type: ignore[arg-type]
    assert S.overlapping_rules((r1, r2)) == []


def test_same_action_rules_are_not_noted() -> None:
    r1 = rule("socket", ALLOW, cond(0, "eq", 2))
    r2 = rule("socket", ALLOW, cond(1, "eq", 1))
    assert S.overlapping_rules((r1, r2)) == []


# -- syscalls newer than libseccomp (issue 17) ---------------------------------

X32_BIT = 0x40000000


def test_libseccomp_refuses_raw_numbers_for_another_architecture() -> None:
    """Why the numbered block exists: libseccomp translates a raw number to
    a non-native architecture through its native name table, and a number
    it has no name for fails (EFAULT). If a libseccomp release changes
    this, the block may no longer be needed."""
    ps = S._ps()
    flt = ps.SyscallFilter(RET_ERRNO | 1)
    flt.add_arch(S.arch_token("x86"))
    with pytest.raises(OSError) as e:
        flt.add_rule(RET_ALLOW, 462)  # mseal, unknown to libseccomp 2.5.4
    assert e.value.errno == errno.EFAULT


def test_newer_syscalls_compile_by_number_on_every_architecture_of_the_filter() -> None:
    p = syscall_policy(rule("read"), rule("mseal"), rule("setxattrat"), rule("uprobe"),
                       rule("statmount", errno_action(errno.EACCES)),
                       architectures=("x86_64", "x86", "x32"))
    bpf = S.export_bpf(p)  # type: ignore[arg-type]
    x86_64, i386 = 0xC000003E, AUDIT_ARCH_I386
    for nr, arch in ((462, x86_64), (463, x86_64), (336, x86_64), (462, i386), (463, i386),
                     (X32_BIT | 462, x86_64), (X32_BIT | 463, x86_64)):
        assert run_bpf(bpf, nr, arch) == RET_ALLOW, (hex(nr), hex(arch))
        assert const_allow(bpf, nr, arch), (hex(nr), hex(arch))  # still cacheable
    for nr, arch in ((457, x86_64), (457, i386), (X32_BIT | 457, x86_64)):
        assert run_bpf(bpf, nr, arch) == RET_ERRNO | errno.EACCES
    assert run_bpf(bpf, 336, i386) == EPERM  # uprobe is x86_64's only: i386 336 is not it
    assert run_bpf(bpf, 464, i386) == EPERM  # getxattrat: not allowed
    assert run_bpf(bpf, 0, x86_64) == RET_ALLOW and run_bpf(bpf, 3, i386) == RET_ALLOW  # read
    pfc = S.export_pfc(p)  # type: ignore[arg-type]
    assert "#   x86: mseal (0x1ce) -> action 0x7fff0000" in pfc


def test_conditions_on_a_newer_syscall_of_another_arch_are_refused() -> None:
    p = syscall_policy(rule("mseal", ALLOW, cond(2, "eq", 0)), architectures=("x86_64", "x86"))
    with pytest.raises(CompileError, match="argument conditions on mseal cannot be compiled "
                                           "for x86"):
        S.export_bpf(p)  # type: ignore[arg-type]
    # On the native architecture alone, libseccomp takes them by number.
    bpf = S.export_bpf(syscall_policy(rule("mseal", ALLOW, cond(2, "eq", 0))))  # type: ignore[arg-type]
    assert run_bpf(bpf, 462, args=(0, 4096, 0)) == RET_ALLOW
    assert run_bpf(bpf, 462, args=(0, 4096, 1)) == EPERM


def test_unknown_range_starts_above_the_table() -> None:
    bpf = S.export_bpf(syscall_policy(rule("read")))  # type: ignore[arg-type]
    top = max(S.native_syscall_table())
    assert top >= 469  # file_setattr, from the addendum
    assert run_bpf(bpf, 462) == EPERM  # mseal: a known syscall the policy does not allow
    assert run_bpf(bpf, top + 1) == ENOSYS
    assert S.native_syscall_table()[462] == "mseal"  # the Plan names it in denials
