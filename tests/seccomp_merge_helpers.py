"""Compare seccomp profiles decision by decision, the way the kernel decides.

Used by the tests of the shim's seccomp intersection: each OCI profile is
compiled with libseccomp the way runc compiles it (tests/emit_helpers.py's
reference_bpf, written independently of enforcer), every filter is run in
the BPF simulator (enforcer/kernel/bpfsim.py) over every syscall number of
each architecture and boundary argument values, and the merged filter's
decision is compared with the stricter of the two inputs' decisions, as
the kernel would pick it if both filters were stacked.
"""

from __future__ import annotations

import random
from typing import Any, Iterable

from tests.emit_helpers import (
    AUDIT_ARCH,
    X32_BIT,
    candidate_arg_values,
    known_syscalls,
    parse_bpf,
    reference_bpf,
    resolve_docker_entries,
    run_bpf,
)

U64 = (1 << 64) - 1
ACTION_FULL = 0xFFFF0000

# SECCOMP_RET_* action -> precedence (kernel/seccomp.c: the lowest action
# value wins when several filters are stacked; KILL_PROCESS is 0x80000000
# but ranks first).
PRECEDENCE = {0x80000000: 7, 0x00000000: 6, 0x00030000: 5, 0x00050000: 4, 0x7FC00000: 3,
              0x7FF00000: 2, 0x7FFC0000: 1, 0x7FFF0000: 0}

OCI_TO_LIBSECCOMP_ARCH = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "x86",
                          "SCMP_ARCH_X32": "x32"}


def stricter(config_ret: int, policy_ret: int) -> int:
    """The decision of both filters stacked: the higher precedence; on a tie
    (two errno values, say) the container's own profile's."""
    a, b = PRECEDENCE[config_ret & ACTION_FULL], PRECEDENCE[policy_ret & ACTION_FULL]
    return policy_ret if b > a else config_ret


def docker_profile_as_oci(data: dict[str, Any], caps: Iterable[str], native: str = "SCMP_ARCH_X86_64",
                          go_arch: str = "amd64", kernel: tuple[int, int] = (6, 18)
                          ) -> dict[str, Any]:
    """What dockerd writes into config.json from a Docker seccomp profile:
    the archMap entry of this machine, the entries that apply to these
    capabilities, architecture and kernel, without Docker's own fields."""
    arches = [native]
    for entry in data.get("archMap") or []:
        if entry["architecture"] == native:
            arches += entry.get("subArchitectures") or []
    syscalls = []
    for e in resolve_docker_entries(data, set(caps), go_arch, kernel):
        syscalls.append({k: e[k] for k in ("names", "action", "errnoRet", "args") if k in e})
    out: dict[str, Any] = {"defaultAction": data["defaultAction"], "architectures": arches,
                           "syscalls": syscalls}
    if "defaultErrnoRet" in data:
        out["defaultErrnoRet"] = data["defaultErrnoRet"]
    return out


def compile_oci(profile: dict[str, Any]) -> list[Any]:
    """The profile compiled with libseccomp as runc does it."""
    return parse_bpf(reference_bpf(profile, set()))


def _names_with_conditions(profiles: Iterable[dict[str, Any]]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for p in profiles:
        for e in p.get("syscalls") or []:
            for a in e.get("args") or []:
                for n in e["names"]:
                    out.setdefault(n, set()).add(a["index"])
    return out


def compare_intersection(config: dict[str, Any], policy: dict[str, Any],
                         merged: dict[str, Any], seed: int = 13) -> tuple[int, list[str], set[int]]:
    """(decisions compared, differences, distinct merged decisions).

    Every syscall number 0..1023 of each architecture either profile admits
    (x32 numbers with the x32 bit), known to libseccomp or not; argument
    vectors: zeros, random ones, and for every syscall any profile puts a
    condition on, each candidate value at each conditioned index and pairs
    of them when several indexes are conditioned."""
    filters = [compile_oci(p) for p in (config, policy, merged)]
    profiles = (config, policy, merged)
    conditioned = _names_with_conditions(profiles)
    values = candidate_arg_values([e for p in profiles for e in p.get("syscalls") or []])
    rng = random.Random(seed)
    arches = []
    for p in (config, policy):
        for a in p.get("architectures") or ["SCMP_ARCH_X86_64"]:
            if OCI_TO_LIBSECCOMP_ARCH[a] not in arches:
                arches.append(OCI_TO_LIBSECCOMP_ARCH[a])
    compared = 0
    differences: list[str] = []
    seen: set[int] = set()
    for arch in arches:
        base = X32_BIT if arch == "x32" else 0
        table = known_syscalls(arch)
        for nr in range(base, base + 1024):
            name = table.get(nr)
            cases: list[tuple[int, ...]] = [(0,) * 6]
            cases += [tuple(rng.randrange(U64 + 1) for _ in range(6)) for _ in range(2)]
            indexes = sorted(conditioned.get(name or "", ()))
            for index in indexes:
                for v in values:
                    args = [0] * 6
                    args[index] = v
                    cases.append(tuple(args))
            if len(indexes) > 1:
                for _ in range(300):
                    args = [0] * 6
                    for index in indexes:
                        args[index] = rng.choice(values)
                    cases.append(tuple(args))
            for args in cases:
                c, p, m = (run_bpf(f, nr, AUDIT_ARCH[arch], args) for f in filters)
                want = stricter(c, p)
                compared += 1
                seen.add(m)
                if m != want:
                    differences.append(f"{arch} {name or '?'}({nr:#x}) args={args}: merged "
                                       f"{m:#x}, config {c:#x}, policy {p:#x}")
    return compared, differences, seen
