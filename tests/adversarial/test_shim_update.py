"""Hole 13 of the trust-boundary issue, and `runc update -r -` (issue 14).

`runc update` on a container the shim started may not raise a limit the
policy sets. The checks used to look at `memory`, `pids` and `cpu` only,
so the cgroup v2 escape hatch `resources.unified` ({"memory.max": "max"})
lifted the policy's memory limit; and containerd, Docker and Kubernetes'
in-place resize pass the resources on stdin (`update -r -`), which the
shim refused outright, so every `docker update` failed.

The attacker here is whoever can ask the runtime for an update (the API
of the engine, a pod spec resize): the JSON is theirs, including its key
spelling (Go's decoder matches keys case-insensitively; Python's does
not) and duplicate keys. Every test runs through both front ends, with a
recording runc standing in for the real one: what must not happen is
runc being started with the update.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from enforcer.plan import CgroupPlan, IoDevicePlan
from tests.shim_helpers import FIXTURE_CONFIG, make_plan, run_shim, write_plan

pytestmark = pytest.mark.usefixtures("shim_front_end")

MEMORY = 256 << 20


@pytest.fixture
def env(tmp_path):
    """A container created under a policy with memory, swap, pids, cpu and io
    limits, and a runc that records its arguments and its stdin."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plan(str(plans / "limited.json"), make_plan(
        policy_name="limited",
        cgroup=CgroupPlan(memory_max=MEMORY, memory_swap_max=0, pids_max=64,
                          cpu_quota_us=50000, cpu_period_us=100000, io_weight=100,
                          io_devices=(IoDevicePlan("8:0", read_bps=1048576),))))
    marker = tmp_path / "runc-args"
    runc = tmp_path / "fake-runc"
    runc.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {marker}\n"
                    f"case \"$*\" in *update*) cat > {marker}.stdin ;; esac\nexit 0\n")
    os.chmod(runc, 0o755)
    (tmp_path / "shim.json").write_text(json.dumps({"plans_dir": str(plans), "runc": str(runc)}))
    e = {"ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
         "ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
         "ENFORCER_CACHE_DIR": str(tmp_path / "cache")}
    r = run_shim(["--policy", "limited", "create", "--bundle", str(bundle),
                  "--pid-file", str(tmp_path / "pid"), "c1"], env=e)
    assert r.returncode == 0, r.stderr
    marker.unlink()
    return {"env": e, "marker": marker, "tmp": tmp_path}


def _update(env, resources: object | str, *extra: str,  # type: ignore[no-untyped-def]
            via_file: bool = False):
    """`update -r -` with the resources on stdin, or `-r FILE`."""
    text = resources if isinstance(resources, str) else json.dumps(resources)
    if via_file:
        path = env["tmp"] / "resources.json"
        path.write_text(text)
        return run_shim(["update", *extra, "-r", str(path), "c1"], env=env["env"])
    return run_shim(["update", *extra, "-r", "-", "c1"], env=env["env"], input=text)


def _refused(env, r, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("enforcer-runc: "), r.stderr
    for w in words:
        assert w in lines[-1], (w, r.stderr)
    assert not env["marker"].exists(), "runc was started with the update"


@pytest.mark.parametrize("unified, why", [
    ({"memory.max": "max"}, "memory.max"),
    ({"memory.max": str(1 << 30)}, "memory.max"),
    ({"memory.swap.max": "max"}, "memory.swap.max"),
    ({"memory.swap.max": str(1 << 20)}, "memory.swap.max"),
    ({"pids.max": "max"}, "pids.max"),
    ({"pids.max": "100000"}, "pids.max"),
    ({"cpu.max": "max 100000"}, "cpu.max"),
    ({"cpu.max": "100000 100000"}, "cpu.max"),
    ({"io.max": "8:0 rbps=max"}, "io.max"),
    ({"io.weight": "default 10000"}, "io.weight"),
    ({"cgroup.procs": "1"}, "cgroup.procs"),
    ({"memory.max": "max\n"}, "memory.max"),
])
@pytest.mark.parametrize("via_file", [True, False], ids=["file", "stdin"])
def test_unified_keys_cannot_raise_a_policy_limit(env, unified, why, via_file) -> None:
    _refused(env, _update(env, {"unified": unified}, via_file=via_file), why)


def test_unified_keys_that_stay_within_the_policy_pass(env) -> None:
    res = {"unified": {"memory.max": str(MEMORY // 2), "pids.max": "32",
                       "cpu.max": "25000 100000", "cpu.weight": "50"}}
    r = _update(env, res)
    assert r.returncode == 0, r.stderr
    assert json.loads((env["tmp"] / "runc-args.stdin").read_text()) == res


def test_update_reads_the_resources_from_stdin_and_hands_them_to_runc(env) -> None:
    res = {"memory": {"limit": MEMORY // 2, "swap": MEMORY // 2}, "pids": {"limit": 32},
           "cpu": {"quota": 20000, "period": 100000, "shares": 512}}
    r = _update(env, res)
    assert r.returncode == 0, r.stderr
    assert env["marker"].read_text().splitlines() == ["update", "-r", "-", "c1"]
    assert json.loads((env["tmp"] / "runc-args.stdin").read_text()) == res


@pytest.mark.parametrize("res, why", [
    ({"memory": {"limit": -1}}, "memory"),
    ({"memory": {"limit": 1 << 30}}, "memory"),
    ({"pids": {"limit": -1}}, "pids"),
    ({"cpu": {"quota": -1, "period": 100000}}, "cpu"),
    ({"cpu": {"quota": 0, "period": 50000}}, "cpu"),
    ({"blockIO": {"weight": 1000}}, "weight"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 0}]}}, "8:0"),
])
def test_raising_through_stdin_is_refused(env, res, why) -> None:
    _refused(env, _update(env, res), why)


@pytest.mark.parametrize("text, why", [
    # Go's encoding/json matches "Memory" to the memory field; a check that
    # reads only "memory" would not see it.
    ('{"Memory": {"limit": -1}}', "Memory"),
    ('{"memory": {"LIMIT": -1}}', "LIMIT"),
    # Python keeps the last duplicate, Go merges both objects.
    ('{"memory": {"limit": -1}, "memory": {"swap": 1}}', "memory"),
    ('{"memory": {"limit": 1e30}}', "limit"),
    ('{"memory": {"limit": 1}} {"memory": {"limit": -1}}', "JSON"),
    ('[]', "object"),
])
def test_json_the_check_and_runc_would_read_differently_is_refused(env, text, why) -> None:
    _refused(env, _update(env, text), why)


def test_oversized_stdin_is_refused(env) -> None:
    _refused(env, _update(env, " " * (2 << 20) + "{}"), "too large")


def test_lowering_memory_sets_swap_to_what_the_policy_allows(env) -> None:
    """Docker re-sends its own idea of memory+swap (twice the memory) with
    every update; the policy allows no swap, so the total handed to runc is
    the new memory limit (as at create), instead of refusing the update."""
    r = _update(env, {"memory": {"limit": MEMORY // 2, "swap": 4 * MEMORY}})
    assert r.returncode == 0, r.stderr
    sent = json.loads((env["tmp"] / "runc-args.stdin").read_text())
    assert sent["memory"] == {"limit": MEMORY // 2, "swap": MEMORY // 2}


def test_a_file_whose_swap_is_lowered_reaches_runc_on_stdin(env) -> None:
    r = _update(env, {"memory": {"limit": MEMORY // 2, "swap": -1}}, via_file=True)
    assert r.returncode == 0, r.stderr
    assert env["marker"].read_text().splitlines() == ["update", "-r", "-", "c1"]
    sent = json.loads((env["tmp"] / "runc-args.stdin").read_text())
    assert sent["memory"] == {"limit": MEMORY // 2, "swap": MEMORY // 2}


def test_a_file_within_the_policy_is_passed_on_as_it_is(env) -> None:
    r = _update(env, {"pids": {"limit": 16}}, via_file=True)
    assert r.returncode == 0, r.stderr
    assert env["marker"].read_text().splitlines()[:2] == ["update", "-r"]
    assert env["marker"].read_text().splitlines()[2].endswith("resources.json")


def test_a_quota_alone_is_checked_against_the_containers_own_period(tmp_path) -> None:
    """runc writes a quota given without a period next to the period the
    cgroup already has; the shim reads that period (v1 and v2 layouts)."""
    from enforcer.shim.update import check, current_cpu_period

    v1 = tmp_path / "cpu,cpuacct" / "ctr"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_period_us").write_text("20000\n")
    assert current_cpu_period({"cpu,cpuacct": "/ctr", "memory": "/ctr"}, str(tmp_path)) == 20000
    v2 = tmp_path / "pods" / "c"
    v2.mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 50000\n")
    assert current_cpu_period({"": "/pods/c"}, str(tmp_path)) == 50000
    assert current_cpu_period({"": "/nowhere"}, str(tmp_path)) is None
    limits = {"memory": None, "swap": None, "pids": None, "cpu_quota": 50000,
              "cpu_period": 100000, "io_weight": None, "throttle": {}}
    # 20000 of a 20000 period is a whole CPU: above the policy's half.
    assert check({"cpu": {"quota": 20000}}, limits, False, 20000).problems
    assert not check({"cpu": {"quota": 10000}}, limits, False, 20000).problems
