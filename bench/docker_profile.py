"""Compile Docker's default seccomp profile to BPF the way dockerd + runc do.

The per-syscall benchmark compares enforcer's filter with what a user gets
from `docker run` by default. For the comparison to be fair, Docker's
filter must be the one the kernel would really run, so this module follows
the two real steps (behaviour checked against the moby profile loader and
runc 1.1's libcontainer/seccomp, which is the runc installed here):

1. dockerd turns the profile (its own JSON dialect) into an OCI
   `linux.seccomp` object: architectures from `archMap` for the native arch
   (x86_64 brings its sub-architectures x86 and x32), and each syscall entry
   kept or dropped by its `includes`/`excludes` (architectures in Go's
   spelling, capabilities against the container's capability set, minimum
   kernel against the running kernel).
2. runc turns that into a libseccomp filter: `seccomp_init(default)`, every
   architecture added, one `seccomp_rule_add` per syscall name (names
   libseccomp cannot resolve are skipped; rules whose action equals the
   default are skipped; several conditions on the same argument index
   become separate rules, i.e. OR). runc leaves every libseccomp attribute
   at its default -- in particular SCMP_FLTATR_CTL_OPTIMIZE stays 1 (a
   priority-ordered linear list per architecture, not a binary tree) -- and
   exports the BPF. Then it prepends its "-ENOSYS stub" (patchbpf): for
   each architecture, a syscall number above the largest one the profile
   names returns ENOSYS instead of the default errno, so new syscalls fail
   the way libc expects. It loads the result with flags 0 when the profile
   asks for no flags (Docker's does not).

Usage as a script: python bench/docker_profile.py PROFILE.json OUT.bpf
"""

from __future__ import annotations

import errno
import json
import os
import platform
import struct
import sys
import tempfile
from typing import Any

import pyseccomp

# Docker's default capability set for a container (moby oci/caps defaults).
DOCKER_DEFAULT_CAPS = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})

# Go's GOARCH spelling (what the profile's includes/excludes use) for the
# machines this bench runs on, and the libseccomp spelling of archMap.
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
SCMP_ARCH = {
    "SCMP_ARCH_X86_64": pyseccomp.Arch.X86_64,
    "SCMP_ARCH_X86": pyseccomp.Arch.X86,
    "SCMP_ARCH_X32": pyseccomp.Arch.X32,
    "SCMP_ARCH_AARCH64": pyseccomp.Arch.AARCH64,
    "SCMP_ARCH_ARM": pyseccomp.Arch.ARM,
}
ACTIONS = {
    "SCMP_ACT_ALLOW": pyseccomp.ALLOW,
    "SCMP_ACT_LOG": pyseccomp.LOG,
    "SCMP_ACT_TRAP": pyseccomp.TRAP,
    "SCMP_ACT_KILL": pyseccomp.KILL_THREAD,  # runc maps "kill" to kill-thread
    "SCMP_ACT_KILL_THREAD": pyseccomp.KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": pyseccomp.KILL_PROCESS,
}
OPS = {
    "SCMP_CMP_NE": pyseccomp.NE, "SCMP_CMP_LT": pyseccomp.LT, "SCMP_CMP_LE": pyseccomp.LE,
    "SCMP_CMP_EQ": pyseccomp.EQ, "SCMP_CMP_GE": pyseccomp.GE, "SCMP_CMP_GT": pyseccomp.GT,
    "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ,
}
NATIVE_AUDIT_ARCH = {pyseccomp.Arch.X86_64: 0xC000003E, pyseccomp.Arch.X32: 0xC000003E,
                     pyseccomp.Arch.X86: 0x40000003}
X32_SYSCALL_BIT = 0x40000000


def _kernel_at_least(minimum: str, release: str) -> bool:
    def nums(v: str) -> tuple[int, ...]:
        out = []
        for part in v.split("-")[0].split(".")[:2]:
            digits = "".join(ch for ch in part if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)
    return nums(release) >= nums(minimum)


def docker_to_oci(profile: dict[str, Any], machine: str | None = None,
                  caps: frozenset[str] = DOCKER_DEFAULT_CAPS,
                  kernel: str | None = None) -> dict[str, Any]:
    """Step 1: the OCI linux.seccomp object dockerd hands to runc."""
    machine = machine or platform.machine()
    kernel = kernel or platform.release()
    goarch = GOARCH.get(machine, machine)
    native_scmp = "SCMP_ARCH_" + machine.upper()
    arches: list[str] = []
    for entry in profile.get("archMap", []):
        if entry["architecture"] == native_scmp:
            arches = [entry["architecture"], *entry.get("subArchitectures", [])]
    syscalls = []
    for call in profile["syscalls"]:
        inc, exc = call.get("includes", {}), call.get("excludes", {})
        if goarch in exc.get("arches", []):
            continue
        if any(c in caps for c in exc.get("caps", [])):
            continue
        if exc.get("minKernel") and _kernel_at_least(exc["minKernel"], kernel):
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if inc.get("caps") and not all(c in caps for c in inc["caps"]):
            continue
        if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"], kernel):
            continue
        out: dict[str, Any] = {"names": list(call["names"]), "action": call["action"]}
        if "errnoRet" in call:
            out["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            out["args"] = [{"index": a["index"], "value": a["value"],
                            "valueTwo": a.get("valueTwo", 0), "op": a["op"]}
                           for a in call["args"]]
        syscalls.append(out)
    oci: dict[str, Any] = {"defaultAction": profile["defaultAction"],
                           "architectures": arches, "syscalls": syscalls}
    if "defaultErrnoRet" in profile:
        oci["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return oci


def _action(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ERRNO":
        return int(pyseccomp.ERRNO(errno.EPERM if errno_ret is None else errno_ret))
    if name == "SCMP_ACT_TRACE":
        return int(pyseccomp.TRACE(errno.EPERM if errno_ret is None else errno_ret))
    return int(ACTIONS[name])


SCMP_ERROR = -1  # libseccomp's __NR_SCMP_ERROR: a name it does not know


def _resolve(arch: int, name: str, pseudo_ok: bool = False) -> int | None:
    """A syscall number, or None if libseccomp does not know the name.

    Names that exist only on some architectures (waitpid, socketcall, ...)
    resolve to a negative *pseudo* number on the others. runc (through
    libseccomp-golang) rejects only SCMP_ERROR, so it passes pseudo numbers
    to seccomp_rule_add and libseccomp adds the rule on the architectures
    where the call exists (x86 here): `pseudo_ok` does the same.
    """
    try:
        nr = int(pyseccomp.resolve_syscall(arch, name))
    except (OSError, ValueError):
        return None
    if nr == SCMP_ERROR or (nr < 0 and not pseudo_ok):
        return None
    return nr


def oci_to_libseccomp(oci: dict[str, Any]) -> pyseccomp.SyscallFilter:
    """Step 2a: the libseccomp filter runc builds (attributes left default)."""
    default = _action(oci["defaultAction"], oci.get("defaultErrnoRet"))
    filt = pyseccomp.SyscallFilter(default)
    for arch in oci["architectures"]:
        a = SCMP_ARCH[arch]
        if a != pyseccomp.system_arch():
            filt.add_arch(a)
    filt.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # runc: SetNoNewPrivsBit(false)
    for call in oci["syscalls"]:
        act = _action(call["action"], call.get("errnoRet"))
        if act == default:
            continue  # runc: "This rule is redundant, silently skip it"
        args = call.get("args", [])
        for name in call["names"]:
            nr = _resolve(pyseccomp.Arch.NATIVE, name, pseudo_ok=True)
            if nr is None:
                continue  # runc: unknown to libseccomp -> ignored
            conds = [pyseccomp.Arg(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
                     for a in args]
            indexes = [a["index"] for a in args]
            if len(set(indexes)) != len(indexes):
                for c in conds:  # same arg twice: one rule per condition (OR)
                    filt.add_rule(act, nr, c)
            else:
                filt.add_rule(act, nr, *conds)
    return filt


def _export(filt: pyseccomp.SyscallFilter) -> bytes:
    with tempfile.TemporaryFile() as f:
        filt.export_bpf(f)
        f.seek(0)
        return f.read()


# -- runc's -ENOSYS stub -------------------------------------------------

LD_ABS_W = 0x20
JA, JEQ, JGT, JSET = 0x05, 0x15, 0x25, 0x45
RET_K = 0x06
RET_ERRNO_ENOSYS = 0x00050000 | errno.ENOSYS


def _largest_syscalls(oci: dict[str, Any]) -> dict[int, dict[int, int]]:
    """AUDIT_ARCH -> {libseccomp arch: largest syscall number the profile names}."""
    out: dict[int, dict[int, int]] = {}
    for arch_name in oci["architectures"]:
        arch = SCMP_ARCH[arch_name]
        largest = 0
        for call in oci["syscalls"]:
            for name in call["names"]:
                nr = _resolve(arch, name)
                if nr is not None and nr > largest:
                    largest = nr
        if largest:
            out.setdefault(NATIVE_AUDIT_ARCH[arch], {})[arch] = largest
    return out


def enosys_stub(oci: dict[str, Any], filter_len: int) -> list[tuple[int, int, int, int]]:
    """runc's prefix: ENOSYS for syscall numbers past the profile's largest.

    Laid out with labels and resolved here (runc builds it back to front;
    the instructions executed are the same). The native architecture's
    check comes first -- runc's order depends on Go map iteration, so we
    take the order that is cheapest for Docker.
    """
    if oci.get("defaultErrnoRet") == errno.ENOSYS or oci["defaultAction"] in (
            "SCMP_ACT_ALLOW", "SCMP_ACT_LOG"):
        return []
    largest = _largest_syscalls(oci)
    # Symbolic program: ("jump", cond, k, true_label, false_label) etc.
    prog: list[tuple[Any, ...]] = [("ld", 4)]
    native = NATIVE_AUDIT_ARCH[pyseccomp.system_arch()]
    order = sorted(largest, key=lambda a: a != native)
    for audit_arch in order:
        prog.append(("j", JEQ, audit_arch, f"sec{audit_arch}", "next"))
    prog.append(("ja", "filter"))
    for audit_arch in order:
        per = largest[audit_arch]
        prog.append(("label", f"sec{audit_arch}"))
        prog.append(("ld", 0))
        end = f"end{audit_arch}"
        if len(per) == 2:  # x86_64 + x32 share AUDIT_ARCH_X86_64
            prog.append(("j", JSET, X32_SYSCALL_BIT, "x32", "next"))
            prog.append(("j", JGT, per[pyseccomp.Arch.X86_64], "enosys", end))
            prog.append(("label", "x32"))
            prog.append(("j", JGT, per[pyseccomp.Arch.X32], "enosys", end))
        else:
            (arch, nr), = per.items()
            if arch == pyseccomp.Arch.X86_64:
                prog.append(("j", JSET, X32_SYSCALL_BIT, end, "next"))
            prog.append(("j", JGT, nr, "enosys", end))
        prog.append(("label", end))
        prog.append(("ja", "filter"))  # runc ends each section with this jump
    # runc's tail: a jump over the ENOSYS return into the filter (nothing
    # falls through to it, but it is in the program), then the return.
    prog.append(("ja", "filter"))
    prog.append(("label", "enosys"))
    prog.append(("ret", RET_ERRNO_ENOSYS))
    # Resolve labels: position of each real instruction.
    real = [p for p in prog if p[0] != "label"]
    labels: dict[str, int] = {"filter": len(real)}
    pos = 0
    for p in prog:
        if p[0] == "label":
            labels[p[1]] = pos
        else:
            pos += 1
    out: list[tuple[int, int, int, int]] = []
    for i, p in enumerate(real):
        def off(label: str) -> int:
            target = i + 1 if label == "next" else labels[label]
            return target - (i + 1)
        if p[0] == "ld":
            out.append((LD_ABS_W, 0, 0, p[1]))
        elif p[0] == "ret":
            out.append((RET_K, 0, 0, p[1]))
        elif p[0] == "ja":
            out.append((JA, 0, 0, off(p[1])))
        else:
            _, code, k, t, f = p
            jt, jf = off(t), off(f)
            if jt > 255 or jf > 255:
                raise ValueError("stub jump too long; runc would use a long jump here")
            out.append((code, jt, jf, k))
    return out


def compile_docker_profile(path: str) -> bytes:
    """Docker's default profile as the raw BPF runc would load."""
    with open(path, encoding="utf-8") as f:
        profile = json.load(f)
    oci = docker_to_oci(profile)
    body = _export(oci_to_libseccomp(oci))
    stub = enosys_stub(oci, len(body) // 8)
    return b"".join(struct.pack("<HBBI", *insn) for insn in stub) + body


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: docker_profile.py PROFILE.json OUT.bpf", file=sys.stderr)
        return 2
    bpf = compile_docker_profile(argv[1])
    tmp = argv[2] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(bpf)
    os.replace(tmp, argv[2])
    print(f"{argv[2]}: {len(bpf) // 8} instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
