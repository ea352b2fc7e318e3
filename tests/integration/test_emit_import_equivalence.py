"""Acceptance (issue 3): Docker's default seccomp profile, imported as a YAML
policy and compiled by enforcer, decides every syscall exactly as the
original JSON compiled directly through libseccomp (as runc does).

Both filters are run through a classic-BPF interpreter (tests/emit_helpers.py)
over struct seccomp_data for every syscall number libseccomp knows on
x86_64, x86 and x32 (the archMap entry of x86_64), and with argument values
around every constant of every argument rule (plus the 64-bit edges), so
each conditional rule is seen to match and to not match.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from enforcer.importer.docker_seccomp import import_profile
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

from tests.paths import DOCKER_DEFAULT_SECCOMP as FIXTURE  # noqa: E402

DOCKER_CAPS = {"CAP_" + c for c in (
    "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP "
    "NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE").split()}
KERNEL = (6, 18)
U64 = (1 << 64) - 1

# Capability sets to resolve includes/excludes against: Docker's default, and
# one with CAP_SYS_ADMIN etc. so the other branches of the profile are used.
CAP_SETS = {
    "docker-default": DOCKER_CAPS,
    "privileged-ish": DOCKER_CAPS | {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_BOOT",
                                     "CAP_BPF", "CAP_PERFMON", "CAP_SYS_NICE"},
}

ACTION_MASK = 0xFFFF0000


def _policy_from_yaml(path: Path):  # type: ignore[no-untyped-def]
    from enforcer.policy.loader import load_policy

    return load_policy(str(path))


def _compiled_bpf(policy) -> bytes:  # type: ignore[no-untyped-def]
    from enforcer.compile import compile_policy

    plan = compile_policy(policy)
    assert plan.seccomp is not None
    return plan.seccomp.filter.bpf


@pytest.mark.parametrize("cap_set", sorted(CAP_SETS))
def test_imported_docker_default_decides_like_the_original(tmp_path: Path, cap_set: str) -> None:
    caps = CAP_SETS[cap_set]
    data = json.loads(FIXTURE.read_text())
    text, _notes = import_profile(str(FIXTURE), caps=sorted(caps), arch="x86_64", kernel=KERNEL)
    out = tmp_path / "imported.yaml"
    out.write_text(text)
    ours = parse_bpf(_compiled_bpf(_policy_from_yaml(out)))
    ref = parse_bpf(reference_bpf(data, caps, kernel=KERNEL))

    entries = resolve_docker_entries(data, caps, "amd64", KERNEL)
    conditional_names = {n for e in entries if e.get("args") for n in e.get("names", [])}
    values = candidate_arg_values(entries)
    arg_indexes = sorted({a["index"] for e in entries for a in e.get("args") or []})
    rng = random.Random(1326)

    compared = 0
    differences: list[str] = []
    decisions: set[int] = set()
    for arch in ("x86_64", "x86", "x32"):
        table = known_syscalls(arch)
        assert len(table) > 300, f"libseccomp knows too few {arch} syscalls"
        audit_arch = AUDIT_ARCH[arch]
        for nr, name in table.items():
            cases: list[tuple[int, ...]] = [(0,) * 6]
            cases += [tuple(rng.randrange(U64 + 1) for _ in range(6)) for _ in range(3)]
            for index in arg_indexes:
                # Every value for syscalls with argument rules in the profile;
                # a sample for the rest, to catch a condition ours adds.
                sweep = values if name in conditional_names else rng.sample(values, 6)
                for v in sweep:
                    args = [0] * 6
                    args[index] = v
                    cases.append(tuple(args))
            for args in cases:
                a = run_bpf(ours, nr, audit_arch, args)
                b = run_bpf(ref, nr, audit_arch, args)
                compared += 1
                decisions.add(b)
                if a != b:
                    differences.append(f"{arch} {name}({nr}) args={args}: ours {a:#x}, ref {b:#x}")
    print(f"\n{cap_set}: {compared} decisions compared over x86_64/x86/x32, "
          f"{len(differences)} differ; distinct decisions: "
          + ", ".join(f"{d:#x}" for d in sorted(decisions)))
    # The comparison must have exercised allow, EPERM and ENOSYS decisions.
    assert {0x7FFF0000, 0x00050001} <= decisions
    if cap_set == "docker-default":
        assert 0x00050026 in decisions  # clone3 -> ENOSYS
    assert compared > 1000
    assert not differences, f"{len(differences)} of {compared} differ:\n" + "\n".join(differences[:30])


def test_conditional_rules_really_are_exercised() -> None:
    """The candidate values make each argument rule of the profile both match
    and not match (guards the test above against vacuous argument sweeps)."""
    data = json.loads(FIXTURE.read_text())
    caps = CAP_SETS["docker-default"]
    ref = parse_bpf(reference_bpf(data, caps, kernel=KERNEL))
    entries = resolve_docker_entries(data, caps, "amd64", KERNEL)
    values = candidate_arg_values(entries)
    x86_64 = {v: k for k, v in known_syscalls("x86_64").items()}
    checked = 0
    for e in entries:
        if not e.get("args"):
            continue
        (a,) = e["args"]
        nr = x86_64[e["names"][0]]
        seen = set()
        for v in values:
            args = [0] * 6
            args[a["index"]] = v
            seen.add(run_bpf(ref, nr, AUDIT_ARCH["x86_64"], tuple(args)))
        assert len(seen) >= 2, f"{e['names']} {a}: only {seen}"
        checked += 1
    assert checked >= 9


def test_x32_and_foreign_arches_are_blocked_by_both() -> None:
    data = json.loads(FIXTURE.read_text())
    ref = parse_bpf(reference_bpf(data, DOCKER_CAPS, kernel=KERNEL))
    # aarch64 is not in the x86_64 archMap entry: libseccomp kills it.
    assert run_bpf(ref, 0, AUDIT_ARCH["aarch64"]) & ACTION_MASK in (0, 0x80000000)
    # x32 read is allowed (x32 is a sub-architecture in Docker's archMap).
    assert run_bpf(ref, X32_BIT, AUDIT_ARCH["x32"]) == 0x7FFF0000


@pytest.mark.parametrize("cap_set", sorted(CAP_SETS))
def test_round_trip_json_yaml_oci_json_keeps_every_decision(tmp_path: Path, cap_set: str) -> None:
    """JSON -> imported YAML -> exported OCI seccomp -> libseccomp decides like
    the original JSON: checks the exporter (masked_eq order, errnoRet,
    grouping, architectures) against the same reference."""
    from enforcer.emit.oci import oci_seccomp

    caps = CAP_SETS[cap_set]
    data = json.loads(FIXTURE.read_text())
    text, _notes = import_profile(str(FIXTURE), caps=sorted(caps), arch="x86_64", kernel=KERNEL)
    out = tmp_path / "imported.yaml"
    out.write_text(text)
    exported = oci_seccomp(_policy_from_yaml(out), machine="x86_64")
    assert exported["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    # Both sides resolved already: the exported profile has no includes/excludes.
    ours = parse_bpf(reference_bpf(exported, caps, kernel=KERNEL))
    ref = parse_bpf(reference_bpf(data, caps, kernel=KERNEL))
    entries = resolve_docker_entries(data, caps, "amd64", KERNEL)
    values = candidate_arg_values(entries)
    differences = []
    compared = 0
    for arch in ("x86_64", "x86", "x32"):
        for nr, name in known_syscalls(arch).items():
            for v in values if name in {"socket", "personality", "clone"} else [0, U64]:
                args = (v, 0, 0, 0, 0, 0)
                a = run_bpf(ours, nr, AUDIT_ARCH[arch], args)
                b = run_bpf(ref, nr, AUDIT_ARCH[arch], args)
                compared += 1
                if a != b:
                    differences.append(f"{arch} {name} arg0={v:#x}: {a:#x} vs {b:#x}")
    assert compared > 2000
    assert not differences, "\n".join(differences[:30])
