"""One number per limit: what `enforcer export --format oci` writes and what
`enforcer run` writes to the cgroup come from the same typed Plan value.

Walks every shipped policy and a policy with an io weight and two device
throttles: the export's `linux.resources` against the files the cgroup v1
and v2 drivers render from the Plan `enforcer compile` writes (the Plan
`enforcer run --plan` applies). Then a two-device io limit applied by
`enforcer run` on a real cgroup v1 blkio hierarchy: both devices must be
in the cgroup's file (one device per write(2): a single write keeps only
the first device on v1 and fails on v2).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from typing import Any, Iterator

import pytest

from enforcer.apply.cgroups import v1_files, v2_files
from enforcer.plan import CgroupPlan, load_plan_file
from run_helpers import PYTHON, REPO, enforcer_run, require_root, scratch_dir
from tests.session import CGROUP_PARENT, remove_tree

SHIPPED = sorted(glob.glob(os.path.join(REPO, "policies", "*.yaml")))


def block_devices() -> list[str]:
    """MAJOR:MINOR of this host's whole disks (loop devices last)."""
    found = []
    for dev_file in sorted(glob.glob("/sys/block/*/dev")):
        name = dev_file.split("/")[3]
        with open(dev_file) as f:
            found.append((name.startswith("loop"), f.read().strip()))
    return [dev for _, dev in sorted(found)]


def io_policy(devices: list[str]) -> str:
    return f"""\
name: io-two-devices
extends: default
resources:
  memory: {{max: 256Mi, swap: 32Mi}}
  pids: {{max: 64}}
  cpu: {{quota: 50ms, period: 100ms}}
  io:
    weight: 100
    devices:
      - {{device: "{devices[0]}", read_bps: 1Mi, write_iops: 100}}
      - {{device: "{devices[1]}", read_bps: 2Mi, write_bps: 4Mi, read_iops: 300}}
"""


@pytest.fixture
def work() -> Iterator[str]:
    d = scratch_dir()
    yield d
    remove_tree(d)


def cli(*args: str, env: dict[str, str]) -> str:
    r = subprocess.run([PYTHON, "-m", "enforcer", *args], capture_output=True, text=True,
                       env={**os.environ, **env}, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def exported_and_applied(policy: str, work: str) -> tuple[dict[str, Any], CgroupPlan]:
    env = {"ENFORCER_CACHE_DIR": os.path.join(work, "cache")}
    resources = json.loads(cli("export", "--format", "oci", policy, env=env))["linux"].get(
        "resources", {})
    plan_file = os.path.join(work, "plan.json")
    cli("compile", policy, "-o", plan_file, env=env)
    return resources, load_plan_file(plan_file).cgroup


def assert_same_numbers(oci: dict[str, Any], cg: CgroupPlan) -> int:
    """Every limit of the OCI export equals the v1 and the v2 file value the
    drivers write for it; returns how many limits were compared."""
    v1, v2 = v1_files(cg), v2_files(cg)
    compared = 0
    memory = oci.get("memory", {})
    assert memory.get("limit") == cg.memory_max
    if cg.memory_max is not None:
        assert v2["memory.max"] == v1["memory"]["memory.limit_in_bytes"] == (str(memory["limit"]),)
        compared += 1
    if "swap" in memory:  # OCI and v1 count memory+swap, v2 swap alone
        assert v1["memory"]["memory.memsw.limit_in_bytes"] == (str(memory["swap"]),)
        assert int(v2["memory.swap.max"][0]) == memory["swap"] - memory["limit"]
        compared += 1
    pids = oci.get("pids", {}).get("limit")
    assert pids == cg.pids_max
    if pids is not None:
        assert v2["pids.max"] == v1["pids"]["pids.max"] == (str(pids),)
        compared += 1
    cpu = oci.get("cpu")
    assert (cpu is None) == (cg.cpu_quota_us is None)
    if cpu is not None:
        assert v2["cpu.max"] == (f"{cpu['quota']} {cpu['period']}",)
        assert v1["cpu"] == {"cpu.cfs_period_us": (str(cpu["period"]),),
                             "cpu.cfs_quota_us": (str(cpu["quota"]),)}
        compared += 1
    block_io = oci.get("blockIO", {})
    if cg.io_weight is not None:
        # OCI's weight is on the v1 scale: the same number as blkio.weight;
        # io.weight keeps the Plan's (v2) number.
        assert v1["blkio"]["blkio.weight"] == (str(block_io["weight"]),)
        assert v2["io.weight"] == (f"default {cg.io_weight}",)
        compared += 1
    else:
        assert "weight" not in block_io
    v1_throttle = {"throttleReadBpsDevice": "blkio.throttle.read_bps_device",
                   "throttleWriteBpsDevice": "blkio.throttle.write_bps_device",
                   "throttleReadIOPSDevice": "blkio.throttle.read_iops_device",
                   "throttleWriteIOPSDevice": "blkio.throttle.write_iops_device"}
    v2_key = {"throttleReadBpsDevice": "rbps", "throttleWriteBpsDevice": "wbps",
              "throttleReadIOPSDevice": "riops", "throttleWriteIOPSDevice": "wiops"}
    io_max = {line.split()[0]: dict(kv.split("=") for kv in line.split()[1:])
              for line in v2.get("io.max", ())}
    rendered_v1 = v1.get("blkio", {})
    for oci_name, entries in block_io.items():
        if oci_name == "weight":
            continue
        lines = tuple(f"{e['major']}:{e['minor']} {e['rate']}" for e in entries)
        assert rendered_v1[v1_throttle[oci_name]] == lines
        for e in entries:
            assert io_max[f"{e['major']}:{e['minor']}"][v2_key[oci_name]] == str(e["rate"])
            compared += 1
    throttles_in_plan = sum(getattr(d, k) is not None for d in cg.io_devices
                            for k in ("read_bps", "write_bps", "read_iops", "write_iops"))
    assert compared - sum(x is not None for x in (cg.memory_max, cg.pids_max, cg.cpu_quota_us,
                                                  cg.io_weight)) - ("swap" in memory) \
        == throttles_in_plan
    return compared


@pytest.mark.parametrize("policy", SHIPPED, ids=[os.path.basename(p) for p in SHIPPED])
def test_shipped_policy_exports_the_numbers_run_applies(policy: str, work: str) -> None:
    oci, cg = exported_and_applied(policy, work)
    assert_same_numbers(oci, cg)


def test_io_weight_and_two_device_throttles_export_the_numbers_run_applies(work: str) -> None:
    devices = block_devices()[:2]
    assert len(devices) == 2, "needs two block devices"
    path = os.path.join(work, "io.yaml")
    with open(path, "w") as f:
        f.write(io_policy(devices))
    oci, cg = exported_and_applied(path, work)
    assert len(cg.io_devices) == 2
    # memory, swap, pids, cpu, weight, and 2 + 3 device rates
    assert assert_same_numbers(oci, cg) == 10
    assert oci["blockIO"]["weight"] == 500  # io.weight 100 = the v1 default, 500


@pytest.mark.root
@pytest.mark.skipif(not os.path.exists("/sys/fs/cgroup/blkio/cgroup.procs"),
                    reason="needs the cgroup v1 blkio hierarchy")
def test_two_device_io_limit_applied_by_enforcer_run(work: str) -> None:
    require_root()
    devices = block_devices()[:2]
    assert len(devices) == 2, "needs two block devices"
    policy = os.path.join(work, "io.yaml")
    with open(policy, "w") as f:
        # No io weight: cgroup v1 has no blkio.weight without BFQ.
        f.write(f"""\
name: io-two-devices
extends: default
resources:
  io:
    devices:
      - {{device: "{devices[0]}", read_bps: 1Mi}}
      - {{device: "{devices[1]}", read_bps: 2Mi}}
""")
    name = "t-io-two-devices"
    file = f"/sys/fs/cgroup/blkio{CGROUP_PARENT}/{name}/blkio.throttle.read_bps_device"
    r = enforcer_run(["--policy", policy, "--name", name, "--", "cat", file],
                     env={"ENFORCER_CACHE_DIR": os.path.join(work, "cache"),
                          "ENFORCER_RUNTIME_DIR": os.path.join(work, "runtime")})
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split("\n")) == sorted(["", f"{devices[0]} {1 << 20}",
                                                   f"{devices[1]} {2 << 20}"]), r.stdout
    assert not os.path.exists(os.path.dirname(file))
