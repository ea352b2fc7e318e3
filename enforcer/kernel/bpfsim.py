"""Run a seccomp classic-BPF program in Python, as the kernel would.

One simulator for everything that must reason about a compiled filter
without loading it: the compiler's tests (decision by decision against a
reference filter), the benchmark's analysis (how many instructions a
syscall's path runs) and the check of which syscalls the kernel's seccomp
action cache can take.

`run` executes the instruction subset seccomp accepts (kernel/seccomp.c,
seccomp_check_filter) over one struct seccomp_data; `const_allow` replays
the kernel's load-time test seccomp_is_const_allow(). Anything outside the
subset raises BpfError naming the instruction. Stdlib only.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

SECCOMP_DATA = struct.Struct("<IIQ6Q")  # nr, arch, instruction_pointer, args[6]
OFF_NR, OFF_ARCH = 0, 4
RET_ALLOW = 0x7FFF0000
U32 = 0xFFFFFFFF
MAX_STEPS = 100_000  # classic BPF only jumps forward; this only guards bugs

BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_ABS, BPF_IMM, BPF_MEM = 0x20, 0x00, 0x60
BPF_X, BPF_A = 0x08, 0x10
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40


class BpfError(ValueError):
    """A program (or an instruction in it) the simulator cannot run."""


class Insn(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


def parse(raw: bytes) -> list[Insn]:
    """struct sock_filter[] (8 bytes each, little endian) -> instructions."""
    if len(raw) % 8:
        raise BpfError(f"BPF of {len(raw)} bytes is not a whole number of instructions")
    return [Insn(*struct.unpack_from("<HBBI", raw, off)) for off in range(0, len(raw), 8)]


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = (), ip: int = 0) -> bytes:
    padded = tuple(args) + (0,) * (6 - len(args))
    return SECCOMP_DATA.pack(nr & U32, arch, ip, *padded)


def _alu(op: int, a: int, src: int) -> int | None:
    """One ALU operation on the accumulator; None for a division by zero
    (the kernel then ends the program with 0, i.e. kill)."""
    if op in (0x30, 0x90) and src == 0:
        return None
    results = {
        0x00: lambda: a + src, 0x10: lambda: a - src, 0x20: lambda: a * src,
        0x30: lambda: a // src, 0x40: lambda: a | src, 0x50: lambda: a & src,
        0x60: lambda: a << src, 0x70: lambda: a >> src, 0x80: lambda: -a,
        0x90: lambda: a % src, 0xA0: lambda: a ^ src,
    }
    if op not in results:
        raise BpfError(f"unsupported ALU operation {op:#x}")
    return results[op]() & U32


def run(prog: list[Insn], nr: int, arch: int, args: tuple[int, ...] = (),
        ip: int = 0) -> tuple[int, int]:
    """Run the filter for one syscall: (SECCOMP_RET value, instructions run)."""
    data = seccomp_data(nr, arch, args, ip)
    a = x = 0
    mem = [0] * 16
    pc = steps = 0
    while True:
        if pc >= len(prog):
            raise BpfError(f"fell off the end of the program at {pc}")
        steps += 1
        if steps > MAX_STEPS:
            raise BpfError("too many steps")
        code, jt, jf, k = prog[pc]
        pc += 1
        cls, mode = code & 0x07, code & 0xE0
        if cls == BPF_LD:
            if mode == BPF_ABS and code & 0x18 == 0:  # 32-bit words only
                if k % 4 or k + 4 > len(data):
                    raise BpfError(f"instruction {pc - 1}: bad load offset {k}")
                a = struct.unpack_from("<I", data, k)[0]
            elif mode in (BPF_IMM, BPF_MEM):
                a = k if mode == BPF_IMM else mem[k]
            else:
                raise BpfError(f"instruction {pc - 1}: unsupported LD {code:#x}")
        elif cls == BPF_LDX:
            if mode not in (BPF_IMM, BPF_MEM):
                raise BpfError(f"instruction {pc - 1}: unsupported LDX {code:#x}")
            x = k if mode == BPF_IMM else mem[k]
        elif cls in (BPF_ST, BPF_STX):
            mem[k] = a if cls == BPF_ST else x
        elif cls == BPF_ALU:
            result = _alu(code & 0xF0, a, x if code & BPF_X else k)
            if result is None:
                return 0, steps
            a = result
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
                continue
            src = x if code & BPF_X else k
            taken = {BPF_JEQ: a == src, BPF_JGT: a > src, BPF_JGE: a >= src,
                     BPF_JSET: bool(a & src)}.get(op)
            if taken is None:
                raise BpfError(f"instruction {pc - 1}: unsupported JMP {code:#x}")
            pc += jt if taken else jf
        elif cls == BPF_RET:
            return (a if code & 0x18 == BPF_A else k), steps
        elif code & 0xF8 == 0x00:  # MISC TAX
            x = a
        elif code & 0xF8 == 0x80:  # MISC TXA
            a = x
        else:
            raise BpfError(f"instruction {pc - 1}: unsupported MISC {code:#x}")


def const_allow(prog: list[Insn], nr: int, arch: int) -> bool:
    """The kernel's seccomp_is_const_allow() for one syscall number.

    Emulate the filter knowing only `nr` and `arch`: a load of anything
    else, or an instruction outside the few the kernel models, means "not
    provably constant". True only when the path ends in RET ALLOW; the
    kernel then sets the syscall's bit in its action cache and never runs
    the filter for it.
    """
    reg = 0
    pc = 0
    while pc < len(prog):
        code, jt, jf, k = prog[pc]
        if code == BPF_LD | BPF_ABS:
            if k == OFF_NR:
                reg = nr & U32
            elif k == OFF_ARCH:
                reg = arch
            else:
                return False
        elif code == BPF_RET:  # RET K
            return k == RET_ALLOW
        elif code == BPF_JMP | BPF_JA:
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # JEQ, JGT, JGE, JSET with K
            taken = {0x15: reg == k, 0x25: reg > k, 0x35: reg >= k, 0x45: bool(reg & k)}[code]
            pc += jt if taken else jf
        elif code == 0x54:  # ALU AND K
            reg &= k
        else:
            return False
        pc += 1
    return False
