"""Test helpers for the compiler: a classic-BPF interpreter, the kernel's
seccomp action-cache emulation, a policy builder, and a tiny C program that
loads a filter and makes raw syscalls under it.

The interpreter lets unit tests ask "what does this filter decide for
(arch, nr, args)" without loading anything; the C probe checks the same
decisions against the real kernel.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass

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

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

ALLOW = Action(ActionKind.ALLOW)
KILL = Action(ActionKind.KILL_PROCESS)


def errno_action(n: int) -> Action:
    return Action(ActionKind.ERRNO, n)


def rule(name: str, action: Action = ALLOW, *args: ArgCondition, via: str = "") -> SyscallRule:
    return SyscallRule(syscall=name, action=action, args=tuple(args), via=via)


def cond(index: int, op: str, value: int, mask: int | None = None) -> ArgCondition:
    return ArgCondition(index=index, op=ArgOp(op), value=value, mask=mask)


def syscall_policy(*rules: SyscallRule, default: Action = errno_action(1),
                   name: str = "t", **kw: object) -> Policy:
    return Policy(name=name, syscalls=SyscallPolicy(default_action=default, rules=rules,
                                                    **kw))  # type: ignore[arg-type]


# -- classic BPF ----------------------------------------------------------------


def decode(bpf: bytes) -> list[tuple[int, int, int, int]]:
    assert len(bpf) % 8 == 0
    return [struct.unpack("=HBBI", bpf[i:i + 8]) for i in range(0, len(bpf), 8)]


def run_bpf(bpf: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, args: tuple[int, ...] = (),
            ip: int = 0) -> int:
    """Run a seccomp filter like the kernel does; returns the 32-bit action."""
    return bpfsim.run(bpfsim.parse(bpf), nr, arch, args, ip)[0]


def const_allow(bpf: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64) -> bool:
    """The kernel's seccomp action-cache test (see enforcer/kernel/bpfsim.py)."""
    return bpfsim.const_allow(bpfsim.parse(bpf), nr, arch)


# -- the real-kernel probe ----------------------------------------------------------

PROBE_C = r"""
/* Load a seccomp filter from a file, then make the syscalls named on the
 * command line, and print "<ret> <errno>" per call. Killed by SIGSYS when
 * the filter kills. Only raw syscalls after the filter is loaded. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static char out[65536];
static size_t used;

/* i386 syscall from this 64-bit process: the 32-bit ABI takes its
 * arguments in ebx, ecx, edx, esi, edi (zero when not given). */
static long int80(long nr, unsigned long long *a) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret)
                      : "a"(nr), "b"(a[0]), "c"(a[1]), "d"(a[2]), "S"(a[3]), "D"(a[4])
                      : "memory");
    return (long)(int)ret;  /* the compat entry returns a 32-bit value */
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror("open"); return 2; }
    static struct sock_filter insns[4096];
    ssize_t n = read(fd, insns, sizeof insns);
    close(fd);
    if (n <= 0 || n % 8) return 2;
    struct sock_fprog prog = { .len = (unsigned short)(n / 8), .filter = insns };
    unsigned long flags = strtoul(argv[2], NULL, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("prctl"); return 2; }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog)) { perror("seccomp"); return 2; }
    for (int i = 3; i < argc; i++) {
        char kind[8] = {0};
        unsigned long long a[7] = {0};
        int got = sscanf(argv[i], "%7[a-z0-9]:%lli:%lli:%lli:%lli:%lli:%lli:%lli", kind,
                         &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6]);
        if (got < 2) return 3;
        long ret;
        errno = 0;
        if (!strcmp(kind, "sys"))
            ret = syscall((long)a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
        else if (!strcmp(kind, "x32"))
            ret = syscall((long)(a[0] | 0x40000000UL), a[1], a[2], a[3], a[4], a[5], a[6]);
        else if (!strcmp(kind, "int80")) {
            ret = int80((long)a[0], a + 1);
            if (ret < 0 && ret > -4096) { errno = (int)-ret; ret = -1; }
        } else return 3;
        int e = ret == -1 ? errno : 0;
        used += (size_t)snprintf(out + used, sizeof out - used, "%ld %d\n", ret, e);
    }
    syscall(SYS_write, 1, out, used);
    syscall(SYS_exit_group, 0);
    return 0;
}
"""


@dataclass
class ProbeResult:
    returncode: int
    results: list[tuple[int, int]]  # (return value, errno) per call
    stderr: str


def build_probe(directory: str) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the seccomp probe")
    src = os.path.join(directory, "probe.c")
    exe = os.path.join(directory, "probe")
    with open(src, "w") as f:
        f.write(PROBE_C)
    subprocess.run([gcc, "-O1", "-Wall", "-o", exe, src], check=True, capture_output=True)
    return exe


def run_probe(exe: str, bpf: bytes, calls: list[str], directory: str, flags: int = 0) -> ProbeResult:
    path = os.path.join(directory, "filter.bpf")
    with open(path, "wb") as f:
        f.write(bpf)
    p = subprocess.run([exe, path, str(flags), *calls], capture_output=True, text=True,
                       timeout=30)
    results = [(int(a), int(b)) for a, b in (line.split() for line in p.stdout.splitlines())]
    return ProbeResult(p.returncode, results, p.stderr)


# The few syscalls the probe needs after loading its filter.
PROBE_NEEDS = ("write", "exit_group")
