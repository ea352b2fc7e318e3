"""The classic-BPF interpreter in tests/emit_helpers.py: each instruction
class it supports, on hand-assembled programs (the equivalence test relies
on it, so it gets tests of its own)."""

from __future__ import annotations

import struct

import pytest

from tests.emit_helpers import AUDIT_ARCH, BpfError, Insn, parse_bpf, run_bpf

LD_W_ABS, LD_IMM, LD_MEM, LDX_IMM, LDX_MEM = 0x20, 0x00, 0x60, 0x01, 0x61
ST, STX = 0x02, 0x03
ALU_AND_K, ALU_ADD_X, ALU_RSH_K, ALU_OR_K = 0x54, 0x0C, 0x74, 0x44
JA, JEQ_K, JGT_K, JGE_K, JSET_K, JEQ_X = 0x05, 0x15, 0x25, 0x35, 0x45, 0x1D
RET_K, RET_A, TAX, TXA = 0x06, 0x16, 0x07, 0x87
ALLOW, KILL = 0x7FFF0000, 0x80000000


def prog(*insns: tuple[int, int, int, int]) -> list[Insn]:
    raw = b"".join(struct.pack("<HBBI", *i) for i in insns)
    return parse_bpf(raw)


def test_loads_nr_arch_and_both_halves_of_an_argument() -> None:
    # return nr + arch-low-byte... keep it simple: return each field in turn.
    nr = prog((LD_W_ABS, 0, 0, 0), (RET_A, 0, 0, 0))
    arch = prog((LD_W_ABS, 0, 0, 4), (RET_A, 0, 0, 0))
    arg1_lo = prog((LD_W_ABS, 0, 0, 24), (RET_A, 0, 0, 0))
    arg1_hi = prog((LD_W_ABS, 0, 0, 28), (RET_A, 0, 0, 0))
    args = (0, 0x1122334455667788, 0, 0, 0, 0)
    assert run_bpf(nr, 39, AUDIT_ARCH["x86_64"], args) == 39
    assert run_bpf(arch, 39, AUDIT_ARCH["x86_64"], args) == AUDIT_ARCH["x86_64"]
    assert run_bpf(arg1_lo, 39, 0, args) == 0x55667788
    assert run_bpf(arg1_hi, 39, 0, args) == 0x11223344


@pytest.mark.parametrize("op, k, a, taken", [
    (JEQ_K, 5, 5, True), (JEQ_K, 5, 6, False), (JGT_K, 5, 6, True), (JGT_K, 5, 5, False),
    (JGE_K, 5, 5, True), (JGE_K, 5, 4, False), (JSET_K, 0b100, 0b110, True),
    (JSET_K, 0b100, 0b011, False),
])
def test_conditional_jumps(op: int, k: int, a: int, taken: bool) -> None:
    p = prog((LD_W_ABS, 0, 0, 0), (op, 1, 0, k), (RET_K, 0, 0, KILL), (RET_K, 0, 0, ALLOW))
    assert run_bpf(p, a, 0) == (ALLOW if taken else KILL)


def test_ja_alu_scratch_memory_and_register_moves() -> None:
    p = prog(
        (LD_W_ABS, 0, 0, 0),      # A = nr
        (ST, 0, 0, 3),            # M[3] = A
        (ALU_AND_K, 0, 0, 0xF0),  # A &= 0xf0
        (ALU_RSH_K, 0, 0, 4),     # A >>= 4
        (TAX, 0, 0, 0),           # X = A
        (LD_MEM, 0, 0, 3),        # A = M[3]
        (ALU_ADD_X, 0, 0, 0),     # A += X
        (ALU_OR_K, 0, 0, 0x1000), # A |= 0x1000
        (JA, 0, 0, 1),            # skip the next
        (RET_K, 0, 0, KILL),
        (STX, 0, 0, 5),           # M[5] = X
        (LDX_MEM, 0, 0, 5),       # X = M[5]
        (JEQ_X, 0, 1, 0),         # A == X ?
        (RET_K, 0, 0, KILL),
        (RET_A, 0, 0, 0),
    )
    assert run_bpf(p, 0x35, 0) == 0x1000 | (0x35 + 0x3)
    swap = prog((LDX_IMM, 0, 0, 7), (TXA, 0, 0, 0), (RET_A, 0, 0, 0))
    assert run_bpf(swap, 0, 0) == 7
    imm = prog((LD_IMM, 0, 0, 9), (RET_A, 0, 0, 0))
    assert run_bpf(imm, 0, 0) == 9


def test_malformed_programs_are_errors_not_answers() -> None:
    with pytest.raises(BpfError):
        parse_bpf(b"\x00" * 7)
    with pytest.raises(BpfError):
        run_bpf(prog((LD_W_ABS, 0, 0, 0)), 0, 0)  # falls off the end
    with pytest.raises(BpfError):
        run_bpf(prog((LD_W_ABS, 0, 0, 2), (RET_A, 0, 0, 0)), 0, 0)  # unaligned load
    with pytest.raises(BpfError):
        run_bpf(prog((LD_W_ABS, 0, 0, 64), (RET_A, 0, 0, 0)), 0, 0)  # past seccomp_data


def test_agrees_with_libseccomp_on_a_real_filter() -> None:
    """A filter libseccomp built: read allowed, ptrace EPERM, the rest killed."""
    import os

    import pyseccomp as ps

    flt = ps.SyscallFilter(ps.KILL_PROCESS)
    flt.add_rule(ps.ALLOW, "read")
    flt.add_rule(ps.ERRNO(1), "ptrace")
    flt.add_rule(ps.ALLOW, "socket", ps.Arg(0, ps.EQ, 2))
    fd = os.memfd_create("t")
    with open(fd, "wb", closefd=False) as f:
        flt.export_bpf(f)
    os.lseek(fd, 0, os.SEEK_SET)
    p = parse_bpf(os.read(fd, 1 << 16))
    os.close(fd)
    x86_64 = AUDIT_ARCH["x86_64"]
    assert run_bpf(p, 0, x86_64) == ALLOW  # read
    assert run_bpf(p, 101, x86_64) == 0x00050001  # ptrace -> EPERM
    assert run_bpf(p, 41, x86_64, (2, 0, 0, 0, 0, 0)) == ALLOW  # socket(AF_INET)
    assert run_bpf(p, 41, x86_64, (10, 0, 0, 0, 0, 0)) == KILL  # socket(AF_INET6)
    assert run_bpf(p, 41, x86_64, (2 | 1 << 32, 0, 0, 0, 0, 0)) == KILL  # high bits count
    assert run_bpf(p, 1, x86_64) == KILL  # write
    assert run_bpf(p, 0, AUDIT_ARCH["aarch64"]) == 0  # bad arch: libseccomp's KILL_THREAD
