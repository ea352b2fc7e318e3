"""Read, run and explain seccomp classic-BPF programs (analysis helpers).

Used by the bench to say *why* a filter costs what it costs:

* `disassemble` prints a program in the libseccomp/bpf_asm style;
* `run` executes it for one (arch, nr, args) like the kernel does and
  counts the instructions it went through (the slow-path cost);
* `kernel_cache_allows` replays the kernel's own check
  (kernel/seccomp.c, seccomp_is_const_allow) that decides at load time
  whether a syscall number goes into the per-filter action cache: if the
  program returns ALLOW for that nr while only ever looking at `nr` and
  `arch`, the kernel allows the call later without running the filter.

Only the instruction subset seccomp accepts is handled; anything else
raises ValueError naming the instruction.
"""

from __future__ import annotations

from enforcer.kernel import bpfsim
from enforcer.kernel.bpfsim import Insn, parse  # noqa: F401  (re-exported: bt.parse)

# struct seccomp_data offsets
OFF_NR, OFF_ARCH, OFF_IP, OFF_ARGS = 0, 4, 8, 16

AUDIT_ARCH = {"x86_64": 0xC000003E, "x86": 0x40000003, "x32": 0xC000003E}
X32_BIT = 0x40000000

RET_NAMES = {
    0x80000000: "KILL_PROCESS", 0x00000000: "KILL_THREAD", 0x00030000: "TRAP",
    0x00050000: "ERRNO", 0x7FC00000: "USER_NOTIF", 0x7FF00000: "TRACE",
    0x7FFC0000: "LOG", 0x7FFF0000: "ALLOW",
}


def action_name(k: int) -> str:
    base = k & 0xFFFF0000
    if base == 0x00050000:
        return f"ERRNO({k & 0xFFFF})"
    if base == 0x7FF00000:
        return f"TRACE({k & 0xFFFF})"
    return RET_NAMES.get(base, f"0x{k:08x}")


def _field(k: int) -> str:
    if k == OFF_NR:
        return "nr"
    if k == OFF_ARCH:
        return "arch"
    if OFF_IP <= k < OFF_ARGS:
        return f"ip[{k - OFF_IP}]"
    n, half = divmod(k - OFF_ARGS, 8)
    return f"arg{n}.{'lo' if half == 0 else 'hi'}"


_JMP = {0x15: "jeq", 0x25: "jgt", 0x35: "jge", 0x45: "jset"}


def disassemble(prog: list[Insn]) -> str:
    lines = []
    for pc, ins in enumerate(prog):
        c = ins.code
        if c == 0x20:
            text = f"ld  {_field(ins.k)}"
        elif c == 0x00:
            text = f"ld  #{ins.k:#x}"
        elif c == 0x06:
            text = f"ret {action_name(ins.k)}"
        elif c == 0x16:
            text = "ret A"
        elif c == 0x05:
            text = f"ja  {pc + 1 + ins.k}"
        elif c in _JMP:
            text = f"{_JMP[c]} #{ins.k:#x}, {pc + 1 + ins.jt}, {pc + 1 + ins.jf}"
        elif c == 0x54:
            text = f"and #{ins.k:#x}"
        elif c == 0x02:
            text = f"st  M[{ins.k}]"
        elif c == 0x60:
            text = f"ld  M[{ins.k}]"
        elif c == 0x87:
            text = "tax"
        elif c == 0x07:
            text = "txa"
        else:
            text = f"op {c:#06x} jt={ins.jt} jf={ins.jf} k={ins.k:#x}"
        lines.append(f"{pc:4d}: {text}")
    return "\n".join(lines)


def run(prog: list[Insn], arch: str, nr: int, args: tuple[int, ...] = ()) -> tuple[int, int]:
    """Execute like the kernel; return (SECCOMP_RET value, instructions run)."""
    return bpfsim.run(prog, nr | (X32_BIT if arch == "x32" else 0), AUDIT_ARCH[arch], args)


def kernel_cache_allows(prog: list[Insn], arch: str, nr: int) -> bool:
    """The kernel's seccomp_is_const_allow() for one syscall number: True
    when the kernel sets the bit in its action cache and never runs this
    filter for `nr`. (The kernel keeps a bitmap for the native arch and the
    compat arch; x32 numbers are outside it.)"""
    return bpfsim.const_allow(prog, nr | (X32_BIT if arch == "x32" else 0), AUDIT_ARCH[arch])


def cached_count(prog: list[Insn], arch: str = "x86_64", upto: int = 512) -> int:
    """How many syscall numbers below `upto` the action cache takes."""
    return sum(kernel_cache_allows(prog, arch, nr) for nr in range(upto))
