"""Registry records written by the shim read back through enforcer.registry."""

from __future__ import annotations

from enforcer import registry
from enforcer.shim.patch import patch_from_plan
from enforcer.shim.record import (
    cgroups_from_config,
    make_record,
    remove_record,
    write_record,
)
from enforcer.plan import CgroupPlan
from tests.shim_helpers import fixture_config, make_plan


def test_record_round_trips_through_the_registry(tmp_path) -> None:
    config = fixture_config()
    patch = patch_from_plan(make_plan(cgroup=CgroupPlan(memory_max=1000, pids_max=7)))
    cgroups = cgroups_from_config(config, "b7f2", systemd=False)
    assert cgroups and all(p == "/docker/" + config["linux"]["cgroupsPath"].split("/")[-1]
                           for p in cgroups.values())
    record = make_record("b7f2", patch, cgroups, "/bundle", pid=42, audit_session=7)
    path = write_record(str(tmp_path), record)
    assert registry.list_record_paths(str(tmp_path)) == [path]
    back = registry.read_record(path)
    assert back == registry.WorkloadRecord(
        id="b7f2", kind="container", policy="handmade", policy_hash="ab" * 32, mode="enforce",
        cgroups=cgroups, container_id="b7f2", bundle="/bundle", pid=42,
        started=record["started"], limits={"memory_max": 1000, "pids_max": 7}, audit_session=7)
    # byte for byte what the registry itself would write
    assert open(path).read() == back.to_json()
    remove_record(str(tmp_path), "b7f2")
    assert registry.list_record_paths(str(tmp_path)) == []


def test_passthrough_record(tmp_path) -> None:
    record = make_record("c1", None, {}, "/b")
    back = registry.read_record(write_record(str(tmp_path), record))
    assert (back.policy, back.mode, back.policy_hash) == ("_none", "passthrough", "")


def test_cgroups_path_forms() -> None:
    own = cgroups_from_config({"linux": {"cgroupsPath": "sub/x"}}, "id", systemd=False)
    for hierarchy, path in own.items():
        assert path.endswith("/sub/x") or path == "/sub/x"
    sd = cgroups_from_config({"linux": {"cgroupsPath": "system-foo.slice:docker:abc"}}, "abc",
                             systemd=True)
    assert set(sd.values()) == {"/system.slice/system-foo.slice/docker-abc.scope"}
