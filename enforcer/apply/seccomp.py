"""Load the Plan's ready BPF with seccomp(2). No libseccomp at run time:
the filter was compiled (and checked) by enforcer/compile, the privileged
side only hands the bytes to the kernel, as bubblewrap's --seccomp does."""

from __future__ import annotations

from enforcer.apply import _sys
from enforcer.errors import ApplyError
from enforcer.plan import SeccompPlan


def check_arch(plan: SeccompPlan) -> None:
    # A filter compiled for another native arch would check the wrong
    # syscall numbers: refuse rather than load it.
    host = _sys.machine()
    if plan.native_arch != host:
        raise ApplyError("seccomp", "arch", None,
                         f"the Plan was compiled for {plan.native_arch}, this host is {host}")


def filter_flags(plan: SeccompPlan) -> int:
    flags = 0
    for name in plan.filter.flags:
        flags |= _sys.SECCOMP_FILTER_FLAGS[name]
    return flags


def load_filter(plan: SeccompPlan) -> None:
    check_arch(plan)
    _sys.seccomp_set_filter(plan.filter.bpf, filter_flags(plan))
