"""The seccomp intersection must stay small and quick, whatever config.json says.

The container's seccomp profile comes from config.json: hostile input.
The intersection with the policy's profile (seccomp_merge.py) combined
every condition of one with every condition of the other, with nothing
to bound it; two ways to make the shim spin and grow by gigabytes (in
enforcer-shimd: a worker that a node's every container start waits on):

* a bundle started twice: the shim writes the merged profile into
  config.json, and merging that again with the same policy multiplied its
  rules by ~10 each time (572, 5908, 45087, 266154 rules; the fourth start
  of one bundle took ~12 s and then ran out of memory). Found by
  bench/shim_bench.py, which starts one bundle many times;
* a profile written to make the product large: a few hundred conditions
  per syscall on each side.

Checked through both front ends (the compiled one is served by
enforcer-shimd) and with the intersection alone, in a child with a memory
limit.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import session
from tests.emit_helpers import known_syscalls
from tests.shim_helpers import FIXTURE_CONFIG, REPO, run_shim

TRUE = shutil.which("true") or "/bin/true"
MEMORY_LIMIT = 1 << 30  # the child's address space: ample for a sane merge


def _seccomp_rules(bundle: Path) -> int:
    config = json.loads((bundle / "config.json").read_text())
    return len(config["linux"]["seccomp"]["syscalls"])


@pytest.mark.root
@pytest.mark.usefixtures("shim_front_end")
def test_a_bundle_started_again_keeps_the_same_profile(tmp_path: Path) -> None:
    # runc = /bin/true: the shim merges and writes config.json, nothing runs.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
    (tmp_path / "plans").mkdir()
    (tmp_path / "shim.json").write_text(json.dumps({"runc": TRUE,
                                                    "plans_dir": str(tmp_path / "plans")}))
    env = {"ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
           "ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
           "ENFORCER_CACHE_DIR": str(tmp_path / "plan-cache")}
    counts = []
    for _ in range(4):
        r = run_shim(["--policy", "restricted", "run", "--bundle", str(bundle),
                      session.unique("enf-blowup-")], env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        counts.append(_seccomp_rules(bundle))
    # The merged profile merged again with the same policy is the same profile.
    assert counts == counts[:1] * 4, counts


# Every syscall with 300 conditions on each side: every pair of conditions
# holds together somewhere (different arguments), so the product is 90,000
# regions per syscall, ~30 million in all, if nothing bounds it.
def _names() -> list[str]:
    return sorted(set(known_syscalls("SCMP_ARCH_X86_64").values()))


_CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from enforcer.shim.seccomp_merge import intersect

def profile(index):
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": json.loads(sys.argv[2]), "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": index, "value": v, "op": "SCMP_CMP_EQ"}
                                   for v in range(300)]}]}

merged, notes = intersect(profile(0), profile(1), "SCMP_ARCH_X86_64")
print(json.dumps({"merged": merged, "notes": notes}))
"""


def test_a_profile_made_to_multiply_is_bounded_and_never_weaker() -> None:
    names = _names()
    r = subprocess.run([sys.executable, "-c", _CHILD, str(MEMORY_LIMIT), json.dumps(names)],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (30, 30)))
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    merged, notes = out["merged"], out["notes"]
    # Bounded: too many combinations, so each syscall gets the strictest
    # action of its cells -- ERRNO, the default: nothing is allowed, which is
    # never weaker than the two filters stacked (and is reported).
    assert merged["defaultAction"] == "SCMP_ACT_ERRNO"
    assert not [e for e in merged["syscalls"] if e["action"] == "SCMP_ACT_ALLOW"], \
        merged["syscalls"][:3]
    for name in names:
        assert any(name in n and "combinations" in n for n in notes), (name, notes[:3])


# One profile's own rules, checked pairwise for overlap (two actions, 64
# conditions each, none overlapping: 4096 pairs per syscall, all checked) on
# thousands of syscall names (runc ignores names it does not know; the
# shim cannot): ~20 million checks if only each syscall is bounded, not
# the whole profile.
_OVERLAP_CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from enforcer.shim.seccomp_merge import intersect

names = [f"made_up_{i}" for i in range(5000)]
def entry(action, first, errno=None):
    e = {"names": names, "action": action,
         "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}
                  for v in range(first, first + 64)]}
    if errno:
        e["errnoRet"] = errno
    return e

config = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
          "syscalls": [entry("SCMP_ACT_ERRNO", 0, 1), entry("SCMP_ACT_TRAP", 64)]}
policy = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]}
merged, notes = intersect(config, policy, "SCMP_ARCH_X86_64")
print(json.dumps({"merged": merged, "notes": notes}))
"""


def test_a_profile_with_thousands_of_names_is_bounded_and_never_weaker() -> None:
    r = subprocess.run([sys.executable, "-c", _OVERLAP_CHILD, str(MEMORY_LIMIT)],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (30, 30)))
    assert r.returncode == 0, r.stderr[-2000:]
    merged = json.loads(r.stdout)["merged"]
    # Every name keeps its rules: TRAP for 64..127, and for 0..63 ERRNO or,
    # where the check was not afforded, the stricter TRAP; never ALLOW.
    actions: dict[str, set[str]] = {}
    for e in merged["syscalls"]:
        for name in e["names"]:
            actions.setdefault(name, set()).add(e["action"])
    assert len(actions) == 5000
    assert all("SCMP_ACT_TRAP" in a and a <= {"SCMP_ACT_TRAP", "SCMP_ACT_ERRNO"}
               for a in actions.values()), \
        sorted({frozenset(a) for a in actions.values()}, key=len)[:3]


@pytest.mark.root
@pytest.mark.usefixtures("shim_front_end")
def test_a_config_too_large_to_parse_is_refused(tmp_path: Path) -> None:
    # The same hole one step earlier: config.json is parsed whole (~10x
    # its size in memory). 64 MiB of environment, valid JSON otherwise.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = json.loads(Path(FIXTURE_CONFIG).read_text())
    config["process"]["env"] = [f"PAD{i}={'x' * 1000}" for i in range(64 << 10)]
    (bundle / "config.json").write_text(json.dumps(config))
    (tmp_path / "plans").mkdir()
    (tmp_path / "shim.json").write_text(json.dumps({"runc": TRUE,
                                                    "plans_dir": str(tmp_path / "plans")}))
    env = {"ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
           "ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
           "ENFORCER_CACHE_DIR": str(tmp_path / "plan-cache")}
    r = run_shim(["--policy", "restricted", "run", "--bundle", str(bundle),
                  session.unique("enf-blowup-")], env=env, timeout=120)
    assert r.returncode != 0
    assert "config.json: larger than 16 MiB" in r.stderr, r.stderr[-2000:]
