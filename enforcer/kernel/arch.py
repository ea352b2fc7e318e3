"""Architectures: the one table of their names and numbers.

Each row is an architecture a seccomp filter can admit, by

* `name`: libseccomp's name, which is also the policy format's
  (`syscalls.architectures`) and the Plan's (`seccomp.native_arch`);
* `audit`: the kernel's AUDIT_ARCH_* value (linux/audit.h): what
  `struct seccomp_data.arch` holds and what an audit record's `arch=`
  says. libseccomp's architecture tokens are these values -- x32's
  included, whose token is x86_64's value with the x32 bit, although its
  calls reach a filter as x86_64 ones with that bit in the number;
* `oci`: the OCI runtime spec's / Docker's SCMP_ARCH_* name;
* `machines`: the `uname -m` names of a host whose native ABI it is.

A plain class per row, not an Enum: `enum` costs ~4 ms on the start path,
which reads this table (the shim's seccomp merge, the apply step's
messages). tests/unit/test_monitor_audit_parse.py checks every value
against libseccomp.
"""

from __future__ import annotations

import os


class Arch:
    __slots__ = ("name", "audit", "oci", "machines")

    def __init__(self, name: str, audit: int, oci: str, machines: tuple[str, ...] = ()) -> None:
        self.name = name
        self.audit = audit
        self.oci = oci
        self.machines = machines

    def __repr__(self) -> str:
        return f"Arch({self.name!r}, {self.audit:#010x}, {self.oci!r})"


ARCHES: tuple[Arch, ...] = (
    Arch("x86_64", 0xC000003E, "SCMP_ARCH_X86_64", ("x86_64", "amd64")),
    Arch("x86", 0x40000003, "SCMP_ARCH_X86", ("i386", "i486", "i586", "i686")),
    Arch("x32", 0x4000003E, "SCMP_ARCH_X32"),
    Arch("arm", 0x40000028, "SCMP_ARCH_ARM", ("armv7l", "armv6l")),
    Arch("aarch64", 0xC00000B7, "SCMP_ARCH_AARCH64", ("aarch64", "arm64")),
    Arch("mips", 0x00000008, "SCMP_ARCH_MIPS"),
    Arch("mips64", 0x80000008, "SCMP_ARCH_MIPS64", ("mips64",)),
    Arch("mips64n32", 0xA0000008, "SCMP_ARCH_MIPS64N32"),
    Arch("mipsel", 0x40000008, "SCMP_ARCH_MIPSEL"),
    Arch("mipsel64", 0xC0000008, "SCMP_ARCH_MIPSEL64"),
    Arch("mipsel64n32", 0xE0000008, "SCMP_ARCH_MIPSEL64N32"),
    Arch("ppc", 0x00000014, "SCMP_ARCH_PPC"),
    Arch("ppc64", 0x80000015, "SCMP_ARCH_PPC64", ("ppc64",)),
    Arch("ppc64le", 0xC0000015, "SCMP_ARCH_PPC64LE", ("ppc64le",)),
    Arch("s390", 0x00000016, "SCMP_ARCH_S390"),
    Arch("s390x", 0x80000016, "SCMP_ARCH_S390X", ("s390x",)),
    Arch("parisc", 0x0000000F, "SCMP_ARCH_PARISC"),
    Arch("parisc64", 0x8000000F, "SCMP_ARCH_PARISC64"),
    Arch("riscv64", 0xC00000F3, "SCMP_ARCH_RISCV64", ("riscv64",)),
    Arch("loongarch64", 0xC0000102, "SCMP_ARCH_LOONGARCH64", ("loongarch64",)),
)

BY_NAME: dict[str, Arch] = {a.name: a for a in ARCHES}
BY_AUDIT: dict[int, Arch] = {a.audit: a for a in ARCHES}
# libseccomp name -> SCMP_ARCH_* (OCI, Docker).
SCMP_ARCH: dict[str, str] = {a.name: a.oci for a in ARCHES}
# uname -m -> libseccomp name.
MACHINE_ARCH: dict[str, str] = {m: a.name for a in ARCHES for m in a.machines}

AUDIT_ARCH_X86_64 = BY_NAME["x86_64"].audit
AUDIT_ARCH_X32 = BY_NAME["x32"].audit
X32_SYSCALL_BIT = 0x40000000


def native_arch(machine: str | None = None) -> str:
    """The libseccomp name of this machine's (or `machine`'s) architecture.
    ValueError for a machine not in the table."""
    m = machine or os.uname().machine
    try:
        return MACHINE_ARCH[m]
    except KeyError:
        raise ValueError(f"unsupported machine architecture {m!r}") from None


def arch_name(audit: int) -> str:
    """An AUDIT_ARCH_* value's name, or its hex form when unknown."""
    arch = BY_AUDIT.get(audit)
    return arch.name if arch is not None else f"0x{audit:08x}"
