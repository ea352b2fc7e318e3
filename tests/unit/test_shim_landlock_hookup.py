"""The shim's Landlock hookup without runc: the patch's ruleset, the
helper's arguments for this kernel, the config and exec rewrites, and the
refusals (a helper others could replace, a filter that blocks the
helper, no tmpfs /dev, an ABI above the kernel's)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from enforcer import landlock as ll
from enforcer.plan import LandlockPlan, LandlockRule, replace
from enforcer.shim import landlock as shim_ll
from enforcer.shim.errors import ShimError
from enforcer.shim.merge import merge_patch, merge_process
from enforcer.shim.patch import patch_from_plan
from tests.shim_helpers import fixture_config, make_plan

LANDLOCK = LandlockPlan(min_abi=0, handled_net=ll.NET_BIND_TCP, bind=(8080,), connect=(),
                        scopes=ll.SCOPE_SIGNAL,
                        rules=(LandlockRule("/srv/data", ll.GRANT_WRITE),
                               LandlockRule("/opt/maybe", ll.GRANT_READ, optional=True)))


def kernel_abi() -> int:
    from enforcer.apply.landlock import kernel_abi as abi

    found = abi()
    if found < 6:
        pytest.skip("needs Landlock ABI 6")
    return found


def patch_with_landlock(landlock: LandlockPlan = LANDLOCK) -> dict[str, Any]:
    return patch_from_plan(make_plan(landlock=landlock))


@pytest.fixture
def helper(tmp_path: Path) -> str:
    d = tmp_path / "bin"
    d.mkdir(mode=0o755)
    path = d / "enforcer-landlock"
    shutil.copy("/usr/bin/true", path)
    os.chmod(path, 0o755)
    return str(path)


def test_patch_carries_the_ruleset_as_plain_data() -> None:
    patch = patch_with_landlock()
    assert patch["landlock"] == {
        "min_abi": 0, "handled_net": 1, "scopes": 2, "bind": [8080], "connect": [],
        "rules": [["/srv/data", ll.GRANT_WRITE, False], ["/opt/maybe", ll.GRANT_READ, True]]}
    assert patch_from_plan(make_plan())["landlock"] is None


def test_helper_arguments_fit_the_kernel() -> None:
    abi = kernel_abi()
    args = shim_ll.helper_arguments(patch_with_landlock())
    eff = ll.effective(LANDLOCK, abi)
    assert args == ["-f", f"{eff.handled_fs:x}", "-n", "1", "-s", "2",
                    "-l", f"{eff.restrict_flags:x}",
                    "-p", f"{ll.GRANT_WRITE:x}:/srv/data", "-o", f"{ll.GRANT_READ:x}:/opt/maybe",
                    "-b", "8080"]


def test_config_process_starts_through_the_read_only_helper(helper: str) -> None:
    kernel_abi()
    config = fixture_config()
    args = list(config["process"]["args"])
    merge_patch(config, patch_with_landlock(), "/nonexistent-bundle", inherited={},
                landlock_helper=helper)
    process_args = config["process"]["args"]
    assert process_args[0] == shim_ll.HELPER_PATH
    assert process_args[process_args.index("--") + 1:] == args
    assert config["mounts"][-1] == {"destination": shim_ll.HELPER_PATH, "type": "bind",
                                    "source": helper, "options": ["bind", "ro", "nosuid", "nodev"]}
    # runc exec --process: the same wrapping, no mount (the container has it)
    process = {"args": ["/bin/sh"], "user": {"uid": 0, "gid": 0}}
    merge_process(process, patch_with_landlock())
    assert process["args"][0] == shim_ll.HELPER_PATH and process["args"][-2:] == ["--", "/bin/sh"]


def test_exec_command_line_gets_the_helper_before_the_command() -> None:
    kernel_abi()
    patch = patch_with_landlock()
    runc_args = ["--root", "/run/runc", "exec", "-t", "ID", "--", "sh", "-c", "id"]
    out = shim_ll.exec_arguments(runc_args, ["ID", "sh", "-c", "id"], patch)
    assert out[:6] == ["--root", "/run/runc", "exec", "-t", "ID", "--"]
    assert out[6] == shim_ll.HELPER_PATH and out[-4:] == ["--", "sh", "-c", "id"]
    assert shim_ll.exec_arguments(runc_args, ["ID", "sh"], patch_from_plan(make_plan())) == \
        runc_args


def test_a_helper_others_could_replace_is_refused(helper: str) -> None:
    shim_ll.check_helper(helper)
    os.chmod(helper, 0o775)
    with pytest.raises(ShimError, match="its file must be owned by root"):
        shim_ll.check_helper(helper)
    os.chmod(helper, 0o755)
    os.chmod(os.path.dirname(helper), 0o757)
    with pytest.raises(ShimError, match="its directory .*/bin must be owned by root"):
        shim_ll.check_helper(helper)
    os.chmod(os.path.dirname(helper), 0o755)
    # an ancestor someone else can write: they could rename the directory away
    parent = os.path.dirname(os.path.dirname(helper))
    mode = os.stat(parent).st_mode
    os.chmod(parent, 0o777)
    try:
        with pytest.raises(ShimError, match=f"its directory {parent} must be owned by root"):
            shim_ll.check_helper(helper)
    finally:
        os.chmod(parent, mode)
    with pytest.raises(ShimError, match="No such file"):
        shim_ll.check_helper(helper + "-missing")


def test_no_tmpfs_dev_and_no_helper_are_refused(helper: str) -> None:
    kernel_abi()
    config = fixture_config()
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]
    with pytest.raises(ShimError, match="must be a tmpfs the runtime creates"):
        merge_patch(config, patch_with_landlock(), "/b", inherited={}, landlock_helper=helper)
    with pytest.raises(ShimError, match="does not know where its Landlock helper is"):
        merge_patch(fixture_config(), patch_with_landlock(), "/b", inherited={})


def test_a_filter_that_blocks_the_helper_is_refused_at_patch_time() -> None:
    from tests.run_helpers import seccomp_plan

    def plan_with(seccomp: Any) -> Any:
        # The filter as the BPF the kernel runs; its OCI form is what runc gets.
        return make_plan(seccomp=replace(seccomp, oci={"defaultAction": "SCMP_ACT_ALLOW"}),
                         landlock=LANDLOCK)

    with pytest.raises(ShimError, match="blocks landlock_create_ruleset"):
        patch_from_plan(plan_with(seccomp_plan(errno_eperm=["landlock_create_ruleset"])))
    assert patch_from_plan(plan_with(seccomp_plan()))["landlock"] is not None


def test_abi_above_the_kernel_is_refused() -> None:
    abi = kernel_abi()
    with pytest.raises(ShimError) as info:
        shim_ll.helper_arguments(patch_with_landlock(replace(LANDLOCK, min_abi=abi + 1)))
    assert str(info.value) == (f"policy handmade: landlock: the policy requires Landlock ABI "
                               f"{abi + 1} (landlock.abi); this kernel has ABI {abi}")
