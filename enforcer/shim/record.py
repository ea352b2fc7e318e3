"""Workload registry records for containers, written on the start path.

The record is enforcer/registry.py's WorkloadRecord, kept here as a plain
dict (the reaper compares it with what is on disk); writing, naming and
removing go through enforcer.registry, which checks the record on the way.
"""

from __future__ import annotations

import os
import time
# `typing` costs ~9 ms to import here; annotations are strings (PEP 563),
# so it is only needed by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from enforcer import registry
from enforcer import fastjson

NO_POLICY = "_none"  # policy name of a container started without one
PASSTHROUGH_MODE = "passthrough"
# In the in-memory record of a foreground `runc run` only (never written to
# the registry file): the staging directory of its writable paths, released
# with the record when the run ends (see staging.py).
STAGING_KEY = "_staging"


def record_path(root: str, container_id: str) -> str:
    return registry.record_path(container_id, root)


def _own_cgroups(proc: str = "self") -> list[tuple[str, str]]:
    """(hierarchy, path) of a process, as /proc/PROC/cgroup lists them."""
    out = []
    try:
        with open(f"/proc/{proc}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                out.append((controllers, path))
    except (OSError, ValueError):
        pass
    return out


def _systemd_path(cgroups_path: str) -> str:
    """runc's "slice:prefix:name" -> the cgroup path systemd creates."""
    slice_name, prefix, name = cgroups_path.split(":", 2)
    parts = []
    if slice_name and slice_name != "-.slice":
        stem = slice_name.removesuffix(".slice")
        pieces = stem.split("-")
        for i in range(1, len(pieces) + 1):
            parts.append("-".join(pieces[:i]) + ".slice")
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix else name
    return "/" + "/".join(parts + [unit])


def cgroups_from_config(config: dict[str, Any], container_id: str,
                        systemd: bool, proc: str = "self") -> dict[str, str]:
    """Where runc will put the container, per hierarchy of this host.

    An absolute cgroupsPath is used as is; a relative one (or none: runc then
    uses the container id) is relative to runc's own cgroup, which is that
    of `proc`, the process runc starts from: the shim itself ("self"), or
    the front end's pid when enforcer-shimd does the work.
    """
    linux = config.get("linux") or {}
    raw = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    if not isinstance(raw, str):
        raw = ""
    if systemd and raw.count(":") == 2:
        absolute = _systemd_path(raw)
        return {h: absolute for h, _ in _own_cgroups(proc)}
    out = {}
    for hierarchy, own in _own_cgroups(proc):
        if raw.startswith("/"):
            out[hierarchy] = os.path.normpath(raw)
        else:
            out[hierarchy] = os.path.normpath(os.path.join(own, raw or container_id))
    return out


def cgroups_of_pid(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return {c: p for _, c, p in (line.rstrip("\n").split(":", 2) for line in f)}
    except (OSError, ValueError):
        return None


def make_record(container_id: str, patch: dict[str, Any] | None, cgroups: dict[str, str],
                bundle: str, pid: int | None = None,
                audit_session: int | None = None) -> dict[str, Any]:
    limits = {}
    if patch is not None:
        for key, limit in (("memory_max", patch["limits"]["memory"]),
                           ("pids_max", patch["limits"]["pids"])):
            if limit is not None:
                limits[key] = limit
    return {
        "id": container_id,
        "kind": "container",
        "policy": patch["policy"] if patch else NO_POLICY,
        "policy_hash": patch["policy_hash"] if patch else "",
        "mode": patch["mode"] if patch else PASSTHROUGH_MODE,
        "cgroups": cgroups,
        "container_id": container_id,
        "bundle": bundle,
        "pid": pid,
        "started": time.time(),
        "limits": limits,
        "audit_session": audit_session,
        "version": registry.RECORD_VERSION,
    }


def write_record(root: str, record: dict[str, Any]) -> str:
    return registry.write_record(registry.WorkloadRecord.from_dict(record), root)


def remove_record(root: str, container_id: str) -> None:
    try:
        registry.remove_record(container_id, root)
    except ValueError:
        pass  # not an id we could have registered


def _same_record(path: str, record: dict[str, Any]) -> bool:
    """Is the record at `path` still the one we wrote (not a reused id)?"""
    try:
        with open(path, "rb") as f:
            doc = fastjson.loads(f.read())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("started") == record["started"] \
        and doc.get("bundle") == record["bundle"]


def remove_record_if_same(root: str, record: dict[str, Any]) -> None:
    """Remove `record` from the registry unless its id was registered anew
    since; release the run's staging mounts either way (they are its own)."""
    staging = record.get(STAGING_KEY)
    if isinstance(staging, str):
        from enforcer.shim.staging import STAGING_DIR, release_dir

        if os.path.dirname(staging) == os.path.join(root, STAGING_DIR):
            release_dir(staging)
    try:
        path = record_path(root, record["id"])
        if _same_record(path, record):
            os.unlink(path)
    except (OSError, ValueError):
        pass


def _wait_and_remove(watches: dict[int, tuple[str, dict[str, Any]]]) -> None:
    """Remove each record once the process behind its pidfd has exited."""
    import select

    poller = select.poll()
    for pidfd in watches:
        poller.register(pidfd, select.POLLIN)
    while watches:
        for pidfd, _ in poller.poll():
            root, record = watches.pop(pidfd)
            poller.unregister(pidfd)
            os.close(pidfd)
            remove_record_if_same(root, record)


def detach_record_remover(watches: dict[int, tuple[str, dict[str, Any]]]) -> None:
    """Fork a process that removes each record (pidfd -> (root, record)) when
    the pidfd's process exits, then exits itself.

    It holds nothing of ours but those pidfds (so nobody waiting for EOF on
    a pipe waits for it), has /dev/null for stdio and leaves the terminal's
    process group. Used by the Python shim before it execs a foreground
    `runc run` (runc keeps our pid and deletes the container, not our
    record), and by enforcer-shimd for the runs it still watches when it
    stops. A fork that fails leaves a stale record: better than not starting.
    """
    try:
        pid = os.fork()
    except OSError:
        return
    if pid != 0:
        return
    # -- the remover --
    try:
        os.setsid()
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in watches:
                try:
                    os.close(int(name))
                except OSError:
                    pass  # the listing's own descriptor, already gone
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            if fd != null:
                os.dup2(null, fd)
        _wait_and_remove(watches)
    except BaseException:
        pass
    os._exit(0)


def start_record_reaper(root: str, record: dict[str, Any]) -> None:
    """Remove `record` once this process (soon runc) has exited: see
    detach_record_remover. The pidfd survives our exec."""
    try:
        pidfd = os.pidfd_open(os.getpid())
    except OSError:
        return  # no pidfds (Linux < 5.3): a stale record is better than not starting
    try:
        detach_record_remover({pidfd: (root, record)})
    finally:
        os.close(pidfd)
