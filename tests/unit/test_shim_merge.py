"""One test per merge rule (docs/shim.md), on the config a real dockerd wrote."""

from __future__ import annotations

import copy
import os

import pytest

from enforcer.plan import CapabilityPlan, CgroupPlan, IoDevicePlan, MountOp, RlimitPlan, UserPlan
from enforcer.kernel.capabilities import CAPABILITIES as CAP_NUMBERS
from enforcer.shim.errors import ShimError
from enforcer.shim.merge import UNLIMITED, merge_patch
from enforcer.shim.patch import patch_from_plan
from tests.shim_helpers import OCI_NO_MKDIR, cap_mask, fixture_config, make_plan

NO_INHERIT: dict[str, tuple[int, int]] = {}


def merged(plan_overrides: dict, config: dict | None = None, bundle: str = "/bundle",
           inherited: dict | None = None) -> dict:
    config = fixture_config() if config is None else config
    patch = patch_from_plan(make_plan(**plan_overrides))
    return merge_patch(config, patch, bundle, inherited if inherited is not None else NO_INHERIT)


def _allowed(profile: dict, name: str) -> bool:
    """Whether `name` is allowed unconditionally by an OCI profile."""
    for entry in profile["syscalls"]:
        if name in entry["names"] and not entry.get("args"):
            return entry["action"] == "SCMP_ACT_ALLOW"
    return profile["defaultAction"] == "SCMP_ACT_ALLOW"


def test_seccomp_is_the_intersection_of_the_containers_and_the_policys() -> None:
    before = fixture_config()["linux"]["seccomp"]
    assert before["defaultAction"] == "SCMP_ACT_ERRNO"
    after = merged({})["linux"]["seccomp"]
    # Docker's profile denies by default: so does the merge, though the
    # policy's default is allow; the policy's denial of mkdir holds too.
    assert after["defaultAction"] == "SCMP_ACT_ERRNO"
    assert _allowed(before, "mkdir") and not _allowed(after, "mkdir")
    assert not _allowed(after, "mount") and _allowed(after, "read")


def test_without_a_container_profile_the_policys_is_used() -> None:
    config = fixture_config()
    del config["linux"]["seccomp"]
    assert merged({}, config)["linux"]["seccomp"] == OCI_NO_MKDIR


def test_policy_without_syscalls_keeps_the_containers_filter() -> None:
    after = merged({"seccomp": None})
    assert after["linux"]["seccomp"] == fixture_config()["linux"]["seccomp"]


def test_capability_sets_are_intersected() -> None:
    keep = cap_mask(CAP_NUMBERS["CAP_NET_BIND_SERVICE"], CAP_NUMBERS["CAP_SYS_ADMIN"],
                    CAP_NUMBERS["CAP_CHOWN"])
    caps = CapabilityPlan(bounding=keep, effective=keep, permitted=keep, inheritable=0, ambient=0)
    after = merged({"capabilities": caps})["process"]["capabilities"]
    # CAP_SYS_ADMIN is in the policy but not in the container: not added.
    for set_name in ("bounding", "effective", "permitted"):
        assert after[set_name] == ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]
    assert "inheritable" not in after  # absent stays absent


def test_relative_capability_drop_removes_and_add_is_ignored() -> None:
    caps = CapabilityPlan(bounding=0, effective=0, permitted=0, inheritable=0, ambient=0,
                          relative=True, drop=cap_mask(CAP_NUMBERS["CAP_NET_RAW"]),
                          add=cap_mask(CAP_NUMBERS["CAP_SYS_ADMIN"]))
    after = merged({"capabilities": caps})["process"]["capabilities"]
    before = fixture_config()["process"]["capabilities"]
    for set_name in ("bounding", "effective", "permitted"):
        assert after[set_name] == [c for c in before[set_name] if c != "CAP_NET_RAW"]
        assert "CAP_SYS_ADMIN" not in after[set_name]


def test_unknown_capability_names_are_dropped() -> None:
    config = fixture_config()
    config["process"]["capabilities"]["bounding"].append("CAP_FROM_THE_FUTURE")
    caps = CapabilityPlan(bounding=(1 << 41) - 1, effective=0, permitted=0, inheritable=0,
                          ambient=0)
    after = merged({"capabilities": caps}, config)["process"]["capabilities"]
    assert "CAP_FROM_THE_FUTURE" not in after["bounding"]
    assert after["effective"] == [] and after["permitted"] == []


def test_readonly_and_masked_paths_are_added() -> None:
    mounts = (MountOp(kind="readonly", path="/etc"), MountOp(kind="mask", path="/proc/kcore"),
              MountOp(kind="hide", path="/root"), MountOp(kind="readonly", path="/proc/sys"))
    after = merged({"mounts": mounts})["linux"]
    before = fixture_config()["linux"]
    assert after["readonlyPaths"] == before["readonlyPaths"] + ["/etc"]  # /proc/sys not twice
    assert after["maskedPaths"] == before["maskedPaths"] + ["/root"]  # /proc/kcore not twice


def test_root_is_made_readonly_when_asked_and_never_made_writable() -> None:
    after = merged({"mounts": (MountOp(kind="readonly", path="/"),)})
    assert after["root"]["readonly"] is True
    config = fixture_config()
    config["root"]["readonly"] = True
    assert merged({}, config)["root"]["readonly"] is True


def test_tmpfs_is_added_and_replaces_a_mount_at_the_same_destination() -> None:
    mounts = (MountOp(kind="tmpfs", path="/tmp", size=64 << 20, mode=0o1777,
                      options=("nosuid", "nodev", "noexec")),
              MountOp(kind="tmpfs", path="/dev/shm/", size=1 << 20, mode=0o1777,
                      options=("nosuid",)))
    before = fixture_config()["mounts"]
    after = merged({"mounts": mounts})["mounts"]
    assert len(after) == len(before) + 1
    shm_index = next(i for i, m in enumerate(before) if m["destination"] == "/dev/shm")
    assert after[shm_index] == {"destination": "/dev/shm/", "type": "tmpfs", "source": "tmpfs",
                                "options": ["nosuid", "mode=1777", "size=1048576"]}
    assert after[-1] == {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid", "nodev", "noexec", "mode=1777",
                                     f"size={64 << 20}"]}


class RecordingStager:
    """Stands in for staging.Stager: records what it was asked to stage."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def stage(self, rootfs: str, path: str) -> str:
        self.asked.append((rootfs, path))
        return f"/run/enforcer/mounts/c.1.x/{len(self.asked) - 1}"


def test_writable_path_under_readonly_root_is_bound_from_a_staging_mount(tmp_path) -> None:
    bundle = str(tmp_path)
    config = fixture_config()
    config["root"]["path"] = "rootfs"
    mounts = (MountOp(kind="readonly", path="/"), MountOp(kind="writable", path="/var/lib/app"),
              MountOp(kind="writable", path="/dev/shm"))  # already a mount: left alone
    stager = RecordingStager()
    after = merge_patch(config, patch_from_plan(make_plan(mounts=mounts)), bundle, NO_INHERIT,
                        stager=stager)
    added = [m for m in after["mounts"] if m["destination"] == "/var/lib/app"]
    # The source is the staging mount, never a path through the image's rootfs.
    assert added == [{"destination": "/var/lib/app", "type": "bind",
                      "source": "/run/enforcer/mounts/c.1.x/0", "options": ["rbind", "rw"]}]
    assert stager.asked == [(os.path.join(bundle, "rootfs"), "/var/lib/app")]
    assert len([m for m in after["mounts"] if m["destination"] == "/dev/shm"]) == 1


def test_writable_paths_need_a_readonly_root() -> None:
    stager = RecordingStager()
    mounts = (MountOp(kind="writable", path="/var/lib/app"),)
    merge_patch(fixture_config(), patch_from_plan(make_plan(mounts=mounts)), "/b", NO_INHERIT,
                stager=stager)
    assert stager.asked == []


def test_a_plan_with_dotdot_in_a_mount_path_is_refused(tmp_path) -> None:
    from enforcer.errors import PlanError
    from enforcer.plan import load_plan_file
    from tests.shim_helpers import write_plan

    for op in (MountOp(kind="writable", path="/var/lib/../../etc"),
               MountOp(kind="bind", path="/mnt", source="/srv/../etc")):
        path = write_plan(str(tmp_path / "p.json"), make_plan(mounts=(op,)))
        with pytest.raises(PlanError, match="'..' component"):
            load_plan_file(path)


def _cg(**limits: int) -> CgroupPlan:
    return CgroupPlan(**limits)  # type: ignore[arg-type]


def test_memory_takes_the_smaller_limit_and_swap_is_compared_as_swap() -> None:
    config = fixture_config()
    assert "limit" not in config["linux"]["resources"]["memory"]  # docker: unlimited
    after = merged({"cgroup": _cg(memory_max=256 << 20, memory_swap_max=0)})
    assert after["linux"]["resources"]["memory"]["limit"] == 256 << 20
    assert after["linux"]["resources"]["memory"]["swap"] == 256 << 20  # memory+swap, no swap
    config["linux"]["resources"]["memory"].update(limit=128 << 20, swap=192 << 20)
    after = merged({"cgroup": _cg(memory_max=256 << 20)}, config)
    assert after["linux"]["resources"]["memory"] == {"disableOOMKiller": False,
                                                     "limit": 128 << 20, "swap": 192 << 20}
    # a lower memory limit keeps the config's 0 bytes of swap at 0
    config = fixture_config()
    config["linux"]["resources"]["memory"].update(limit=1 << 30, swap=1 << 30)
    after = merged({"cgroup": _cg(memory_max=256 << 20)}, config)
    assert after["linux"]["resources"]["memory"]["swap"] == 256 << 20


def test_pids_and_cpu_take_the_smaller_limit() -> None:
    config = fixture_config()
    config["linux"]["resources"]["pids"] = {"limit": 50}
    config["linux"]["resources"]["cpu"].update(quota=20_000, period=100_000)  # 0.2 cpu
    after = merged({"cgroup": _cg(pids_max=128, cpu_quota_us=50_000, cpu_period_us=100_000)},
                   config)["linux"]["resources"]
    assert after["pids"] == {"limit": 50}
    assert (after["cpu"]["quota"], after["cpu"]["period"]) == (20_000, 100_000)
    # the ratio decides, not the raw quota: 30ms/50ms (0.6) > 50ms/100ms (0.5)
    config["linux"]["resources"]["cpu"].update(quota=30_000, period=50_000)
    config["linux"]["resources"]["pids"] = {"limit": 0}  # 0 = unlimited in OCI
    after = merged({"cgroup": _cg(pids_max=128, cpu_quota_us=50_000, cpu_period_us=100_000)},
                   config)["linux"]["resources"]
    assert after["pids"] == {"limit": 128}
    assert (after["cpu"]["quota"], after["cpu"]["period"]) == (50_000, 100_000)


def test_io_limits_take_the_smaller_value_per_device() -> None:
    """The policy's side is the OCI form emit/oci_resources.py makes of the
    Plan (weight on the v1 blkio scale: 100 -> 500); per device the smaller
    rate wins and a device the config does not limit is added."""
    config = fixture_config()
    config["linux"]["resources"]["blockIO"] = {
        "weight": 800, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}]}
    cg = CgroupPlan(memory_max=1000000, pids_max=9, io_weight=100,
                    io_devices=(IoDevicePlan("8:0", read_bps=2 << 20),
                                IoDevicePlan("8:16", read_bps=4096)))
    after = merged({"cgroup": cg}, config)["linux"]["resources"]
    assert after["memory"]["limit"] == 1000000 and after["pids"] == {"limit": 9}
    assert after["blockIO"]["weight"] == 500
    assert after["blockIO"]["throttleReadBpsDevice"] == [
        {"major": 8, "minor": 0, "rate": 1 << 20}, {"major": 8, "minor": 16, "rate": 4096}]


def test_rlimits_take_the_lower_value_including_inherited_ones() -> None:
    config = fixture_config()
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    rl = (RlimitPlan("NOFILE", 4096, 4096), RlimitPlan("CORE", 0, 0), RlimitPlan("NPROC", -1, -1))
    after = merged({"rlimits": rl}, config,
                   inherited={"CORE": (UNLIMITED, UNLIMITED), "NPROC": (500, 1000)})
    by_type = {r["type"]: r for r in after["process"]["rlimits"]}
    assert by_type["RLIMIT_NOFILE"] == {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}
    assert by_type["RLIMIT_CORE"] == {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}
    # policy says unlimited; the container would inherit 500/1000: that stays
    assert by_type["RLIMIT_NPROC"] == {"type": "RLIMIT_NPROC", "hard": 1000, "soft": 500}


def test_no_new_privileges_is_forced_on_and_never_off() -> None:
    assert "noNewPrivileges" not in fixture_config()["process"]
    assert merged({"no_new_privileges": True})["process"]["noNewPrivileges"] is True
    config = fixture_config()
    config["process"]["noNewPrivileges"] = True
    assert merged({"no_new_privileges": False}, config)["process"]["noNewPrivileges"] is True
    assert "noNewPrivileges" not in merged({"no_new_privileges": False})["process"]


def test_user_replaces_root_only() -> None:
    user = UserPlan(uid=65534, gid=65534, groups=(65534,))
    after = merged({"user": user})["process"]["user"]
    assert after == {"uid": 65534, "gid": 65534, "additionalGids": [65534]}
    config = fixture_config()
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    assert merged({"user": user}, config)["process"]["user"] == {"uid": 1000, "gid": 1000}


def test_namespaces_are_added_and_user_namespace_refused() -> None:
    config = fixture_config()
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                     if ns["type"] != "network"]
    after = merged({"namespaces": ("net", "mount", "cgroup")}, config)
    types = [ns["type"] for ns in after["linux"]["namespaces"]]
    assert types.count("network") == 1 and types.count("mount") == 1 and "cgroup" in types
    with pytest.raises(ShimError, match="user namespace"):
        merged({"namespaces": ("user",)})


def test_merge_is_idempotent_and_leaves_the_annotations_alone() -> None:
    """Annotations are the caller's: runc passes them to every hook as the
    container's state, so the shim adds none (what it applied is in the
    registry record)."""
    plan = dict(mounts=(MountOp(kind="tmpfs", path="/tmp", size=1 << 20, mode=0o1777,
                                options=("nosuid",)), MountOp(kind="readonly", path="/etc")),
                cgroup=_cg(memory_max=1000000), rlimits=(RlimitPlan("CORE", 0, 0),))
    once = merged(plan)
    twice = merged(plan, copy.deepcopy(once))
    assert once == twice
    assert once.get("annotations") == fixture_config().get("annotations")
    config = fixture_config()
    config["annotations"] = {"io.enforcer.policy": "handmade", "org.example/x": "1"}
    assert merged(plan, copy.deepcopy(config))["annotations"] == config["annotations"]


def test_plan_without_oci_seccomp_is_refused() -> None:
    plan = make_plan()
    broken = make_plan(seccomp=type(plan.seccomp)(**{**plan.seccomp.__dict__, "oci": {}}))
    with pytest.raises(ShimError, match="no OCI form"):
        patch_from_plan(broken)


def test_inherited_rlimits_match_the_resource_module() -> None:
    import resource

    from enforcer.shim.merge import inherited_rlimits

    names = ["NOFILE", "CORE", "NPROC", "STACK", "MEMLOCK", "RTTIME", "MSGQUEUE"]
    got = inherited_rlimits(names)
    for name in names:
        soft, hard = resource.getrlimit(getattr(resource, "RLIMIT_" + name))
        norm = tuple(UNLIMITED if v == resource.RLIM_INFINITY else v for v in (soft, hard))
        assert got[name] == norm, name


def test_unprivileged_port_sysctl_goes_with_net_bind_service() -> None:
    sysctl = fixture_config()["linux"]["sysctl"]
    assert sysctl["net.ipv4.ip_unprivileged_port_start"] == "0"
    none = CapabilityPlan(bounding=0, effective=0, permitted=0, inheritable=0, ambient=0)
    after = merged({"capabilities": none})["linux"]["sysctl"]
    assert "net.ipv4.ip_unprivileged_port_start" not in after
    assert after["net.ipv4.ping_group_range"] == sysctl["net.ipv4.ping_group_range"]
    bind = cap_mask(CAP_NUMBERS["CAP_NET_BIND_SERVICE"])
    keep = CapabilityPlan(bounding=bind, effective=bind, permitted=bind, inheritable=0, ambient=0)
    assert merged({"capabilities": keep})["linux"]["sysctl"] == sysctl
    assert merged({"capabilities": None})["linux"]["sysctl"] == sysctl


def test_ambient_is_intersected_with_what_the_policy_lets_the_process_hold() -> None:
    """A policy without a user leaves the user to the runtime: its ambient
    capabilities (podman --user 1000 --cap-add NET_BIND_SERVICE) are
    intersected with the policy's permitted & inheritable, not emptied."""
    nbs, raw = CAP_NUMBERS["CAP_NET_BIND_SERVICE"], CAP_NUMBERS["CAP_NET_RAW"]
    config = fixture_config()
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    for s in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        config["process"]["capabilities"][s] = ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    keep = cap_mask(nbs, CAP_NUMBERS["CAP_CHOWN"])
    caps = CapabilityPlan(bounding=keep, effective=keep, permitted=keep, inheritable=keep,
                          ambient=0)
    after = merged({"capabilities": caps}, copy.deepcopy(config))["process"]["capabilities"]
    assert after["ambient"] == ["CAP_NET_BIND_SERVICE"]  # NET_RAW is not the policy's
    # Not permitted by the policy: not ambient either.
    caps = CapabilityPlan(bounding=keep, effective=keep, permitted=cap_mask(raw),
                          inheritable=keep, ambient=0)
    after = merged({"capabilities": caps}, copy.deepcopy(config))["process"]["capabilities"]
    assert after["ambient"] == []
    # A policy naming a user says which capabilities it holds as ambient.
    caps = CapabilityPlan(bounding=keep, effective=keep, permitted=keep, inheritable=keep,
                          ambient=0)
    after = merged({"capabilities": caps, "user": UserPlan(uid=65534, gid=65534)},
                   copy.deepcopy(config))["process"]["capabilities"]
    assert after["ambient"] == []


def test_private_devices_keeps_host_devices_out_of_the_container() -> None:
    from enforcer.shim.merge import merge_devices

    config = {"linux": {
        "devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
                    {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}],
        "resources": {"devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "rwm"},
            {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
            {"allow": True, "type": "c", "major": 136, "minor": 4, "access": "rwm"},
            {"allow": True, "type": "b", "access": "m"},
            {"allow": True, "access": "rwm"},  # privileged: everything
        ]}}}
    merge_devices(config, {"private_devices": True})
    assert [d["path"] for d in config["linux"]["devices"]] == ["/dev/null"]
    rules = config["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed_rw = [(r.get("type"), r.get("major"), r.get("minor")) for r in rules
                  if r["allow"] and set(r["access"]) - {"m"}]
    assert allowed_rw == [("c", 1, 3), ("c", 136, 4)]


def test_without_private_devices_the_devices_are_the_runtimes() -> None:
    from enforcer.shim.merge import merge_devices

    config = {"linux": {"devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]}}
    merge_devices(config, {"private_devices": False})
    assert config["linux"]["devices"][0]["path"] == "/dev/sda"
