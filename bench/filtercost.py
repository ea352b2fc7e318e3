"""What each part of a filter costs, measured on one syscall (getppid).

Hand-written programs that differ in one thing at a time, so a difference
in time has one cause:

  hit        ld nr; getppid? -> ld arch; ret ALLOW      4 insns, cacheable
  miss       ld nr; getppid? -> ld arg0; ret ALLOW      4 insns, NOT cacheable
             (the same length; the argument load is what keeps the kernel's
             action cache from proving the result constant)
  miss+arch  miss preceded by libseccomp's preamble: arch check and the x32
             check (ld arch; jeq X86_64; ld nr; jge 0x40000000)   7 insns run
  miss+lin100  miss after 100 failed `jeq` tests -- what a linear list
             costs a syscall near its end                       104 insns

Everything but getppid is allowed through the same instructions, so the
program itself (write, exit_group) runs alike under all of them.
"""

from __future__ import annotations

from microbench import RET_ALLOW, Variant, _write, sock_filter

LD_NR = (0x20, 0, 0, 0)
LD_ARCH = (0x20, 0, 0, 4)
LD_ARG0 = (0x20, 0, 0, 16)
RET_ALLOW_I = (0x06, 0, 0, RET_ALLOW)
RET_KILL = (0x06, 0, 0, 0x80000000)
GETPPID = 110
AUDIT_ARCH_X86_64 = 0xC000003E


def _tail(load: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    # getppid? -> load; allow.   else -> allow
    return [(0x15, 0, 2, GETPPID), load, RET_ALLOW_I, RET_ALLOW_I]


def programs() -> dict[str, tuple[str, bytes]]:
    preamble = [LD_ARCH, (0x15, 1, 0, AUDIT_ARCH_X86_64), RET_KILL, LD_NR,
                (0x35, 0, 1, 0x40000000), RET_KILL]
    linear = [(0x15, 0, 0, 1000 + i) for i in range(100)]  # never match, fall through
    return {
        "hit": ("cache hit: path reads only nr/arch (4 insns)",
                sock_filter(LD_NR, *_tail(LD_ARCH))),
        "miss": ("cache miss: same path reads arg0 (4 insns)",
                 sock_filter(LD_NR, *_tail(LD_ARG0))),
        "miss+arch": ("miss + arch and x32 checks (7 insns)",
                      sock_filter(*preamble, *_tail(LD_ARG0))),
        "miss+lin100": ("miss after 100 failed comparisons (104 insns)",
                        sock_filter(LD_NR, *linear, *_tail(LD_ARG0))),
    }


def prepare() -> list[Variant]:
    out = [Variant("nofilter", "no filter", None)]
    for key, (label, data) in programs().items():
        out.append(Variant(key, label, _write(f"cost-{key}.bpf", data), len(data) // 8))
    return out
