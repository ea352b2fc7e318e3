"""(audit arch, syscall number) -> syscall name, cached.

Names come from enforcer's syscall table (enforcer/policy/syscall_table.py),
so a denied mseal or statmount is named although libseccomp 2.5.4 does not
know it; libseccomp answers what the table lacks (ARM's private calls).
libseccomp's architecture tokens are the kernel's AUDIT_ARCH_* values, so
the `arch=` field of an audit record is passed to it unchanged. The
values and names are enforcer/kernel/arch.py's table; a unit test checks
every entry against libseccomp.
"""

from __future__ import annotations

from enforcer.kernel.arch import ARCHES, arch_name
from enforcer.kernel.arch import AUDIT_ARCH_X32 as _AUDIT_ARCH_X32
from enforcer.kernel.arch import AUDIT_ARCH_X86_64 as _AUDIT_ARCH_X86_64
from enforcer.kernel.arch import X32_SYSCALL_BIT as _X32_SYSCALL_BIT

# AUDIT_ARCH_* (linux/audit.h) -> the names the policy format uses.
ARCH_NAMES: dict[int, str] = {a.audit: a.name for a in ARCHES}

__all__ = ["ARCH_NAMES", "SyscallNames", "arch_name"]


class SyscallNames:
    """Resolves and caches syscall names; unknown numbers resolve to None.

    libseccomp is loaded on first use so that importing the monitor (e.g.
    for `enforcer monitor --help`) stays cheap.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], str | None] = {}
        self._resolve = None

    def name(self, arch: int, nr: int) -> str | None:
        key = (arch, nr)
        try:
            return self._cache[key]
        except KeyError:
            pass
        name = self._lookup(arch, nr)
        if len(self._cache) < 65536:  # bogus numbers from a hostile workload must not grow us
            self._cache[key] = name
        return name

    def _lookup(self, arch: int, nr: int) -> str | None:
        from enforcer.policy import syscall_table

        if nr < 0 or nr > 0xFFFFFFFF:
            return None
        x32 = arch == _AUDIT_ARCH_X86_64 and bool(nr & _X32_SYSCALL_BIT)
        # An x32 process reports arch x86_64 with the x32 bit set in nr; the
        # table's x32 numbers carry the bit.
        arch_word = "x32" if x32 else ARCH_NAMES.get(arch)
        if arch_word is not None:
            found = syscall_table.name_of(nr, arch_word)
            if found is not None:
                return found
        if self._resolve is None:
            import pyseccomp

            self._resolve = pyseccomp.resolve_syscall
        if x32:
            arch, nr = _AUDIT_ARCH_X32, nr & ~_X32_SYSCALL_BIT
        try:
            raw = self._resolve(arch, nr)  # type: ignore[misc]
        except (ValueError, OSError):
            return None
        name = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        return name or None
