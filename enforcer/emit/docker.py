"""Policy -> a Docker seccomp profile plus the matching `docker run` flags.

The profile is the OCI seccomp object (Docker reads the same JSON, with
`flags` since Docker 20.10); everything else becomes flags:

    docker run --security-opt seccomp=PROFILE.json --cap-drop ALL --cap-add …
               --read-only --tmpfs … --memory … --memory-swap … --pids-limit …
               --cpus … --ulimit … --security-opt no-new-privileges --user …

What Docker cannot be told per container (custom masked or read-only
paths, an inaccessible path, a user namespace, ambient capabilities of a
non-root user) is reported, never dropped silently.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from enforcer.emit.common import (Unexpressed, audit_stripped, cap_name,
                                  caps_for_a_runtime_without_ambient, env_set_entries,
                                  landlock_unexpressed, report_container_env_and_user,
                                  runs_as_non_root)
from enforcer.emit.oci import device_numbers, oci_seccomp_checked
from enforcer.kernel.cgroup import blkio_weight
from enforcer.plan import Plan
from enforcer.policy.model import IoDeviceLimit, Policy

# The paths Docker masks in every container unless it is privileged
# (moby oci/defaults.go); a policy asking for a subset of them loses nothing.
DOCKER_MASKED_PATHS = frozenset({
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
})
# Docker's read-only /proc paths.
DOCKER_READONLY_PATHS = frozenset({
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
})


@dataclass
class DockerExport:
    seccomp: dict[str, Any]
    # `docker run` arguments, without the seccomp option (its path is chosen
    # by whoever writes the profile: see run_flags()).
    flags: list[str] = field(default_factory=list)

    def run_flags(self, profile_path: str) -> list[str]:
        return ["--security-opt", f"seccomp={profile_path}", *self.flags]

    def command_line(self, profile_path: str) -> str:
        return " ".join(shlex.quote(a) for a in self.run_flags(profile_path))


def _cap_flags(policy: Policy, un: Unexpressed) -> list[str]:
    caps = policy.capabilities
    flags: list[str] = []
    added = caps_for_a_runtime_without_ambient(policy, un, "Docker")
    if added is not None:
        flags += ["--cap-drop", "ALL"]
        for c in sorted(added):
            flags += ["--cap-add", cap_name(c, prefix="")]
        return flags
    for c in sorted(caps.drop):
        flags += ["--cap-drop", cap_name(c, prefix="")]
    for c in sorted(caps.add):
        flags += ["--cap-add", cap_name(c, prefix="")]
    return flags


def _tmpfs_flag(path: str, size: int | None, mode: int, options: tuple[str, ...]) -> str:
    opts = ["rw", *options, f"mode={mode:o}"]
    if size is not None:
        opts.append(f"size={size}")
    return f"{path}:{','.join(opts)}"


def _device_path(device: str) -> str | None:
    """Docker wants a device path; MAJOR:MINOR becomes /dev/block/MAJOR:MINOR."""
    if device.startswith("/"):
        return device
    nums = device_numbers(device)
    return f"/dev/block/{nums[0]}:{nums[1]}" if nums else None


_IO_FLAGS = (("read_bps", "--device-read-bps"), ("write_bps", "--device-write-bps"),
             ("read_iops", "--device-read-iops"), ("write_iops", "--device-write-iops"))


def _io_flags(dev: IoDeviceLimit, un: Unexpressed) -> list[str]:
    path = _device_path(dev.device)
    if path is None:
        un.add(f"io limit for device {dev.device}", "it is neither a path nor MAJOR:MINOR")
        return []
    flags: list[str] = []
    for attr, flag in _IO_FLAGS:
        value = getattr(dev, attr)
        if value is not None:
            flags += [flag, f"{path}:{value}"]
    return flags


def _resource_flags(policy: Policy, un: Unexpressed) -> list[str]:
    r = policy.resources
    flags: list[str] = []
    if r.memory_max is not None:
        flags += ["--memory", str(r.memory_max)]
        if r.memory_swap_max is not None:
            # Docker's --memory-swap is memory plus swap.
            flags += ["--memory-swap", str(r.memory_max + r.memory_swap_max)]
    elif r.memory_swap_max is not None:
        un.add("resources.memory.swap without memory.max",
               "Docker needs --memory for --memory-swap; no swap limit emitted")
    if r.pids_max is not None:
        flags += ["--pids-limit", str(r.pids_max)]
    if r.cpu_quota_us is not None:
        if r.cpu_period_us == 100_000:
            cpus = r.cpu_quota_us / r.cpu_period_us
            flags += ["--cpus", f"{cpus:g}"]
        else:
            flags += ["--cpu-period", str(r.cpu_period_us), "--cpu-quota", str(r.cpu_quota_us)]
    if r.io_weight is not None:
        flags += ["--blkio-weight", str(blkio_weight(r.io_weight))]
    for dev in r.io_devices:
        flags += _io_flags(dev, un)
    return flags


def _user_flags(policy: Policy, plan: Plan | None, un: Unexpressed) -> list[str]:
    if plan is not None and plan.user is not None:
        uid, gid, groups = plan.user.uid, plan.user.gid, plan.user.groups
    elif policy.user is not None:
        u = policy.user
        # Docker resolves names in the image's /etc/passwd, as we would.
        uid_text = str(u.uid) if u.uid is not None else u.user_name
        gid_text = str(u.gid) if u.gid is not None else u.group_name
        flags = ["--user", f"{uid_text}:{gid_text}" if gid_text else str(uid_text)]
        for g in u.groups:
            flags += ["--group-add", str(g)]
        return flags
    else:
        return []
    flags = ["--user", f"{uid}:{gid}"]
    for g in groups:
        flags += ["--group-add", str(g)]
    return flags


def _filesystem_flags(policy: Policy, un: Unexpressed) -> list[str]:
    fs = policy.filesystem
    flags: list[str] = []
    if fs.read_only_root:
        flags.append("--read-only")
    for t in fs.tmpfs:
        flags += ["--tmpfs", _tmpfs_flag(t.path, t.size, t.mode, t.options)]
    for path in fs.read_only_paths:
        if path not in DOCKER_READONLY_PATHS:
            un.add(f"read-only path {path}",
                   "docker run has no flag for it (a read-only bind mount needs a host path)")
    for path in fs.masked_paths:
        if path not in DOCKER_MASKED_PATHS:
            un.add(f"masked path {path}",
                   "Docker masks only its built-in set of /proc and /sys paths")
    for path in fs.hidden_paths:
        un.add(f"hidden path {path}", "Docker cannot make a path inaccessible")
    for path in fs.writable_paths:
        un.add(f"writable path {path} under a read-only root",
               "use a volume or --tmpfs for it; the image's content there is not writable")
    for b in fs.bind:
        flags += ["--mount", f"type=bind,source={b.source},target={b.target}"
                  + (",readonly" if b.read_only else "")]
    if fs.rootfs:
        un.add(f"filesystem.rootfs {fs.rootfs}", "a Docker container's root is its image")
    return flags


def docker_export(policy: Policy, plan: Plan | None = None, machine: str | None = None,
                  with_flags: bool = False) -> tuple[DockerExport, list[str]]:
    """The seccomp profile and flags for `docker run`, and what Docker cannot say."""
    seccomp, seccomp_lines = oci_seccomp_checked(policy, machine, target="docker",
                                                 with_flags=with_flags)
    un = Unexpressed("docker")
    un.lines.extend(seccomp_lines)
    policy = audit_stripped(policy, un)
    landlock_unexpressed(policy, un)
    flags = _cap_flags(policy, un)
    flags += _filesystem_flags(policy, un)
    flags += _resource_flags(policy, un)
    for r in policy.rlimits:
        soft = "-1" if r.soft < 0 else str(r.soft)
        hard = "-1" if r.hard < 0 else str(r.hard)
        flags += ["--ulimit", f"{r.resource.lower()}={soft}:{hard}"]
    if policy.no_new_privileges:
        flags += ["--security-opt", "no-new-privileges"]
    flags += _user_flags(policy, plan, un)
    report_container_env_and_user(policy, un)
    for name, value in env_set_entries(policy):
        flags += ["--env", f"{name}={value}"]
    if "net" in policy.namespaces:
        flags += ["--network", "none"]
    if "cgroup" in policy.namespaces:
        flags += ["--cgroupns", "private"]
    if "user" in policy.namespaces:
        un.add("a user namespace per container",
               "Docker sets user namespaces daemon-wide (dockerd --userns-remap)")
    return DockerExport(seccomp=seccomp, flags=flags), un.lines


__all__ = ["DockerExport", "docker_export", "DOCKER_MASKED_PATHS", "DOCKER_READONLY_PATHS"]
