"""Helpers for the emit/import tests: Policy builders and a classic-BPF
interpreter for seccomp filters (so two filters can be compared exactly,
decision by decision, without loading either into the kernel)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable

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

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
SECCOMP_DATA = struct.Struct("<iIQ6Q")

BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_ABS, BPF_IMM, BPF_MEM = 0x00, 0x20, 0x00, 0x60
BPF_K, BPF_X, BPF_A = 0x00, 0x08, 0x10
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
ALU_OPS = {0x00: "add", 0x10: "sub", 0x20: "mul", 0x30: "div", 0x40: "or",
           0x50: "and", 0x60: "lsh", 0x70: "rsh", 0x80: "neg", 0x90: "mod", 0xa0: "xor"}
U32 = 0xFFFFFFFF


class BpfError(Exception):
    pass


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int


def parse_bpf(raw: bytes) -> list[Insn]:
    if len(raw) % 8:
        raise BpfError(f"BPF of {len(raw)} bytes is not a whole number of instructions")
    return [Insn(*struct.unpack_from("<HBBI", raw, off)) for off in range(0, len(raw), 8)]


def run_bpf(prog: list[Insn], nr: int, arch: int, args: tuple[int, ...] = (0,) * 6,
            ip: int = 0) -> int:
    """Run a seccomp filter over one struct seccomp_data; returns the RET value."""
    data = SECCOMP_DATA.pack(nr, arch, ip, *args)
    a = x = 0
    mem = [0] * 16
    pc = 0
    steps = 0
    while True:
        if pc >= len(prog):
            raise BpfError(f"fell off the end at {pc}")
        steps += 1
        if steps > 100_000:
            raise BpfError("too many steps")
        ins = prog[pc]
        cls = ins.code & 0x07
        pc += 1
        if cls == BPF_LD:
            mode = ins.code & 0xE0
            if mode == BPF_ABS and ins.code & 0x18 == BPF_W:
                if ins.k % 4 or ins.k + 4 > len(data):
                    raise BpfError(f"bad load offset {ins.k}")
                a = struct.unpack_from("<I", data, ins.k)[0]
            elif mode == BPF_IMM:
                a = ins.k
            elif mode == BPF_MEM:
                a = mem[ins.k]
            else:
                raise BpfError(f"unsupported LD {ins.code:#x}")
        elif cls == BPF_LDX:
            mode = ins.code & 0xE0
            if mode == BPF_IMM:
                x = ins.k
            elif mode == BPF_MEM:
                x = mem[ins.k]
            else:
                raise BpfError(f"unsupported LDX {ins.code:#x}")
        elif cls == BPF_ST:
            mem[ins.k] = a
        elif cls == BPF_STX:
            mem[ins.k] = x
        elif cls == BPF_ALU:
            op = ALU_OPS.get(ins.code & 0xF0)
            src = x if ins.code & BPF_X else ins.k
            if op == "add":
                a = (a + src) & U32
            elif op == "sub":
                a = (a - src) & U32
            elif op == "mul":
                a = (a * src) & U32
            elif op == "div":
                if src == 0:
                    return 0  # the kernel aborts the program with 0 (kill)
                a = a // src
            elif op == "mod":
                if src == 0:
                    return 0
                a = a % src
            elif op == "or":
                a |= src
            elif op == "and":
                a &= src
            elif op == "xor":
                a ^= src
            elif op == "lsh":
                a = (a << src) & U32
            elif op == "rsh":
                a >>= src
            elif op == "neg":
                a = (-a) & U32
            else:
                raise BpfError(f"unsupported ALU {ins.code:#x}")
        elif cls == BPF_JMP:
            op = ins.code & 0xF0
            if op == BPF_JA:
                pc += ins.k
                continue
            src = x if ins.code & BPF_X else ins.k
            if op == BPF_JEQ:
                taken = a == src
            elif op == BPF_JGT:
                taken = a > src
            elif op == BPF_JGE:
                taken = a >= src
            elif op == BPF_JSET:
                taken = bool(a & src)
            else:
                raise BpfError(f"unsupported JMP {ins.code:#x}")
            pc += ins.jt if taken else ins.jf
        elif cls == BPF_RET:
            rv = ins.code & 0x18
            if rv == BPF_K:
                return ins.k
            if rv == BPF_A:
                return a
            raise BpfError(f"unsupported RET {ins.code:#x}")
        elif cls == BPF_MISC:
            if ins.code & 0xF8 == 0x00:  # TAX
                x = a
            elif ins.code & 0xF8 == 0x80:  # TXA
                a = x
            else:
                raise BpfError(f"unsupported MISC {ins.code:#x}")


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


def _ref_action(name: str, errno_ret: int | None) -> int:
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

    default = _ref_action(data["defaultAction"], data.get("defaultErrnoRet"))
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
        action = _ref_action(call["action"], call.get("errnoRet"))
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
