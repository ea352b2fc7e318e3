"""Helpers for the emit/import tests: Policy builders and a classic-BPF
interpreter for seccomp filters (so two filters can be compared exactly,
decision by decision, without loading either into the kernel)."""

from __future__ import annotations

from typing import Iterable

from enforcer.kernel import bpfsim
from enforcer.policy.model import (
    Action,
    ActionKind,
    ArgCondition,
    ArgOp,
    Policy,
    SyscallPolicy,
    SyscallRule,
)

EPERM = 1
ENOSYS = 38


def errno(n: int) -> Action:
    return Action(ActionKind.ERRNO, n)


ALLOW = Action(ActionKind.ALLOW)
KILL = Action(ActionKind.KILL_PROCESS)


def rule(name: str, action: Action = ALLOW, *args: ArgCondition) -> SyscallRule:
    return SyscallRule(syscall=name, action=action, args=tuple(args))


def arg(index: int, op: str, value: int, mask: int | None = None) -> ArgCondition:
    return ArgCondition(index=index, op=ArgOp(op), value=value, mask=mask)


def make_policy(rules: Iterable[SyscallRule] = (), default: Action = errno(EPERM),
                name: str = "t", **kw: object) -> Policy:
    sc_kw = {k[3:]: kw.pop(k) for k in list(kw) if k.startswith("sc_")}
    sc = SyscallPolicy(default_action=default, rules=tuple(rules), **sc_kw)  # type: ignore[arg-type]
    return Policy(name=name, syscalls=sc, **kw)  # type: ignore[arg-type]


# -- classic BPF, the subset seccomp filters use ---------------------------

# The simulator itself lives in enforcer/kernel/bpfsim.py; these names
# keep the tests' vocabulary.
BpfError = bpfsim.BpfError
Insn = bpfsim.Insn
parse_bpf = bpfsim.parse


def run_bpf(prog: list[Insn], nr: int, arch: int, args: tuple[int, ...] = (0,) * 6,
            ip: int = 0) -> int:
    """Run a seccomp filter over one struct seccomp_data; returns the RET value."""
    return bpfsim.run(prog, nr, arch, args, ip)[0]


# -- a reference filter: the JSON compiled the way Docker + runc do it -------
#
# Written independently of enforcer.importer on purpose: the acceptance test
# compares the importer's result against this, so it must not share code.

AUDIT_ARCH = {"x86_64": 0xC000003E, "x86": 0x40000003, "x32": 0xC000003E,
              "aarch64": 0xC00000B7}
X32_BIT = 0x40000000

_REF_ACT = {"SCMP_ACT_ALLOW": 0x7FFF0000, "SCMP_ACT_LOG": 0x7FFC0000,
            "SCMP_ACT_TRAP": 0x00030000, "SCMP_ACT_KILL": 0, "SCMP_ACT_KILL_THREAD": 0,
            "SCMP_ACT_KILL_PROCESS": 0x80000000}
_REF_OP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
           "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_REF_ARCH = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32",
             "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_ARM": "arm"}


def ref_action(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (1 if errno_ret is None else errno_ret)
    return _REF_ACT[name]


def resolve_docker_entries(data: dict, caps: set[str], go_arch: str,
                           kernel: tuple[int, int]) -> list[dict]:
    """moby's includes/excludes logic: the entries that apply here."""
    def kv(s: str) -> tuple[int, int]:
        a, b = s.split(".")[:2]
        return int(a), int(b)

    out = []
    for call in data.get("syscalls", []):
        inc, exc = call.get("includes") or {}, call.get("excludes") or {}
        if inc.get("arches") and go_arch not in inc["arches"]:
            continue
        if inc.get("caps") and not all(c in caps for c in inc["caps"]):
            continue
        if inc.get("minKernel") and kernel < kv(inc["minKernel"]):
            continue
        if exc.get("arches") and go_arch in exc["arches"]:
            continue
        if exc.get("caps") and any(c in caps for c in exc["caps"]):
            continue
        if exc.get("minKernel") and kernel >= kv(exc["minKernel"]):
            continue
        out.append(call)
    return out


def reference_bpf(data: dict, caps: set[str], native: str = "x86_64", go_arch: str = "amd64",
                  kernel: tuple[int, int] = (6, 18)) -> bytes:
    """Build the filter from the JSON with libseccomp, as runc's InitSeccomp does."""
    import ctypes
    import os

    import pyseccomp as ps

    lib = ps._libseccomp
    lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int

    default = ref_action(data["defaultAction"], data.get("defaultErrnoRet"))
    flt = ps.SyscallFilter(default)
    arches: list[str] = []
    if data.get("archMap"):
        for entry in data["archMap"]:
            if _REF_ARCH.get(entry["architecture"]) == native:
                arches = [native] + [_REF_ARCH[s] for s in entry.get("subArchitectures") or []]
                break
    else:
        arches = [_REF_ARCH[a] for a in data.get("architectures", [])]
    for a in arches:
        token = lib.seccomp_arch_resolve_name(a.encode())
        if a != native:
            flt.add_arch(token)
    flt.set_attr(ps.Attr.CTL_NNP, 0)
    for call in resolve_docker_entries(data, caps, go_arch, kernel):
        action = ref_action(call["action"], call.get("errnoRet"))
        if action == default:
            continue  # runc: redundant with the default, and libseccomp refuses it
        names = call.get("names") or [call["name"]]
        conds = [ps.Arg(a["index"], _REF_OP[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
                 for a in call.get("args") or []]
        same_index = len({a["index"] for a in call.get("args") or []}) != len(conds)
        for name in names:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:
                continue  # runc: unknown to libseccomp, ignored
            if same_index:
                for c in conds:  # runc: one rule per condition
                    flt.add_rule(action, nr, c)
            else:
                flt.add_rule(action, nr, *conds)
    fd = os.memfd_create("ref-bpf")
    try:
        with open(fd, "wb", closefd=False) as f:
            flt.export_bpf(f)
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def known_syscalls(arch: str, limit: int = 1024) -> dict[int, str]:
    """Every syscall number libseccomp knows on `arch` (x32 numbers carry X32_BIT)."""
    import ctypes

    import pyseccomp as ps

    lib = ps._libseccomp
    lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    token = lib.seccomp_arch_resolve_name(arch.encode())
    table: dict[int, str] = {}
    base = X32_BIT if arch == "x32" else 0
    for nr in range(base, base + limit):
        ptr = lib.seccomp_syscall_resolve_num_arch(token, nr)
        if ptr:
            table[nr] = ctypes.string_at(ptr).decode()
            ps._libc.free(ptr)
    return table


def all_syscalls(arch: str) -> dict[int, str]:
    """Every syscall number of `arch` that libseccomp or enforcer's table knows."""
    from enforcer.policy import syscall_table

    table = known_syscalls(arch)
    own = syscall_table.table(arch)
    assert own is not None
    for nr, name in own.by_number.items():
        table.setdefault(nr, name)
    return dict(sorted(table.items()))


U64 = (1 << 64) - 1


def candidate_arg_values(entries: list[dict]) -> list[int]:
    """Argument values that make every condition of `entries` (OCI or Docker
    seccomp entries) both match and not match: each constant, its
    neighbours and high-word variants, the 64-bit edges, and for a masked
    comparison the expected value with each single mask bit flipped."""
    values = {0, 1, 0xFFFFFFFF, 1 << 32, U64, U64 - 1, 1 << 63}
    for e in entries:
        for a in e.get("args") or []:
            for v in (a.get("value", 0), a.get("valueTwo", 0)):
                for w in (v - 1, v, v + 1, v | 1 << 32, v + (1 << 32), v ^ U64):
                    if 0 <= w <= U64:
                        values.add(w)
            if a["op"] == "SCMP_CMP_MASKED_EQ":
                mask, want = a["value"], a.get("valueTwo", 0)
                # the expected value, and it with each single mask bit flipped
                for bit in range(64):
                    if mask >> bit & 1:
                        values.add(want ^ (1 << bit))
                values.add(want | ~mask & U64)
    return sorted(values)
