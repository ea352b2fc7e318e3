"""enforcer.kernel.bpfsim against the real kernel's decisions is covered by
the compile and emit suites; here, the parts they do not reach."""

from __future__ import annotations

import struct

import pytest

from enforcer.kernel import bpfsim

X86_64 = 0xC000003E


def prog(*insns: tuple[int, int, int, int]) -> list[bpfsim.Insn]:
    return bpfsim.parse(b"".join(struct.pack("<HBBI", *i) for i in insns))


def test_negative_nr_is_seen_as_the_kernel_sees_it() -> None:
    # LD nr; JEQ 0xffffffff -> ALLOW else KILL
    p = prog((0x20, 0, 0, 0), (0x15, 0, 1, 0xFFFFFFFF), (0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, 0))
    assert bpfsim.run(p, -1, X86_64) == (0x7FFF0000, 3)
    assert bpfsim.const_allow(p, -1, X86_64)
    assert not bpfsim.const_allow(p, 1, X86_64)


def test_argument_load_is_never_constant() -> None:
    p = prog((0x20, 0, 0, 16), (0x06, 0, 0, 0x7FFF0000))
    assert bpfsim.run(p, 0, X86_64, (5,)) == (0x7FFF0000, 2)
    assert not bpfsim.const_allow(p, 0, X86_64)


def test_division_by_zero_ends_the_program_with_kill() -> None:
    p = prog((0x00, 0, 0, 7), (0x34, 0, 0, 0), (0x06, 0, 0, 0x7FFF0000))  # A=7; A/=0
    assert bpfsim.run(p, 0, X86_64)[0] == 0


def test_unsupported_instruction_is_named() -> None:
    with pytest.raises(bpfsim.BpfError, match="instruction 0"):
        bpfsim.run(prog((0x20 | 0x08, 0, 0, 0)), 0, X86_64)  # LD with a bad size
