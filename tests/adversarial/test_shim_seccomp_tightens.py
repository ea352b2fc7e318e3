"""Hole 3 of the trust-boundary issue: the policy must only tighten seccomp.

The shim used to replace the container's seccomp profile with the
policy's. Two attacks follow from that:

* the runtime's own, stricter profile (`docker run --security-opt
  seccomp=stricter.json`, a pod's Localhost profile) is silently lost: a
  syscall the operator blocked runs under the shim;
* whoever picks the policy (an annotation, a Plan in plans_dir) can turn
  RuntimeDefault into allow-all.

The filter handed to runc must be the intersection: a call is allowed only
if both profiles allow it, and a denied call gets the stricter of the two
actions, as the kernel decides for two stacked filters. Proved here three
ways: decision by decision through libseccomp and the BPF simulator
(Docker's default profile x every shipped policy, 0 differences), and with
the real runc on real containers.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest

from enforcer.plan import SeccompFilter, SeccompPlan
from enforcer.shim.merge import merge_patch
from enforcer.shim.patch import patch_from_plan
from tests import session
from tests.e2e.rootfs import build_busybox_rootfs, runc_spec_bundle
from tests.emit_helpers import AUDIT_ARCH, known_syscalls, run_bpf
from tests.paths import DOCKER_DEFAULT_SECCOMP, DOCKER_OCI_CONFIG, REPO
from tests.seccomp_merge_helpers import (
    compare_intersection,
    compile_oci,
    docker_profile_as_oci,
)
from tests.shim_helpers import ALLOW_BPF, RUNC, force_delete, make_plan, run_shim, write_plan

DOCKER_CAPS = {"CAP_" + c for c in (
    "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP "
    "NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE").split()}
SHIPPED = sorted(p.stem for p in (REPO / "policies").glob("*.yaml"))
ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]

# A profile stricter than every shipped policy in one visible way: mkdir fails.
NO_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ARCHES,
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1}]}
ALLOW_ALL = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ARCHES}


def _docker_default_oci() -> dict:
    return docker_profile_as_oci(json.loads(DOCKER_DEFAULT_SECCOMP.read_text()), DOCKER_CAPS)


def _config_with(seccomp: dict | None) -> dict:
    config = json.loads(DOCKER_OCI_CONFIG.read_text())
    if seccomp is None:
        config["linux"].pop("seccomp", None)
    else:
        config["linux"]["seccomp"] = copy.deepcopy(seccomp)
    return config


def _seccomp_patch(plan: object) -> dict:
    """The shim's patch for `plan`, without its Landlock part: these tests
    decide seccomp only, and the Landlock helper's place in a bundle is
    tests/adversarial/test_landlock_attacks.py's."""
    patch = patch_from_plan(plan)
    patch["landlock"] = None
    return patch


@pytest.fixture(scope="module")
def shipped_plans(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from enforcer.compile.cache import load_or_compile

    cache = str(tmp_path_factory.mktemp("plan-cache"))
    return {name: load_or_compile(name, cache_dir=cache) for name in SHIPPED}


# -- decision by decision: libseccomp + the BPF simulator -----------------------------


@pytest.mark.slow
@pytest.mark.parametrize("policy", SHIPPED)
def test_docker_default_and_shipped_policy_merge_to_the_stricter_decision(
        policy: str, shipped_plans: dict) -> None:
    config_profile = _docker_default_oci()
    plan = shipped_plans[policy]
    merged = merge_patch(_config_with(config_profile), _seccomp_patch(plan), "/bundle", {})
    compared, differences, seen = compare_intersection(
        config_profile, plan.seccomp.oci, merged["linux"]["seccomp"])
    print(f"\n{policy}: {compared} decisions compared, {len(differences)} differ; merged "
          "decisions: " + ", ".join(f"{d:#x}" for d in sorted(seen)))
    assert compared > 9_000
    # allow, EPERM and ENOSYS (clone3) must all have been exercised
    assert {0x7FFF0000, 0x00050001, 0x00050026} <= seen
    assert not differences, f"{len(differences)} differ:\n" + "\n".join(differences[:30])


@pytest.mark.slow
def test_the_profile_docker_20_10_wrote_merges_to_the_stricter_decision(
        shipped_plans: dict) -> None:
    """The same with the profile a real dockerd handed to runc (older list)."""
    config = json.loads(DOCKER_OCI_CONFIG.read_text())
    for policy in ("default", "restricted"):
        plan = shipped_plans[policy]
        merged = merge_patch(copy.deepcopy(config), _seccomp_patch(plan), "/bundle", {})
        compared, differences, _ = compare_intersection(
            config["linux"]["seccomp"], plan.seccomp.oci, merged["linux"]["seccomp"])
        assert compared > 9_000
        assert not differences, f"{policy}:\n" + "\n".join(differences[:30])


def _plan_with_oci(oci: dict, **kw):  # type: ignore[no-untyped-def]
    return make_plan(seccomp=SeccompPlan(native_arch="x86_64", architectures=("x86_64",),
                                         default_action="allow",
                                         filter=SeccompFilter(bpf_b64=ALLOW_BPF, flags=()),
                                         syscall_names={}, oci=copy.deepcopy(oci)), **kw)


def test_a_plan_cannot_turn_runtime_default_into_allow_all() -> None:
    config_profile = _docker_default_oci()
    merged = merge_patch(_config_with(config_profile), patch_from_plan(_plan_with_oci(ALLOW_ALL)),
                         "/bundle", {})["linux"]["seccomp"]
    filt = compile_oci(merged)
    table = {name: nr for nr, name in known_syscalls("x86_64").items()}
    x86_64 = AUDIT_ARCH["x86_64"]
    # What Docker's default denies stays denied...
    for name in ("mount", "unshare", "kexec_load", "bpf", "keyctl", "reboot"):
        assert run_bpf(filt, table[name], x86_64) == 0x00050001, name
    # ... and the allow-all Plan does not lift the architecture restriction either.
    assert run_bpf(filt, table["read"], 0xC00000B7) & 0xFFFF0000 in (0, 0x80000000)
    compared, differences, _ = compare_intersection(config_profile, ALLOW_ALL, merged)
    assert compared > 9_000 and not differences, "\n".join(differences[:30])


def test_the_runtimes_stricter_profile_survives_every_shipped_policy(shipped_plans) -> None:
    for policy, plan in shipped_plans.items():
        merged = merge_patch(_config_with(NO_MKDIR), _seccomp_patch(plan), "/bundle",
                             {})["linux"]["seccomp"]
        compared, differences, _ = compare_intersection(NO_MKDIR, plan.seccomp.oci, merged)
        assert compared > 5_000 and not differences, f"{policy}:\n" + "\n".join(differences[:30])


# -- with the real runc ----------------------------------------------------------------


@pytest.fixture(scope="module")
def rootfs_src(tmp_path_factory: pytest.TempPathFactory) -> str:
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root and runc")
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("seccomp-rootfs") / "rootfs"))


@pytest.fixture
def container_id():
    cid = session.unique("enf-seccomp-")
    yield cid
    force_delete(cid)


def _env(tmp_path: Path, plans: dict | None = None) -> dict[str, str]:
    plans_dir = tmp_path / "plans"
    plans_dir.mkdir(exist_ok=True)
    for name, plan in (plans or {}).items():
        write_plan(str(plans_dir / f"{name}.json"), plan)
    (tmp_path / "shim.json").write_text(json.dumps({"runc": RUNC, "plans_dir": str(plans_dir)}))
    return {"ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
            "ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
            "ENFORCER_CACHE_DIR": str(tmp_path / "plan-cache")}


MKDIR = "mkdir /tmp/made 2>/dev/null && echo MADE || echo mkdir-denied"


def _strict_bundle(tmp_path: Path, rootfs_src: str, script: str) -> str:
    """A bundle whose own profile denies mkdir (everything else allowed)."""
    def strict(config: dict) -> dict:
        config["linux"]["seccomp"] = copy.deepcopy(NO_MKDIR)
        config["root"]["readonly"] = False  # so only seccomp can stop mkdir
        return config

    return runc_spec_bundle(str(tmp_path / "b"), rootfs_src, ["/bin/sh", "-c", script], strict)


@pytest.mark.runc
@pytest.mark.root
@pytest.mark.usefixtures("shim_front_end")
def test_a_container_keeps_its_stricter_profile_under_the_shim(tmp_path, rootfs_src,
                                                             container_id) -> None:
    # The policy's own denials hold too: `default` refuses unshare (@namespaces)
    # even where the runtime's profile allows everything but mkdir.
    script = f"{MKDIR}; unshare -U true 2>/dev/null && echo UNSHARED || echo unshare-denied"
    bundle = _strict_bundle(tmp_path, rootfs_src, script)
    r = run_shim(["--policy", "default", "run", "--bundle", bundle, container_id],
                 env=_env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["mkdir-denied", "unshare-denied"], r.stdout + r.stderr


@pytest.mark.runc
@pytest.mark.root
@pytest.mark.usefixtures("shim_front_end")
def test_an_allow_all_plan_does_not_lift_the_containers_profile(tmp_path, rootfs_src,
                                                               container_id) -> None:
    bundle = _strict_bundle(tmp_path, rootfs_src, MKDIR)
    env = _env(tmp_path, {"allow-all": _plan_with_oci(ALLOW_ALL, policy_name="allow-all")})
    r = run_shim(["--policy", "allow-all", "run", "--bundle", bundle, container_id], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["mkdir-denied"], r.stdout + r.stderr
