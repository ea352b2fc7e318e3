"""Resource-limit events from a workload's cgroups, v1 and v2.

Counters read (each a cumulative count the kernel keeps per cgroup):

    v2  memory.events  oom, oom_kill, max, high -> memory/<same>
        pids.events    max                      -> pids/max
        cpu.stat       nr_throttled             -> cpu/throttled
    v1  memory.failcnt + memory.memsw.failcnt   -> memory/max (v1's name for it)
        memory.oom_control  oom_kill            -> memory/oom_kill
                            under_oom 0 -> 1    -> memory/oom (edge, while polled)
        pids.events    max                      -> pids/max
        cpu.stat       nr_throttled             -> cpu/throttled

The poller reports the increase since its last read; the first read of a
workload reports everything since the cgroup was made, so a limit hit
before the monitor (re)started is not lost. Roots are injected so tests can
point them at fixture trees.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable

from enforcer.monitor.registry import Workload

Counters = dict[tuple[str, str], int]


@dataclass(frozen=True)
class CgroupRoots:
    v1: str | None  # directory holding one directory per v1 hierarchy
    v2: str | None  # the v2 (unified) mount point

    @staticmethod
    def detect(base: str = "/sys/fs/cgroup") -> "CgroupRoots":
        if os.path.exists(os.path.join(base, "cgroup.controllers")):
            return CgroupRoots(v1=None, v2=base)  # pure v2
        unified = os.path.join(base, "unified")
        v2 = unified if os.path.exists(os.path.join(unified, "cgroup.controllers")) else None
        return CgroupRoots(v1=base, v2=v2)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _keyed(path: str) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines) -> {key: value}."""
    data = _read(path)
    out: dict[str, int] = {}
    if data is None:
        return out
    for line in data.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0].decode()] = int(parts[1])
            except ValueError:
                continue
    return out


def _single(path: str) -> int | None:
    data = _read(path)
    try:
        return int(data) if data is not None else None
    except ValueError:
        return None


class CgroupLocator:
    """Where a workload's cgroup directories are, per controller."""

    def __init__(self, roots: CgroupRoots) -> None:
        self.roots = roots

    def v1_dir(self, workload: Workload, controller: str) -> str | None:
        if self.roots.v1 is None:
            return None
        for key, path in workload.cgroups.items():
            if key and controller in key.split(","):
                for hierarchy in (key, controller):
                    candidate = os.path.join(self.roots.v1, hierarchy, path.lstrip("/"))
                    if os.path.isdir(candidate):
                        return candidate
        return None

    def v2_dir(self, workload: Workload) -> str | None:
        path = workload.cgroups.get("")
        if self.roots.v2 is None or path is None:
            return None
        candidate = os.path.join(self.roots.v2, path.lstrip("/"))
        return candidate if os.path.isdir(candidate) else None

    def member_dirs(self, workload: Workload) -> list[str]:
        """Directories whose cgroup.procs list the workload's processes."""
        dirs = []
        v2 = self.v2_dir(workload)
        if v2 is not None and _read(os.path.join(v2, "cgroup.controllers")) not in (None, b"", b"\n"):
            dirs.append(v2)
        for controller in ("pids", "memory", "cpu", "freezer"):
            d = self.v1_dir(workload, controller)
            if d is not None:
                dirs.append(d)
                break
        if not dirs and v2 is not None:
            dirs.append(v2)
        return dirs


def read_counters(locator: CgroupLocator, workload: Workload,
                  under_oom: dict[str, int] | None = None) -> Counters:
    """Current cumulative limit counters of a workload; missing files are skipped."""
    out: Counters = {}
    v2 = locator.v2_dir(workload)
    if v2 is not None:
        events = _keyed(os.path.join(v2, "memory.events"))
        for key in ("oom", "oom_kill", "max", "high"):
            if key in events:
                out[("memory", key)] = events[key]
        pids = _keyed(os.path.join(v2, "pids.events"))
        if "max" in pids:
            out[("pids", "max")] = pids["max"]
        cpu = _keyed(os.path.join(v2, "cpu.stat"))
        if "nr_throttled" in cpu:
            out[("cpu", "throttled")] = cpu["nr_throttled"]
    memory = locator.v1_dir(workload, "memory")
    if memory is not None:
        # A failed charge is counted once, against whichever limit refused
        # it: memory.memsw.failcnt when swap is limited too (swap: 0 sets
        # memsw = memory), memory.failcnt otherwise.
        for name in ("memory.failcnt", "memory.memsw.failcnt"):
            failcnt = _single(os.path.join(memory, name))
            if failcnt is not None:
                out[("memory", "max")] = out.get(("memory", "max"), 0) + failcnt
        control = _keyed(os.path.join(memory, "memory.oom_control"))
        if "oom_kill" in control:
            out[("memory", "oom_kill")] = out.get(("memory", "oom_kill"), 0) + control["oom_kill"]
        if under_oom is not None and "under_oom" in control:
            # v1 keeps no OOM counter; count entries into the under_oom state
            # (seen when oom_kill_disable holds the cgroup there).
            previous = under_oom.get(workload.id, 0)
            edges = under_oom.get(workload.id + "\0edges", 0)
            if control["under_oom"] and not previous:
                edges += 1
            under_oom[workload.id] = control["under_oom"]
            under_oom[workload.id + "\0edges"] = edges
            out[("memory", "oom")] = out.get(("memory", "oom"), 0) + edges
    pids_dir = locator.v1_dir(workload, "pids")
    if pids_dir is not None:
        events = _keyed(os.path.join(pids_dir, "pids.events"))
        if "max" in events:
            out[("pids", "max")] = out.get(("pids", "max"), 0) + events["max"]
    cpu_dir = locator.v1_dir(workload, "cpu")
    if cpu_dir is not None:
        stat = _keyed(os.path.join(cpu_dir, "cpu.stat"))
        if "nr_throttled" in stat:
            out[("cpu", "throttled")] = out.get(("cpu", "throttled"), 0) + stat["nr_throttled"]
    return out


class LimitPoller:
    """Turns counter increases into limit events: `emit(workload, resource, event, n)`."""

    def __init__(self, locator: CgroupLocator,
                 emit: Callable[[Workload, str, str, int], None]) -> None:
        self.locator = locator
        self.emit = emit
        self._last: dict[str, Counters] = {}
        self._under_oom: dict[str, int] = {}

    def poll(self, workloads: list[Workload]) -> int:
        """Read every workload once; returns the number of events emitted."""
        emitted = 0
        for workload in workloads:
            if workload.ended is not None and workload.id not in self._last:
                continue
            current = read_counters(self.locator, workload, self._under_oom)
            if not current:
                continue
            last = self._last.get(workload.id, {})
            for key, value in current.items():
                delta = value - last.get(key, 0)
                if delta > 0:
                    self.emit(workload, key[0], key[1], delta)
                    emitted += delta
            # Keep the highest value seen: a counter never goes down, and a
            # cgroup that vanished must not make us re-count on return.
            merged = dict(last)
            for key, value in current.items():
                merged[key] = max(value, last.get(key, 0))
            self._last[workload.id] = merged
        return emitted

    def forget(self, workload: Workload) -> None:
        self._last.pop(workload.id, None)
        self._under_oom.pop(workload.id, None)
        self._under_oom.pop(workload.id + "\0edges", None)


# -- immediate notification ------------------------------------------------------

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_MOVED_TO = 0x00000080
_IN_MOVED_FROM = 0x00000040
_IN_IGNORED = 0x00008000
_INOTIFY_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len


class LimitWatcher:
    """Wakes the monitor the moment a limit event happens.

    Why polling is not enough: `enforcer run` removes a workload's cgroup as
    soon as the workload exits, and a process killed by the OOM killer, or
    one that gives up when fork fails at the pids limit, exits at once; the
    counters vanish with the cgroup, often before the next poll. The kernel
    notifies instead:

      * pids.events (v1 and v2) and memory.events (v2) raise inotify
        IN_MODIFY when they change;
      * v1 memory.oom_control signals an eventfd registered through
        cgroup.event_control when the cgroup goes OOM (just before the
        kill, so the reader retries briefly until oom_kill moves).

    The registry directory is watched too, so a new workload's cgroup is
    watched from the moment its record appears, not a poll later.
    """

    def __init__(self, locator: CgroupLocator) -> None:
        import ctypes

        self.locator = locator
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.inotify_fd = fd
        self._wd_owner: dict[int, str] = {}  # inotify wd -> workload id ("" = registry)
        self._workload_wds: dict[str, list[int]] = {}
        self._eventfds: dict[int, tuple[str, int]] = {}  # eventfd -> (workload id, oom_control fd)
        self.registry_watched = False

    def watch_registry(self, directory: str) -> bool:
        wd: int = self._libc.inotify_add_watch(
            self.inotify_fd, directory.encode(),
            _IN_CREATE | _IN_DELETE | _IN_MOVED_TO | _IN_MOVED_FROM)
        if wd >= 0:
            self._wd_owner[wd] = ""
            self.registry_watched = True
        return wd >= 0

    def watch_parent(self, directory: str) -> None:
        """Until the registry directory exists, watch for its creation."""
        if getattr(self, "_parent_wd", None) is None:
            wd = self._libc.inotify_add_watch(self.inotify_fd, directory.encode(),
                                              _IN_CREATE | _IN_MOVED_TO)
            if wd >= 0:
                self._wd_owner[wd] = ""
                self._parent_wd = wd

    def watch(self, workload: Workload) -> None:
        self.unwatch(workload.id)
        wds: list[int] = []
        files = []
        v2 = self.locator.v2_dir(workload)
        if v2 is not None:
            files += [os.path.join(v2, "pids.events"), os.path.join(v2, "memory.events")]
        pids = self.locator.v1_dir(workload, "pids")
        if pids is not None:
            files.append(os.path.join(pids, "pids.events"))
        for path in files:
            if os.path.exists(path):
                wd = self._libc.inotify_add_watch(self.inotify_fd, path.encode(), _IN_MODIFY)
                if wd >= 0:
                    self._wd_owner[wd] = workload.id
                    wds.append(wd)
        self._workload_wds[workload.id] = wds
        memory = self.locator.v1_dir(workload, "memory")
        if memory is not None:
            self._watch_v1_oom(workload.id, memory)

    def _watch_v1_oom(self, workload_id: str, memory_dir: str) -> None:
        try:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            return
        try:
            ofd = os.open(os.path.join(memory_dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(efd)
            return
        try:
            with open(os.path.join(memory_dir, "cgroup.event_control"), "w") as f:
                f.write(f"{efd} {ofd}")
        except OSError:
            os.close(efd)
            os.close(ofd)
            return
        self._eventfds[efd] = (workload_id, ofd)

    def unwatch(self, workload_id: str) -> None:
        for wd in self._workload_wds.pop(workload_id, []):
            self._wd_owner.pop(wd, None)
            self._libc.inotify_rm_watch(self.inotify_fd, wd)  # fails harmlessly if gone
        for efd, (owner, ofd) in list(self._eventfds.items()):
            if owner == workload_id:
                del self._eventfds[efd]
                os.close(efd)
                os.close(ofd)

    def fds(self) -> list[int]:
        return [self.inotify_fd, *self._eventfds]

    def read(self, ready: list[int]) -> tuple[set[str], bool, set[str]]:
        """-> (workloads with new counts, registry changed, workloads that went OOM)."""
        changed: set[str] = set()
        ooms: set[str] = set()
        registry = False
        if self.inotify_fd in ready:
            while True:
                try:
                    data = os.read(self.inotify_fd, 65536)
                except BlockingIOError:
                    break
                offset = 0
                while offset + _INOTIFY_EVENT.size <= len(data):
                    wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(data, offset)
                    offset += _INOTIFY_EVENT.size + length
                    owner = self._wd_owner.get(wd)
                    if mask & _IN_IGNORED:
                        self._wd_owner.pop(wd, None)
                        if owner == "":
                            self.registry_watched = False
                    if owner == "":
                        registry = True
                    elif owner is not None:
                        changed.add(owner)
        for efd in ready:
            entry = self._eventfds.get(efd)
            if entry is not None:
                try:
                    os.eventfd_read(efd)
                except OSError:
                    pass
                ooms.add(entry[0])
                changed.add(entry[0])
        return changed, registry, ooms

    def close(self) -> None:
        for workload_id in list(self._workload_wds) + [o for o, _ in self._eventfds.values()]:
            self.unwatch(workload_id)
        os.close(self.inotify_fd)
