"""Argument-position test: does a checked syscall's cost depend on where its
rule sits in the policy?

Two policies that differ only in order: 40 argument-checked allow rules on
40 different syscalls, plus `personality(arg0 == 0xffffffff) -> allow`,
first in one policy and last in the other. Both are compiled by enforcer's
compiler (built as Policy objects in code, so the test does not depend on
the YAML loader), and, as a reference that shows the test can tell a
difference, as a linear chain that checks rules in the order written
(libseccomp with per-syscall priorities falling with the position).

Each is timed with the same C program (personality, plus getppid as a
control that no rule touches), round-robin, and replayed in the BPF
interpreter to count the instructions the checked call runs through.
"""

from __future__ import annotations

import os
from typing import Any

from microbench import BUILD, Variant, _export_libseccomp, _write

# Syscalls that get an argument-checked rule; none of them is made by the
# timed program, so only the filter's layout changes between the policies.
FILLER = (
    "ioctl", "fcntl", "prctl", "mmap", "mprotect", "madvise", "kill", "tgkill", "setsockopt",
    "getsockopt", "sendto", "recvfrom", "openat", "lseek", "pread64", "pwrite64", "dup3",
    "pipe2", "socketpair", "bind", "connect", "listen", "accept4", "shutdown", "setpriority",
    "sched_setscheduler", "mlock", "munlock", "msync", "mremap", "flock", "fadvise64",
    "fallocate", "ftruncate", "truncate", "umask", "setrlimit", "prlimit64", "timerfd_create",
    "eventfd2",
)
PERSONALITY_QUERY = 0xFFFFFFFF
ALWAYS = ("write", "exit_group", "getppid")


def _policy(first: bool) -> Any:
    from enforcer.policy.model import (Action, ActionKind, ArgCondition, ArgOp, Policy,
                                       SyscallPolicy, SyscallRule)

    allow = Action(ActionKind.ALLOW)
    filler = [SyscallRule(name, allow, (ArgCondition(0, ArgOp.EQ, 1000 + i),))
              for i, name in enumerate(FILLER)]
    checked = SyscallRule("personality", allow, (ArgCondition(0, ArgOp.EQ, PERSONALITY_QUERY),))
    rules = [checked, *filler] if first else [*filler, checked]
    rules = [SyscallRule(n, allow) for n in ALWAYS] + rules
    return Policy(name=f"argpos-{'first' if first else 'last'}",
                  syscalls=SyscallPolicy(default_action=Action(ActionKind.ERRNO, 1),
                                         rules=tuple(rules), log_denials=False))


def enforcer_argpos_filters() -> tuple[bytes, bytes] | str:
    try:
        from enforcer.compile import compile_policy
    except ImportError as e:
        return f"enforcer compiler not importable: {e}"
    out = []
    for first in (True, False):
        try:
            plan = compile_policy(_policy(first))
        except Exception as e:
            return f"compiling the argpos policy failed: {type(e).__name__}: {e}"
        assert plan.seccomp is not None
        out.append(plan.seccomp.filter.bpf)
    return out[0], out[1]


def linear_argpos_filters() -> tuple[bytes, bytes]:
    """Reference: the same rules as a linear list kept in policy order.

    libseccomp with its defaults (what runc uses) already sorts syscalls by
    its own priority, not by the order rules were added, so to model "a
    compiler that checks rules in the order written" we give every syscall
    a libseccomp priority that falls with its position. This shows what
    the test measures when position *does* matter.
    """
    import pyseccomp

    def build(first: bool) -> bytes:
        f = pyseccomp.SyscallFilter(pyseccomp.ERRNO(1))
        f.set_attr(pyseccomp.Attr.CTL_NNP, 0)
        checked = ("personality", PERSONALITY_QUERY)
        filler = [(n, 1000 + i) for i, n in enumerate(FILLER)]
        ordered = [checked, *filler] if first else [*filler, checked]
        for n in ALWAYS:
            f.add_rule(pyseccomp.ALLOW, n)
            f.syscall_priority(n, 255)
        for pos, (name, value) in enumerate(ordered):
            f.add_rule(pyseccomp.ALLOW, name, pyseccomp.Arg(0, pyseccomp.EQ, value))
            f.syscall_priority(name, 250 - pos)
        return _export_libseccomp(f)

    return build(True), build(False)


def prepare() -> tuple[list[Variant], list[str]]:
    os.makedirs(BUILD, exist_ok=True)
    variants: list[Variant] = []
    notes: list[str] = []
    enf = enforcer_argpos_filters()
    if isinstance(enf, str):
        notes.append(enf)
    else:
        for tag, data in zip(("first", "last"), enf):
            variants.append(Variant(f"enforcer-{tag}", f"enforcer, personality rule {tag}",
                                    _write(f"argpos-enforcer-{tag}.bpf", data), len(data) // 8))
        if enf[0] == enf[1]:
            notes.append("enforcer: the two policies compile to byte-identical BPF "
                         "(libseccomp's tree orders by syscall number, not policy order)")
    for tag, data in zip(("first", "last"), linear_argpos_filters()):
        variants.append(Variant(f"linear-{tag}",
                                f"linear chain in policy order (reference), rule {tag}",
                                _write(f"argpos-linear-{tag}.bpf", data), len(data) // 8))
    return variants, notes
