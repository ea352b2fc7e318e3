"""Seccomp: turn a Policy's syscall rules into one BPF program via libseccomp.

The filter is built to be as cheap as the kernel allows (issue 8) and to
fail closed on the architecture tricks that get around a naive filter. The
figures are from bench/run on a 2-core x86_64, kernel 6.18, libseccomp
2.5.4 (bench/results/README.md; docs/compile.md has more):

* One filter, no stacking. Each stacked filter runs on every syscall that
  is not cached.
* Native architecture only, unless the policy names others. Anything of
  another architecture -- i386 via `int 0x80` on x86_64, for instance -- hits
  the "bad architecture" action, which we set to KILL_PROCESS: a syscall
  table the policy never looked at must not be reachable at all. The check
  costs 2 instructions, and only on syscalls the kernel does not cache.
* x32 on x86_64: x32 syscalls arrive with the x86_64 audit arch and the
  number ORed with 0x40000000. libseccomp 2.5 emits, for an x86_64 filter
  without x32, `if (nr >= 0x40000000 && nr != -1) -> bad-arch action`, so
  with bad-arch = KILL_PROCESS they are killed (3 instructions; the pfc
  text does not show this test; tests read the BPF and run a real x32
  syscall).
* Binary-tree dispatch on the syscall number (SCMP_FLTATR_CTL_OPTIMIZE=2):
  a syscall's cost is log2(rules), not its position in the policy. Measured:
  `personality` with its rule first or last compiles to identical BPF
  (376 vs 375 ns); under `default` it runs 22 instructions (380 ns) where
  Docker's profile, a linear chain as runc builds it, runs 614 (459 ns).
* Allowed syscalls without argument conditions depend only on (arch, nr):
  the path to their ALLOW reads nothing but `arch` and `nr`, so the kernel's
  seccomp action cache (Linux >= 5.11) proves them constant-allow and skips
  the filter entirely for them. We never add instruction-pointer checks, and
  argument loads appear only under the syscalls that have conditions.
  Measured: 286 of 368 native syscalls cached under `default` (all it
  allows unconditionally); argument-free syscalls cost what they cost under
  a one-rule filter (worst +1.8%, the same as a 1-instruction filter: noise).
* Syscalls newer than libseccomp are compiled by number from enforcer's
  table (enforcer/policy/syscall_table.py). libseccomp takes a raw number only as a
  native-architecture number: for another architecture of the filter it
  translates the number through its own native table by name, which a
  syscall it does not know has not (arch_syscall_translate() fails). So
  for the native architecture the number goes to libseccomp like any rule;
  for the others (i386 and x32 on x86_64, ...) the compiler puts a short
  block in front of libseccomp's program: `arch == A && nr == N -> action`
  for each such syscall, loads of arch and nr only (the action cache still
  proves them). Argument conditions on such a syscall of another
  architecture are refused (fail closed) rather than compiled by hand.
* No SPEC_ALLOW: it turns off the Speculative Store Bypass mitigation for
  the workload. Since Linux 5.16 seccomp no longer forces that mitigation by
  default (spec_store_bypass_disable=prctl), so the flag would buy nothing
  there and would undo an admin's explicit `=seccomp` choice elsewhere.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass, field
from typing import Any

from enforcer.kernel.arch import AUDIT_ARCH_X86_64 as _AUDIT_ARCH_X86_64
from enforcer.errors import CompileError
from enforcer.plan import SeccompFilter, SeccompPlan
from enforcer.policy.model import Action, ActionKind, ArgCondition, ArgOp, Mode, Policy, SyscallRule

# How many syscall numbers above the highest one libseccomp knows get the
# policy's `unknown` action (ENOSYS by default) instead of the default
# action. The kernel adds a few syscalls per release (451..469 arrived in
# Linux 6.5..6.17); 64 numbers cover many years of new calls. Measured on
# `default`: +80 instructions in their own subtree, +0 on the path of every
# syscall the bench measures.
UNKNOWN_HEADROOM = 64

_SCMP_ACT_KILL_PROCESS = 0x80000000
_SCMP_ACT_KILL_THREAD = 0x00000000
_SCMP_ACT_TRAP = 0x00030000
_SCMP_ACT_LOG = 0x7FFC0000
_SCMP_ACT_ALLOW = 0x7FFF0000

_OPS = {ArgOp.NE: 1, ArgOp.LT: 2, ArgOp.LE: 3, ArgOp.EQ: 4, ArgOp.GE: 5, ArgOp.GT: 6,
        ArgOp.MASKED_EQ: 7}

_U64 = (1 << 64) - 1


@dataclass
class SeccompResult:
    plan: SeccompPlan
    notes: list[str] = field(default_factory=list)


# -- libseccomp access ------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _ps() -> Any:
    """pyseccomp, imported on first use (it costs ~30 ms; never on the start path)."""
    import pyseccomp

    lib = pyseccomp._libseccomp
    # pyseccomp leaves these without argtypes (or does not bind them at all).
    lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_name_arch.argtypes = (ctypes.c_uint32, ctypes.c_char_p)
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    return pyseccomp


def _lib() -> Any:
    return _ps()._libseccomp


def arch_token(name: str) -> int:
    token = int(_lib().seccomp_arch_resolve_name(name.encode()))
    if token == 0:
        raise CompileError(f"seccomp: libseccomp does not know architecture {name!r}")
    return token


@functools.lru_cache(maxsize=1)
def native_arch() -> str:
    from enforcer.policy import syscalls

    return syscalls.native_arch()


@functools.lru_cache(maxsize=1)
def native_syscall_table() -> dict[int, str]:
    """Every syscall number of the native arch -> its name: enforcer's table
    (enforcer/policy/syscall_table.py) and what libseccomp knows besides."""
    from enforcer.policy import syscall_table

    table = dict(libseccomp_syscall_table())
    own = syscall_table.table(native_arch())
    if own is not None:
        table.update(own.by_number)
    return dict(sorted(table.items()))


@functools.lru_cache(maxsize=1)
def libseccomp_syscall_table() -> dict[int, str]:
    """Every syscall number libseccomp knows on the native arch -> its name."""
    ps = _ps()
    lib = ps._libseccomp
    token = int(ps.system_arch())
    table: dict[int, str] = {}
    # x86_64, aarch64, riscv64, ppc64 and s390x numbers are all below 1024
    # (x32's sit above 512 with the x32 bit). MIPS tables start at 4000:
    # an enforcer host on MIPS would need a wider scan here.
    for nr in range(1024):
        ptr = lib.seccomp_syscall_resolve_num_arch(token, nr)
        if ptr:
            table[nr] = ctypes.string_at(ptr).decode()
            ps._libc.free(ptr)
    return table


def libseccomp_version() -> str:
    from enforcer.policy import syscalls

    return syscalls.libseccomp_version()


# -- actions ----------------------------------------------------------------


def effective_action(action: Action, mode: Mode) -> Action:
    """In audit mode nothing is blocked: every blocking action becomes LOG."""
    if mode is Mode.AUDIT and action.blocks:
        return Action(ActionKind.LOG)
    return action


def scmp_action(action: Action) -> int:
    kind = action.kind
    if kind is ActionKind.ALLOW:
        return _SCMP_ACT_ALLOW
    if kind is ActionKind.LOG:
        return _SCMP_ACT_LOG
    if kind is ActionKind.ERRNO:
        if action.errno is None or not 0 <= action.errno <= 4095:
            raise CompileError(f"seccomp: errno {action.errno!r} is not 0..4095")
        return 0x00050000 | action.errno
    if kind is ActionKind.TRAP:
        return _SCMP_ACT_TRAP
    if kind is ActionKind.KILL_THREAD:
        return _SCMP_ACT_KILL_THREAD
    if kind is ActionKind.KILL_PROCESS:
        return _SCMP_ACT_KILL_PROCESS
    raise CompileError(f"seccomp: unsupported action {action}")  # pragma: no cover


# -- building the filter ----------------------------------------------------


@dataclass(frozen=True)
class NumberedRule:
    """A syscall of a non-native architecture that libseccomp does not know:
    compiled into the block in front of libseccomp's program."""

    arch: str
    nr: int
    action: int  # SCMP_ACT_* value
    name: str


@dataclass
class _Built:
    filter: Any  # pyseccomp.SyscallFilter
    arches: tuple[str, ...]
    default: Action
    notes: list[str]
    numbered: list[NumberedRule] = field(default_factory=list)


def _where(rule: SyscallRule) -> str:
    via = f" (via {rule.via})" if rule.via and rule.via != rule.syscall else ""
    at = f"{rule.origin}: " if rule.origin else ""
    return f"{at}{rule.syscall}{via}"


def _arg(ps: Any, rule: SyscallRule) -> list[Any]:
    out = []
    for cond in rule.args:
        if not 0 <= cond.index <= 5:
            raise CompileError(f"seccomp: {_where(rule)}: argument index {cond.index} is not 0..5")
        if not 0 <= cond.value <= _U64:
            raise CompileError(f"seccomp: {_where(rule)}: value {cond.value} is not a 64-bit number")
        if cond.op is ArgOp.MASKED_EQ:
            mask = cond.mask if cond.mask is not None else _U64
            if not 0 <= mask <= _U64:
                raise CompileError(f"seccomp: {_where(rule)}: mask {mask} is not a 64-bit number")
            if cond.value & ~mask:
                # (arg & mask) can never equal a value with bits outside the mask.
                raise CompileError(
                    f"seccomp: {_where(rule)}: masked_eq value {cond.value:#x} has bits outside "
                    f"mask {mask:#x}; the rule could never match")
            # libseccomp: datum_a is the mask, datum_b the value.
            out.append(ps.Arg(cond.index, _OPS[cond.op], mask, cond.value))
        else:
            out.append(ps.Arg(cond.index, _OPS[cond.op], cond.value))
    return out


def _interval(c: ArgCondition) -> tuple[int, int] | None:
    if c.op is ArgOp.EQ:
        return c.value, c.value
    if c.op is ArgOp.LT:
        return 0, c.value - 1
    if c.op is ArgOp.LE:
        return 0, c.value
    if c.op is ArgOp.GT:
        return c.value + 1, _U64
    if c.op is ArgOp.GE:
        return c.value, _U64
    return None


def _holds(c: ArgCondition, v: int) -> bool:
    if c.op is ArgOp.MASKED_EQ:
        return v & (c.mask if c.mask is not None else _U64) == c.value
    iv = _interval(c)
    if iv is None:  # NE
        return v != c.value
    return iv[0] <= v <= iv[1]


def _disjoint(a: ArgCondition, b: ArgCondition) -> bool:
    """True when no value satisfies both (conservative: False if unsure)."""
    if a.op is ArgOp.EQ:
        return not _holds(b, a.value)
    if b.op is ArgOp.EQ:
        return not _holds(a, b.value)
    if a.op is ArgOp.MASKED_EQ and b.op is ArgOp.MASKED_EQ:
        ma = a.mask if a.mask is not None else _U64
        mb = b.mask if b.mask is not None else _U64
        return bool((a.value ^ b.value) & ma & mb)
    ia, ib = _interval(a), _interval(b)
    if ia is not None and ib is not None:
        return max(ia[0], ib[0]) > min(ia[1], ib[1])
    return False


def overlapping_rules(rules: tuple[SyscallRule, ...]) -> list[tuple[SyscallRule, SyscallRule]]:
    """Pairs of conditional rules on one syscall, with different actions,
    that some argument values satisfy both. libseccomp does not apply rules
    in policy order, so for those values the written order does not decide
    (measured: with the conditions on different arguments the ERRNO rule
    won either way round)."""
    pairs = []
    by_syscall: dict[str, list[SyscallRule]] = {}
    for r in rules:
        if r.args:
            by_syscall.setdefault(r.syscall, []).append(r)
    for group in by_syscall.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a.action == b.action:
                    continue
                if not any(ca.index == cb.index and _disjoint(ca, cb)
                           for ca in a.args for cb in b.args):
                    pairs.append((a, b))
    return pairs


def _clone3_gets_unknown(rules: tuple[SyscallRule, ...], default: Action) -> bool:
    """clone3 gets the `unknown` action (ENOSYS) when the policy would block
    it without having named it: glibc >= 2.34 tries clone3 first and falls
    back to clone only on ENOSYS, so EPERM from a blanket default or from a
    @group would break every new thread and fork."""
    mine = [r for r in rules if r.syscall == "clone3"]
    if any(r.via in ("", "clone3") for r in mine):
        return False  # the policy named clone3 itself: it decides
    if any(not r.action.blocks for r in mine):
        return False  # allowed (or logged) through a group
    return default.blocks or bool(mine)


def _new_filter(ps: Any, default: Action, mode: Mode) -> Any:
    try:
        flt = ps.SyscallFilter(scmp_action(default))
    except OSError as e:
        raise CompileError(f"seccomp: libseccomp refused default action {default}: {e}") from None
    # Anything not of the admitted architectures is killed (see module doc).
    badarch = effective_action(Action(ActionKind.KILL_PROCESS), mode)
    flt.set_attr(ps.Attr.ACT_BADARCH, scmp_action(badarch))
    # The apply sequence sets no_new_privs itself (it is a policy field), and
    # we never load through libseccomp: keep libseccomp's hands off it.
    flt.set_attr(ps.Attr.CTL_NNP, 0)
    # Binary tree on syscall numbers (libseccomp >= 2.5).
    try:
        flt.set_attr(ps.Attr.CTL_OPTIMIZE, 2)
    except OSError as e:
        raise CompileError(f"seccomp: libseccomp {libseccomp_version()} cannot build a binary "
                           f"tree (needs >= 2.5): {e}") from None
    return flt


def _set_arches(flt: Any, arches: list[str], native: str) -> None:
    for a in arches:
        if a != native:
            try:
                flt.add_arch(arch_token(a))
            except OSError as e:
                raise CompileError(f"seccomp: cannot add architecture {a}: {e}") from None
    if native not in arches:
        flt.remove_arch(arch_token(native))


def build_filter(policy: Policy, mode: Mode | None = None) -> _Built:
    """The libseccomp filter for the policy (not yet exported).

    With several architectures the filter is built as two and merged: one
    for the native arch (which can carry the `unknown` range, see
    _add_unknown_range) and one for the others. libseccomp requires the two
    to have the same attributes and no common architecture.
    """
    ps = _ps()
    mode = policy.mode if mode is None else mode
    sp = policy.syscalls
    notes: list[str] = []
    default = effective_action(sp.default_action, mode)
    default_scmp = scmp_action(default)
    unknown_scmp = scmp_action(effective_action(sp.unknown_action, mode))
    native = native_arch()
    from enforcer.policy.syscalls import effective_arches

    arches = effective_arches(sp.architectures)
    if native not in arches:
        notes.append(f"seccomp: the filter does not admit this host's architecture ({native}); "
                     "every syscall of a native program will be killed")
    groups = [g for g in ([a for a in arches if a == native], [a for a in arches if a != native])
              if g]

    clone3_unknown = _clone3_gets_unknown(sp.rules, sp.default_action)
    if clone3_unknown:
        for rule in sp.rules:
            if rule.syscall == "clone3":
                notes.append(f"seccomp: clone3 gets `unknown` ({sp.unknown_action}) instead of "
                             f"'{rule.action}' from {rule.via or 'a rule'}, so glibc falls back "
                             "to clone")

    for a, b in overlapping_rules(sp.rules):
        notes.append(f"seccomp: {_where(a)} ('{a.action}') and {_where(b)} ('{b.action}') can "
                     "match the same arguments; libseccomp, not the order written, decides "
                     "which applies -- make their conditions exclusive")

    filters = []
    numbered: list[NumberedRule] = []
    for group in groups:
        flt = _new_filter(ps, default, mode)
        _set_arches(flt, group, native)
        for rule in sp.rules:
            if clone3_unknown and rule.syscall == "clone3":
                continue
            action = effective_action(rule.action, mode)
            if scmp_action(action) == default_scmp:
                continue  # libseccomp refuses rules equal to the default; they add nothing
            _add_policy_rule(ps, flt, rule, action, group, native, numbered)
        if clone3_unknown and unknown_scmp != default_scmp:
            _add(flt, unknown_scmp, _resolve("clone3"), "clone3")
        if group == [native] and unknown_scmp != default_scmp and default.blocks:
            _add_unknown_range(flt, unknown_scmp)
        filters.append(flt)
    if len(filters) == 2 and unknown_scmp != default_scmp and default.blocks:
        notes.append("seccomp: syscall numbers newer than libseccomp get `unknown` on the native "
                     "architecture only; on " + ", ".join(groups[1]) + " they get the default")
    flt = filters[0]
    for other in filters[1:]:
        try:
            flt.merge(other)
        except OSError as e:
            raise CompileError(f"seccomp: libseccomp could not merge the per-architecture "
                               f"filters: {e}") from None
    return _Built(filter=flt, arches=arches, default=default, notes=notes, numbered=numbered)


@functools.lru_cache(maxsize=4096)
def _how_to_add(name: str, group: tuple[str, ...]) -> tuple[bool, tuple[tuple[str, int], ...]]:
    """(libseccomp can add it by name on some arch of the group, the
    (arch, number) pairs to add by number): asked once per name and group,
    not once per rule and compile."""
    from enforcer.policy import syscalls

    by_name = any(syscalls.libseccomp_knows_on(name, a) for a in group)
    numbered = []
    for arch in group:
        nr = syscalls.by_number(name, arch)
        if nr is not None:
            numbered.append((arch, nr))
    return by_name, tuple(numbered)


def _add_policy_rule(ps: Any, flt: Any, rule: SyscallRule, action: Action, group: list[str],
                     native: str, numbered: list[NumberedRule]) -> None:
    """Add one rule for the architectures of `group`: by name where libseccomp
    knows the syscall, by number from enforcer's table where it does not."""
    name = rule.syscall
    by_name, by_number = _how_to_add(name, tuple(group))
    if by_name:
        # libseccomp adds it for each arch of the group that has it and
        # leaves the others out; those are handled by number below.
        try:
            flt.add_rule(scmp_action(action), _resolve(name), *_arg(ps, rule))
        except OSError as e:
            raise CompileError(f"seccomp: {_where(rule)}: libseccomp refused rule "
                               f"'{action}': {e.strerror}") from None
    for arch, nr in by_number:
        if arch == native:
            try:
                flt.add_rule(scmp_action(action), nr, *_arg(ps, rule))
            except OSError as e:
                raise CompileError(f"seccomp: {_where(rule)}: libseccomp refused rule "
                                   f"'{action}' for syscall number {nr}: {e.strerror}") from None
        elif rule.args:
            raise CompileError(
                f"seccomp: {_where(rule)}: argument conditions on {name} cannot be compiled "
                f"for {arch}: libseccomp {libseccomp_version()} does not know {name} there, "
                f"and enforcer compiles such syscalls by number only without conditions on "
                f"architectures other than the native one ({native})")
        else:
            numbered.append(NumberedRule(arch, nr, scmp_action(action), name))


def _resolve(name: str) -> int:
    nr = int(_lib().seccomp_syscall_resolve_name_arch(0, name.encode()))
    if nr == -1:
        raise CompileError(f"seccomp: libseccomp does not know syscall {name!r}")
    return nr


def _add(flt: Any, action: int, nr: int, what: str) -> None:
    try:
        flt.add_rule(action, nr)
    except OSError as e:
        raise CompileError(f"seccomp: libseccomp refused rule for {what}: {e.strerror}") from None


def _add_unknown_range(flt: Any, action: int) -> None:
    """Numbers above the highest one we know (enforcer's table or
    libseccomp's) get the `unknown` action (ENOSYS).

    libseccomp takes raw numbers only as native-arch numbers (it translates
    them to other arches by name, which an unknown number has not), so
    this is for a native-only filter.
    """
    top = max(native_syscall_table())
    for nr in range(top + 1, top + 1 + UNKNOWN_HEADROOM):
        _add(flt, action, nr, f"syscall number {nr}")


# -- export -----------------------------------------------------------------


def _export(flt: Any, which: str) -> bytes:
    fd = os.memfd_create(f"enforcer-{which}", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as f:
            try:
                (flt.export_bpf if which == "bpf" else flt.export_pfc)(f)
            except OSError as e:
                raise CompileError(f"seccomp: libseccomp could not export {which}: {e}") from None
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# Classic BPF opcodes for the block in front of libseccomp's program.
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_OFFSET_NR, _OFFSET_ARCH = 0, 4  # struct seccomp_data


def _audit_arch(arch: str) -> int:
    # libseccomp's tokens are the kernel's AUDIT_ARCH_* values, except x32's:
    # x32 syscalls arrive as x86_64 ones with the x32 bit in the number
    # (which the numbers in enforcer's x32 table carry).
    return _AUDIT_ARCH_X86_64 if arch == "x32" else arch_token(arch)


def numbered_block(numbered: list[NumberedRule]) -> bytes:
    """`arch == A && nr == N -> action` for each rule, as BPF that falls
    through to whatever follows. Per architecture:

        ld  [arch]
        jeq A, 0, skip      ; another architecture: on to the next block
        ld  [nr]
        jeq N1, 0, 1
        ret ACTION1         ; ... one pair per syscall
    libseccomp's program starts by loading the arch again, so it can follow.
    """
    import struct

    by_arch: dict[int, list[NumberedRule]] = {}
    for rule in numbered:
        by_arch.setdefault(_audit_arch(rule.arch), []).append(rule)
    insns: list[tuple[int, int, int, int]] = []
    for audit, rules in by_arch.items():
        skip = 1 + 2 * len(rules)
        if skip > 255:  # jump offsets are 8 bits
            raise CompileError(f"seccomp: {len(rules)} syscalls compiled by number for "
                               f"{rules[0].arch}; at most 127 fit the block")
        insns += [(_BPF_LD_W_ABS, 0, 0, _OFFSET_ARCH), (_BPF_JEQ_K, 0, skip, audit),
                  (_BPF_LD_W_ABS, 0, 0, _OFFSET_NR)]
        for rule in sorted(rules, key=lambda r: r.nr):
            insns += [(_BPF_JEQ_K, 0, 1, rule.nr), (_BPF_RET_K, 0, 0, rule.action)]
    return b"".join(struct.pack("<HBBI", *insn) for insn in insns)


def _bpf(built: _Built) -> bytes:
    return numbered_block(built.numbered) + _export(built.filter, "bpf")


def export_bpf(policy: Policy, mode: Mode | None = None) -> bytes:
    """The raw BPF program (struct sock_filter[]) for the policy."""
    return _bpf(build_filter(policy, mode))


def export_pfc(policy: Policy, mode: Mode | None = None) -> str:
    """libseccomp's readable pseudo-filter-code for the policy, after a
    comment listing what the BPF checks before it (syscalls of other
    architectures compiled by number).

    Note: libseccomp's pfc does not show the x32 test the BPF contains.
    """
    built = build_filter(policy, mode)
    head = ""
    if built.numbered:
        lines = ["# enforcer: checked before libseccomp's filter (syscalls libseccomp "
                 f"{libseccomp_version()} does not know there, by number):"]
        lines += [f"#   {r.arch}: {r.name} ({r.nr:#x}) -> action {r.action:#010x}"
                  for r in built.numbered]
        head = "\n".join(lines) + "\n"
    return head + _export(built.filter, "pfc").decode()


def filter_flags(policy: Policy) -> tuple[str, ...]:
    # SECCOMP_FILTER_FLAG_LOG: ERRNO/TRAP/KILL denials reach the audit log,
    # where the monitor reads them (without it only kills are logged).
    return ("log",) if policy.syscalls.log_denials else ()


def compile_seccomp(policy: Policy, mode: Mode | None = None) -> SeccompResult:
    mode = policy.mode if mode is None else mode
    built = build_filter(policy, mode)
    bpf = _bpf(built)
    if len(bpf) // 8 > 4096:
        raise CompileError(f"seccomp: the filter has {len(bpf) // 8} instructions; the kernel "
                           "takes at most 4096 (BPF_MAXINSNS)")
    import base64

    plan = SeccompPlan(
        native_arch=native_arch(),
        architectures=built.arches,
        default_action=str(built.default),
        filter=SeccompFilter(bpf_b64=base64.b64encode(bpf).decode(), flags=filter_flags(policy)),
        syscall_names=dict(native_syscall_table()),
        oci={},
    )
    return SeccompResult(plan=plan, notes=built.notes)
