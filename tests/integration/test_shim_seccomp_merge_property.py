"""The seccomp intersection against libseccomp, on random profiles.

Random pairs of small OCI profiles (a few syscalls, every action, every
comparison, conditions on shared argument indexes with colliding
constants, 32-bit architectures now and then) are intersected by
enforcer.shim.seccomp_merge; all three are compiled with libseccomp as runc
does it and run in the BPF simulator over every argument vector built from
the profiles' constants. For every call:

* the merged decision is never weaker than the two filters stacked (the
  stricter decision), whatever the inputs;
* it is exactly the stacked decision whenever the merge reports nothing
  (no place where it had to be stricter).
"""

from __future__ import annotations

import itertools
import random

import pytest

from enforcer.shim.seccomp_merge import intersect
from tests.emit_helpers import AUDIT_ARCH, X32_BIT, candidate_arg_values, known_syscalls, run_bpf
from tests.seccomp_merge_helpers import ACTION_FULL, PRECEDENCE, compile_oci, stricter

SYSCALLS = ["personality", "socket", "ioctl", "mkdir", "read"]
ACTIONS = [("SCMP_ACT_ALLOW", None), ("SCMP_ACT_ERRNO", 1), ("SCMP_ACT_ERRNO", 38),
           ("SCMP_ACT_TRAP", None), ("SCMP_ACT_KILL_PROCESS", None),
           ("SCMP_ACT_KILL_THREAD", None), ("SCMP_ACT_LOG", None)]
DEFAULTS = [("SCMP_ACT_ERRNO", 1), ("SCMP_ACT_ERRNO", 38), ("SCMP_ACT_ALLOW", None),
            ("SCMP_ACT_KILL_PROCESS", None), ("SCMP_ACT_LOG", None)]
OPS = ["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT",
       "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ"]
NARROW = [0, 1, 2, 3, 8, 0x10, 0xFF, 0xFFFFFFFF, 0x7E020000]
WIDE = NARROW + [1 << 32, (1 << 32) + 5, 1 << 63, (1 << 64) - 1]
NARROW_MASKS = [0x1, 0x3, 0xF0, 0xFF, 0xFFFFFFFF, 0x7E020000]
WIDE_MASKS = NARROW_MASKS + [(1 << 64) - 1, 0xFFFFFFFF00000000]
OCI_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32"}
KILLS = (0x00000000, 0x80000000)
U64 = (1 << 64) - 1


def _arg(rng: random.Random, wild: bool, index: int | None = None) -> dict:
    op = rng.choice(OPS)
    index = rng.randrange(2) if index is None else index
    if op == "SCMP_CMP_MASKED_EQ":
        mask = rng.choice(WIDE_MASKS if wild else NARROW_MASKS)
        return {"index": index, "value": mask,
                "valueTwo": mask & rng.choice(WIDE if wild else NARROW), "op": op}
    return {"index": index, "value": rng.choice(WIDE if wild else NARROW), "op": op}


def _profile(rng: random.Random, wild: bool = False) -> dict:
    """A random profile. Not `wild`: rule sets libseccomp 2.5.4 decides as
    written (per syscall, one-comparison rules with 32-bit constants, or a
    single rule comparing several arguments; see
    seccomp_merge._fit_libseccomp). `wild`: anything, 64-bit constants and
    several-argument rules in sets included."""
    default = rng.choice(DEFAULTS)
    profile: dict = {"defaultAction": default[0],
                     "architectures": rng.choice([["SCMP_ARCH_X86_64"],
                                                  ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                                                  ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]]),
                     "syscalls": []}
    if default[1] is not None:
        profile["defaultErrnoRet"] = default[1]
    for name in rng.sample(SYSCALLS, rng.randrange(1, len(SYSCALLS) + 1)):
        # One action per syscall, as real profiles have it (several actions
        # with overlapping conditions are libseccomp's to order, not ours).
        action, ret = rng.choice(ACTIONS)
        several_args = rng.random() < 0.3
        for _ in range(rng.randrange(1, 4) if wild or not several_args else 1):
            entry: dict = {"names": [name], "action": action}
            if ret is not None:
                entry["errnoRet"] = ret
            entry["args"] = [_arg(rng, wild, i) for i in (range(2) if several_args else [None])]
            profile["syscalls"].append(entry)
        if rng.random() < 0.15:
            action, ret = rng.choice(ACTIONS)
            profile["syscalls"].append({"names": [name], "action": action,
                                        **({"errnoRet": ret} if ret is not None else {})})
    return profile


def _compile(profile: dict):  # type: ignore[no-untyped-def]
    try:
        return compile_oci(profile)
    except OSError:
        return None  # a profile libseccomp refuses (conflicting rules): runc would too


def _vectors(profiles: list[dict], rng: random.Random) -> list[tuple[int, ...]]:
    """Each candidate value at index 0 and at index 1 (the other 0), and a
    sample of pairs: the conditions here use only those two indexes."""
    values = candidate_arg_values([e for p in profiles for e in p["syscalls"]])
    vectors = {(v, 0, 0, 0, 0, 0) for v in values} | {(0, v, 0, 0, 0, 0) for v in values}
    pairs = list(itertools.product(values, repeat=2))
    vectors |= {(a, b, 0, 0, 0, 0) for a, b in rng.sample(pairs, min(len(pairs), 150))}
    return sorted(vectors)


def _tables() -> dict[str, dict[str, int]]:
    return {arch: {name: nr for nr, name in known_syscalls(arch).items()}
            for arch in ("x86_64", "x86", "x32")}


@pytest.mark.slow
def test_random_profiles_merge_never_weaker_and_exact_when_unreported() -> None:
    rng = random.Random(20261326)
    tables = _tables()
    checked = exact_samples = fallback_samples = 0
    failures: list[str] = []
    for sample in range(200):
        config, policy = _profile(rng), _profile(rng)
        cf, pf = _compile(config), _compile(policy)
        if cf is None or pf is None:
            continue
        merged, notes = intersect(config, policy, "SCMP_ARCH_X86_64")
        mf = compile_oci(merged)  # must always compile: runc must be able to load it
        exact = not notes
        exact_samples += exact
        fallback_samples += not exact
        vectors = _vectors([config, policy], rng)
        for arch, table in tables.items():
            for name in SYSCALLS + ["write"]:
                for args in vectors:
                    c, p, m = (run_bpf(f, table[name], AUDIT_ARCH[arch], args)
                               for f in (cf, pf, mf))
                    want = stricter(c, p)
                    checked += 1
                    if OCI_ARCH[arch] not in merged["architectures"]:
                        # Admitted by one profile at most: runc's bad-architecture
                        # action kills the thread; stacked, the other profile
                        # could have said KILL_PROCESS. Both kill.
                        want = m if want & ACTION_FULL in KILLS and m & ACTION_FULL in KILLS \
                            else want
                    weaker = PRECEDENCE[m & ACTION_FULL] < PRECEDENCE[want & ACTION_FULL]
                    if weaker or (exact and m != want):
                        failures.append(f"sample {sample} {arch} {name} args={args[:2]}: "
                                        f"merged {m:#x} stacked {want:#x} (config {c:#x}, "
                                        f"policy {p:#x}) notes={notes}\nconfig={config}\n"
                                        f"policy={policy}\nmerged={merged}")
                        break
    print(f"\n{checked} decisions, {exact_samples} exact samples, {fallback_samples} with notes")
    assert exact_samples > 40 and checked > 100_000
    assert not failures, "\n\n".join(failures[:3])


def _holds(arg: dict, x: int) -> bool:
    op, v = arg["op"], arg["value"]
    return {"SCMP_CMP_EQ": x == v, "SCMP_CMP_NE": x != v, "SCMP_CMP_LT": x < v,
            "SCMP_CMP_LE": x <= v, "SCMP_CMP_GT": x > v, "SCMP_CMP_GE": x >= v,
            "SCMP_CMP_MASKED_EQ": x & v == arg.get("valueTwo", 0)}[op]


RET = {"SCMP_ACT_ALLOW": 0x7FFF0000, "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_TRAP": 0x00030000,
       "SCMP_ACT_KILL_THREAD": 0, "SCMP_ACT_KILL_PROCESS": 0x80000000}


def _ret(action: str, errno: int | None) -> int:
    return 0x00050000 | (1 if errno is None else errno) if action == "SCMP_ACT_ERRNO" \
        else RET[action]


def _as_written(profile: dict, name: str, args: tuple[int, ...]) -> int:
    """The merged profile's decision as its rules say it (they never overlap
    with different actions, by construction)."""
    default = _ret(profile["defaultAction"], profile.get("defaultErrnoRet"))
    matched = set()
    for e in profile["syscalls"]:
        if name not in e["names"]:
            continue
        ret = _ret(e["action"], e.get("errnoRet"))
        if ret == default:
            continue
        if not e.get("args"):
            return ret
        if all(_holds(a, args[a["index"]]) for a in e["args"]):
            matched.add(ret)
    assert len(matched) <= 1, (name, args, matched)
    return matched.pop() if matched else default


@pytest.mark.slow
def test_the_merged_profile_is_decided_as_written_whatever_the_inputs() -> None:
    """Inputs libseccomp itself misreads (64-bit constants, several-argument
    rules in sets, overlapping actions): the merged profile, at least, is
    one libseccomp decides exactly as written."""
    rng = random.Random(1326)
    table = _tables()["x86_64"]
    checked = 0
    failures = []
    for sample in range(150):
        config, policy = _profile(rng, wild=True), _profile(rng, wild=True)
        merged, notes = intersect(config, policy, "SCMP_ARCH_X86_64")
        mf = compile_oci(merged)
        for name in SYSCALLS:
            for args in _vectors([config, policy], rng):
                checked += 1
                got = run_bpf(mf, table[name], AUDIT_ARCH["x86_64"], args)
                want = _as_written(merged, name, args)
                if got != want:
                    failures.append(f"sample {sample} {name} {args[:2]}: libseccomp {got:#x}, "
                                    f"written {want:#x}\nmerged={merged}")
                    break
    assert checked > 50_000
    assert not failures, "\n\n".join(failures[:3])


@pytest.mark.parametrize("config_arches, policy_arches, admitted", [
    (["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], ["SCMP_ARCH_X86_64"],
     ["SCMP_ARCH_X86_64"]),
    (["SCMP_ARCH_X86"], ["SCMP_ARCH_X32"], ["SCMP_ARCH_X86_64"]),  # runc always admits native
    ([], ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], ["SCMP_ARCH_X86_64"]),
])
def test_architectures_are_intersected(config_arches, policy_arches, admitted) -> None:
    allow = {"defaultAction": "SCMP_ACT_ALLOW"}
    merged, _ = intersect({**allow, "architectures": config_arches},
                          {**allow, "architectures": policy_arches}, "SCMP_ARCH_X86_64")
    assert merged["architectures"] == admitted
    filt = compile_oci(merged)
    read_x86 = {v: k for k, v in known_syscalls("x86").items()}["read"]
    if "SCMP_ARCH_X86" not in admitted:
        assert run_bpf(filt, read_x86, AUDIT_ARCH["x86"]) & ACTION_FULL == 0  # bad arch: killed
    if "SCMP_ARCH_X32" not in admitted:
        assert run_bpf(filt, X32_BIT, AUDIT_ARCH["x32"]) & ACTION_FULL == 0
