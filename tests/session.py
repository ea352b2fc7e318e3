"""One tag per test session, carried by everything the tests create.

The leak guard in tests/conftest.py checks only what this session made: the
cgroups, mounts and scratch directories whose names carry `TAG`, and the
session's own cgroup parent. Whatever else appears on the host during the
run (another program's cgroups, a container someone else started, a
concurrent test session) is none of its business, so the suite passes on a
busy machine.

Use `unique()` for any name that reaches the host: container ids (runc
makes a cgroup named after the id), cgroup names, scratch directories.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from typing import Iterator

# Short: it ends up in socket paths, whose length the kernel caps at 108.
TAG = os.environ.get("ENFORCER_TEST_TAG") or f"t{uuid.uuid4().hex[:6]}"

# Where `enforcer run` and the shim create workload cgroups during the tests
# (the default is /enforcer, which real workloads on this host may use).
CGROUP_PARENT = f"/enforcer-{TAG}"


def unique(prefix: str) -> str:
    """A fresh name carrying the session tag, e.g. 'enf-shim-t1a2b3-9f8e7d6c'."""
    return f"{prefix}{TAG}-{uuid.uuid4().hex[:8]}"


def mkdtemp(prefix: str, dir: str | None = None) -> str:
    """tempfile.mkdtemp whose name carries the session tag."""
    return tempfile.mkdtemp(prefix=f"{prefix}{TAG}-", dir=dir)


def export_environment() -> None:
    """Make every enforcer process the tests start use the session's names."""
    os.environ["ENFORCER_TEST_TAG"] = TAG
    os.environ["ENFORCER_CGROUP_PARENT"] = CGROUP_PARENT


def mounts_under(path: str) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: str) -> None:
    """Delete a scratch tree the tests made, never crossing into a mount.

    Some OCI validations (shared rootfs propagation) leave container mounts
    on the host under a bundle: they are detached first, and the delete
    itself stays on one file system, so a leaked bind of /dev or / can never
    cost the host its files.
    """
    import subprocess

    if not os.path.lexists(path):
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", path], capture_output=True)


CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_hierarchies() -> list[str]:
    """Mounted hierarchies: one per v1 controller (and the v2 one beside
    them on a hybrid host), or the root itself on a pure v2 host."""
    if not os.path.isdir(CGROUP_ROOT):
        return []
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.procs")):
        return [CGROUP_ROOT]
    return sorted(os.path.join(CGROUP_ROOT, name) for name in os.listdir(CGROUP_ROOT)
                  if os.path.isdir(os.path.join(CGROUP_ROOT, name))
                  and not os.path.islink(os.path.join(CGROUP_ROOT, name))
                  and os.path.ismount(os.path.join(CGROUP_ROOT, name)))


def make_cgroup(name: str) -> list[str]:
    """A cgroup `name` (e.g. CGROUP_PARENT + "/suite") in every hierarchy.

    v1 cpuset starts a new cgroup with no CPUs and no memory nodes, where
    no process may join: each new level gets its parent's."""
    made = []
    for hierarchy in cgroup_hierarchies():
        path = hierarchy
        for part in name.strip("/").split("/"):
            parent, path = path, os.path.join(path, part)
            if os.path.isdir(path):
                continue
            os.mkdir(path)
            for key in ("cpuset.cpus", "cpuset.mems"):
                if os.path.exists(os.path.join(path, key)):
                    with open(os.path.join(parent, key)) as src:
                        value = src.read().strip()
                    with open(os.path.join(path, key), "w") as dst:
                        dst.write(value)
        made.append(path)
    return made


def join_cgroup(directories: list[str]) -> None:
    """Move the calling process into these cgroups (e.g. as a preexec_fn)."""
    for directory in directories:
        with open(os.path.join(directory, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def remove_cgroup_tree(name: str) -> None:
    """Remove cgroup `name` and everything below it, in every hierarchy.

    Children first: cgroup directories go with rmdir only, and one that
    still holds a process stays (the leak guard then names it)."""
    for hierarchy in cgroup_hierarchies():
        top = os.path.join(hierarchy, name.lstrip("/"))
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def remove_new_paths(paths: tuple[str, ...], existed: set[str]) -> None:
    """Remove what a program created at fixed paths it writes whatever it is
    told (dockerd's /etc/docker, containerd's /run/containerd/s, Podman's
    blob cache): each of `paths` that is not in `existed` (the ones there
    before). `paths` lists files before the directories that hold them; a
    directory goes only when empty, never with what someone else put there."""
    for path in paths:
        if path in existed or not os.path.lexists(path):
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError:
            pass


def list_dirs(paths: tuple[str, ...]) -> dict[str, set[str]]:
    """The entries of each existing directory in `paths` (for a before/after
    check that a program left nothing where it keeps state by default)."""
    return {p: set(os.listdir(p)) if os.path.isdir(p) else set() for p in paths
            if os.path.lexists(p)}


def new_entries(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, list[str]]:
    """What appeared between two list_dirs(): new entries, and new paths."""
    found = {p: sorted(entries - before.get(p, set())) for p, entries in after.items()}
    return {p: entries or ["(created)"] for p, entries in found.items()
            if entries or p not in before}


@contextlib.contextmanager
def host_lock(resource: str) -> Iterator[None]:
    """Hold the machine-wide lock of a host singleton while a test uses it.

    dockerd and containerd write fixed paths (/etc/docker, /run/containerd),
    only one process can be the kernel's audit daemon, and audit rules are
    host-wide: two test sessions on one machine (two checkouts, a developer
    and CI) must take turns there. The lock is released when the holder
    exits, however it exits (flock(2)).

    Re-entrant within this process: the session's dockerd fixture holds
    "dockerd" for the whole session, and a later test that takes it again
    would otherwise wait for itself (flock on a second open file conflicts
    with the first one) -- as a full run did, forever.
    """
    import fcntl

    if resource in _held:
        _held[resource] += 1
        try:
            yield
        finally:
            _held[resource] -= 1
        return
    directory = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    fd = os.open(os.path.join(directory, f"enforcer-tests-{resource}.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held[resource] = 1
        try:
            yield
        finally:
            del _held[resource]
    finally:
        os.close(fd)


# host_lock()s this process holds, and how deeply each is nested.
_held: dict[str, int] = {}
