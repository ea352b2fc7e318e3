"""Which workload a pid belongs to.

Sources of truth, in the order they are tried for a pid:
1. the pid cache: filled from each registry record's `pid`, from the
   workload cgroups' cgroup.procs / tasks when a record appears or changes,
   and from earlier answers;
2. /proc/PID/cgroup, matched against the registry records' cgroup paths (a
   sub-cgroup of a workload's cgroup belongs to that workload);
3. fork events (sources/forks.py): the nearest ancestor we can attribute —
   this is what catches a child that a kill-process filter killed before we
   could look at it;
4. otherwise the pid is `unmanaged`: counted, never dropped.

The registry directory is re-read when its mtime changes (polled, and also
on a cache miss, since a record written a moment ago may be what we miss).
A record that cannot be read is counted once per version of the file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from enforcer import registry as reg

UNMANAGED_ID = "unmanaged"
OVERFLOW_LABEL = "_overflow"

# Remember answers, including "unmanaged", for this long; a pid is not
# reused that fast on any sane pid_max, and a live process that later moves
# into a workload's cgroup is picked up after it.
_NEGATIVE_TTL = 5.0


RECORDING_KIND = "recording"  # the registry record of an `enforcer record` session


@dataclass(eq=False)
class Workload:
    id: str
    policy: str
    mode: str = "enforce"
    # "run", "container", or RECORDING_KIND: the audit session of an
    # `enforcer record`, whose every syscall is logged on purpose. Its
    # records are learning, not violations (Monitor.handle_record).
    kind: str = "run"
    container_id: str | None = None
    pid: int | None = None
    cgroups: dict[str, str] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    # The fresh kernel audit session the workload runs in (`ses=` of its
    # audit records), when its launcher could start one; see
    # enforcer/audit_session.py. Exact for every process, even one gone.
    audit_session: int | None = None
    # The `workload` label: the id, or OVERFLOW_LABEL past the cap.
    label: str = ""
    ended: float | None = None  # monotonic time the record disappeared
    record_key: tuple[int, int, int] | None = None
    # The start time (clock ticks after boot, /proc/PID/stat) of the process
    # `pid` named when the monitor first checked it: a different value later
    # means the pid was reused (see WorkloadIndex.sweep_stale).
    pid_start: int | None = None
    # Its record outlived its process (sweep_stale): not running, but still
    # attributed until the record goes (audit records of its last moments
    # may still be on their way).
    stale: bool = False

    @property
    def managed(self) -> bool:
        return self.id != UNMANAGED_ID

    @property
    def recording(self) -> bool:
        return self.kind == RECORDING_KIND


UNMANAGED = Workload(id=UNMANAGED_ID, policy="none", mode="", label=UNMANAGED_ID)


def parse_proc_cgroup(text: str) -> list[tuple[str, str]]:
    """Lines "ID:CONTROLLERS:PATH" -> [(controllers, path)] ("" for v2)."""
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((parts[1], parts[2]))
    return out


class WorkloadIndex:
    def __init__(self, runtime_dir: str, *, proc_root: str = "/proc",
                 cgroup_paths: Callable[[Workload], Iterable[str]] | None = None,
                 max_workloads: int = 1000, grace: float = 300.0,
                 on_malformed: Callable[[str], None] = lambda kind: None,
                 forks: "object | None" = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime_dir = runtime_dir
        self.proc_root = proc_root
        self.cgroup_paths = cgroup_paths or (lambda w: ())
        self.max_workloads = max_workloads
        self.grace = grace
        self.on_malformed = on_malformed
        self.forks = forks  # a ForkTracker or None
        self.clock = clock
        self.workloads: dict[str, Workload] = {}  # id -> workload (live and ended)
        self._by_path: dict[str, Workload] = {}  # record file path -> workload
        self._bad_files: dict[str, tuple[int, int, int]] = {}  # path -> counted version
        # (controllers key, cgroup path) -> workload; "" key is v2.
        self._by_cgroup: dict[tuple[str, str], Workload] = {}
        self._pid_cache: dict[int, tuple[Workload, float]] = {}
        self._by_session: dict[int, Workload] = {}  # audit session id -> workload
        self._dir_mtime: int | None = None
        self._labelled: set[str] = set()  # workload ids holding their own label
        self.generation = 0  # bumps on every registry change
        self.on_added: list[Callable[[Workload], None]] = []  # new or changed record
        self.on_ended: list[Callable[[Workload], None]] = []
        self.on_expired: list[Callable[[Workload], None]] = []

    # -- registry -------------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Re-read the registry if its directory changed. True if anything did."""
        directory = reg.workloads_dir(self.runtime_dir)
        try:
            mtime = os.stat(directory).st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if not force and mtime == self._dir_mtime:
            return False
        self._dir_mtime = mtime
        seen: set[str] = set()
        changed = False
        for path in reg.list_record_paths(self.runtime_dir):
            seen.add(path)
            changed |= self._load(path)
        for path in list(self._by_path):
            if path not in seen:
                self._end(self._by_path.pop(path))
                changed = True
        for path in list(self._bad_files):
            if path not in seen:
                del self._bad_files[path]
        if changed:
            self.generation += 1
        return changed

    def _load(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        known = self._by_path.get(path)
        if known is not None and known.record_key == key:
            return False
        if self._bad_files.get(path) == key:
            return False
        try:
            record = reg.read_record(path)
            if os.path.basename(path) != record.id + ".json":
                raise ValueError("file name does not match the record's id")
        except (OSError, ValueError, TypeError, RecursionError):
            # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
            self._bad_files[path] = key
            self.on_malformed("registry_record")
            if known is not None:
                self._end(self._by_path.pop(path))
                return True
            return False
        self._bad_files.pop(path, None)
        if known is not None:
            self._drop_cgroups(known)
            known.policy, known.mode, known.kind = record.policy, record.mode, record.kind
            known.container_id, known.pid = record.container_id, record.pid
            known.cgroups, known.limits = dict(record.cgroups), dict(record.limits)
            known.audit_session = record.audit_session
            known.record_key, known.ended = key, None
            known.pid_start, known.stale = None, False
            self._index(known)
            for callback in self.on_added:
                callback(known)
            return True
        existing = self.workloads.get(record.id)
        if existing is not None and existing.ended is not None:
            # The same workload id came back (e.g. a restarted container).
            existing.ended = None
            workload = existing
            workload.policy, workload.mode = record.policy, record.mode
            workload.kind = record.kind
            workload.container_id, workload.pid = record.container_id, record.pid
            workload.cgroups, workload.limits = dict(record.cgroups), dict(record.limits)
            workload.audit_session = record.audit_session
            workload.record_key = key
            workload.pid_start, workload.stale = None, False
        else:
            workload = Workload(id=record.id, policy=record.policy, mode=record.mode,
                                kind=record.kind, container_id=record.container_id, pid=record.pid,
                                cgroups=dict(record.cgroups), limits=dict(record.limits),
                                audit_session=record.audit_session, record_key=key)
            workload.label = self._assign_label(workload)
            self.workloads[workload.id] = workload
        self._by_path[path] = workload
        self._index(workload)
        for callback in self.on_added:
            callback(workload)
        return True

    def _assign_label(self, workload: Workload) -> str:
        if len(self._labelled) < self.max_workloads:
            self._labelled.add(workload.id)
            return workload.id
        return OVERFLOW_LABEL

    def _index(self, workload: Workload) -> None:
        ses = workload.audit_session
        if ses is not None:
            # `enforcer record` keeps its session for the `enforcer run` it
            # starts, which registers itself too: the recording wins.
            current = self._by_session.get(ses)
            if current is None or not current.recording or workload.recording:
                self._by_session[ses] = workload
        for controllers, path in workload.cgroups.items():
            path = path.rstrip("/")
            if path.startswith("/"):  # the root cgroup would claim every process
                self._by_cgroup[(controllers, path)] = workload
        now = self.clock()
        if workload.pid is not None:
            self._pid_cache[workload.pid] = (workload, now)
        for pid in self._cgroup_pids(workload):
            self._pid_cache[pid] = (workload, now)

    def _drop_cgroups(self, workload: Workload) -> None:
        for key in [k for k, w in self._by_cgroup.items() if w is workload]:
            del self._by_cgroup[key]
        for ses in [k for k, w in self._by_session.items() if w is workload]:
            del self._by_session[ses]
            # Another record of the same session (the recording's `enforcer
            # run`) takes over.
            for other in self._by_path.values():
                if other is not workload and other.audit_session == ses:
                    self._by_session[ses] = other
                    break

    # -- stale records -----------------------------------------------------------

    def sweep_stale(self) -> list[Workload]:
        """Mark the workloads whose registry record outlived its process
        (`stale`); returns those newly found.

        A launcher that dies without cleaning up (SIGKILL, a crash, a reboot
        with a persistent runtime directory) leaves its record behind; the
        monitor must not count such a workload as running. A record is stale
        when its pid is gone (or a zombie) -- or names another process: one
        that started after the record was last written, or whose start time
        differs from the one seen at the first check (pid reuse) -- and no
        process is left in its cgroups (a workload whose main process exited
        while its children run is still running). A stale workload is not
        running (the monitor's workload count leaves it out) but is not
        ended either: records of its last moments may still be on their
        way, and they are attributed to it until its record goes. Stale
        records stay on disk (their launcher's to remove) and are reported
        apart (stale_by_policy). Records without a pid are never judged;
        a record written again is judged afresh.
        """
        btime = self._boot_time()
        ticks = os.sysconf("SC_CLK_TCK")
        found: list[Workload] = []
        for workload in self._by_path.values():
            if (workload.ended is not None or workload.stale or workload.pid is None
                    or workload.record_key is None):
                continue
            start = self._pid_start_time(workload.pid)
            if start is not None:
                if workload.pid_start is None:
                    # First look: the process must be older than the record
                    # that names it (every launcher writes the pid after the
                    # process exists). 2 s of slack for the clock's coarse
                    # boot time and tick rounding.
                    written = workload.record_key[1] / 1e9
                    if btime is None or btime + start / ticks <= written + 2.0:
                        workload.pid_start = start
                        continue
                elif start == workload.pid_start:
                    continue
            if self._cgroup_pids(workload):
                continue
            workload.stale = True
            found.append(workload)
        return found

    def stale_by_policy(self) -> dict[str, int]:
        """Registry records found stale, still on disk, per policy."""
        out: dict[str, int] = {}
        for workload in self._by_path.values():
            if workload.stale and workload.ended is None:
                out[workload.policy] = out.get(workload.policy, 0) + 1
        return out

    def _pid_start_time(self, pid: int) -> int | None:
        """starttime of /proc/PID/stat (clock ticks after boot); None when
        the process is gone or a zombie (it has exited: its record is due
        for removal by whoever waits for it)."""
        try:
            with open(f"{self.proc_root}/{pid}/stat", "rb") as f:
                data = f.read(4096)
        except OSError:
            return None
        # The command name (field 2) may hold spaces and parentheses: count
        # fields from the last ')'. Field 3 is the state, field 22 starttime.
        fields = data[data.rfind(b")") + 2:].split()
        try:
            if fields[0] in (b"Z", b"X"):
                return None
            return int(fields[19])
        except (IndexError, ValueError):
            return None

    def _boot_time(self) -> float | None:
        """Wall-clock time of boot: `btime` of /proc/stat."""
        try:
            with open(f"{self.proc_root}/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        return float(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def recording_sessions(self) -> set[int]:
        """Audit sessions of `enforcer record` runs known now."""
        return {ses for ses, w in self._by_session.items() if w.recording}

    def _cgroup_pids(self, workload: Workload) -> list[int]:
        pids: list[int] = []
        for directory in self.cgroup_paths(workload):
            for name in ("cgroup.procs", "tasks"):
                try:
                    with open(os.path.join(directory, name), "rb") as f:
                        pids.extend(int(x) for x in f.read().split())
                except (OSError, ValueError):
                    continue
        return pids

    def _end(self, workload: Workload) -> None:
        workload.ended = self.clock()
        for callback in self.on_ended:
            callback(workload)

    def expire(self) -> list[Workload]:
        """Forget workloads that ended more than `grace` seconds ago."""
        now = self.clock()
        gone = [w for w in self.workloads.values()
                if w.ended is not None and now - w.ended >= self.grace]
        for workload in gone:
            del self.workloads[workload.id]
            self._labelled.discard(workload.id)
            self._drop_cgroups(workload)
            for pid in [p for p, (w, _) in self._pid_cache.items() if w is workload]:
                del self._pid_cache[pid]
            for callback in self.on_expired:
                callback(workload)
        # Negative answers age out so a pid can be re-examined later.
        stale = [p for p, (w, t) in self._pid_cache.items()
                 if w is UNMANAGED and now - t > _NEGATIVE_TTL]
        for pid in stale:
            del self._pid_cache[pid]
        return gone

    def by_main_pid(self, pid: int) -> Workload | None:
        """The live workload whose registered pid this is (hot: one dict get)."""
        hit = self._pid_cache.get(pid)
        if hit is not None and hit[0].pid == pid and hit[0].ended is None:
            return hit[0]
        return None

    def known_member(self, pid: int) -> Workload | None:
        """A live workload this pid is known to belong to, from the pid cache
        or recorded forks only (no /proc: used for processes that just exited)."""
        hit = self._pid_cache.get(pid)
        if hit is not None and hit[0] is not UNMANAGED:
            return hit[0] if hit[0].ended is None else None
        if self.forks is None:
            return None
        for ancestor in self.forks.ancestors(pid, 8):  # type: ignore[attr-defined]
            hit = self._pid_cache.get(ancestor)
            if hit is not None and hit[0] is not UNMANAGED:
                return hit[0] if hit[0].ended is None else None
        return None

    def live(self) -> list[Workload]:
        return [w for w in self.workloads.values() if w.ended is None]

    def rescan_pids(self) -> None:
        """Re-read every live workload's cgroup members into the pid cache."""
        now = self.clock()
        for workload in self.live():
            for pid in self._cgroup_pids(workload):
                self._pid_cache[pid] = (workload, now)

    def prune_pids(self, older_than: float = 10.0) -> int:
        """Re-check cached pids not verified for `older_than` seconds.

        A pid whose process is gone, or now sits in another cgroup, is
        dropped, so a reused pid is never charged to the old workload. The
        age threshold leaves the (millisecond) audit queue time to deliver
        a dead process's last records first. Returns how many were dropped.
        """
        now = self.clock()
        dropped = 0
        for pid, (workload, stamp) in list(self._pid_cache.items()):
            if workload is UNMANAGED or now - stamp < older_than:
                continue
            current = self._from_proc(pid)
            if current is workload or (current is None and workload.pid == pid
                                       and os.path.exists(f"{self.proc_root}/{pid}")):
                self._pid_cache[pid] = (workload, now)
            else:
                del self._pid_cache[pid]
                dropped += 1
        return dropped

    # -- attribution ------------------------------------------------------------

    def attribute(self, pid: int, ses: int | None = None) -> Workload:
        """The workload a record of `pid` (in audit session `ses`) belongs to.

        A session id enforcer started for a workload is exact and outlives
        every process in it, so it is asked first; sessions of ordinary
        logins are never registered and fall through to pid and cgroup.
        """
        if ses is not None:
            by_session = self._by_session.get(ses)
            if by_session is not None:
                return by_session
        hit = self._pid_cache.get(pid)
        if hit is not None:
            workload, stamp = hit
            if workload is not UNMANAGED or self.clock() - stamp <= _NEGATIVE_TTL:
                return workload
        return self._attribute_slow(pid, ses)

    def _attribute_slow(self, pid: int, ses: int | None = None) -> Workload:
        if self.refresh():  # a record written since our last look may name it
            if ses is not None and ses in self._by_session:
                return self._by_session[ses]
            hit = self._pid_cache.get(pid)
            if hit is not None and hit[0] is not UNMANAGED:
                return hit[0]
        workload = self._from_proc(pid)
        if workload is None and self.forks is not None:
            self.forks.drain()  # type: ignore[attr-defined]
            workload = self._from_ancestors(pid)
        if workload is None and self.refresh():
            # A record written since our last look may be the answer.
            hit = self._pid_cache.get(pid)
            workload = hit[0] if hit and hit[0] is not UNMANAGED else None
            if workload is None:
                workload = self._from_proc(pid) or self._from_ancestors(pid)
        if workload is None:
            workload = UNMANAGED
        self._pid_cache[pid] = (workload, self.clock())
        return workload

    def _from_proc(self, pid: int) -> Workload | None:
        try:
            with open(f"{self.proc_root}/{pid}/cgroup") as f:
                text = f.read()
        except OSError:
            return None
        return self.match_cgroups(parse_proc_cgroup(text))

    def match_cgroups(self, entries: list[tuple[str, str]]) -> Workload | None:
        by_cgroup = self._by_cgroup
        if not by_cgroup:
            return None
        for controllers, path in entries:
            keys = [controllers] + (controllers.split(",") if "," in controllers else [])
            # Walk up: a process in a sub-cgroup (e.g. a container's
            # systemd-managed children) still belongs to the workload.
            while True:
                for key in keys:
                    found = by_cgroup.get((key, path))
                    if found is not None and found.ended is None:
                        return found
                if path in ("/", ""):
                    break
                path = path.rsplit("/", 1)[0] or "/"
        return None

    def _from_ancestors(self, pid: int) -> Workload | None:
        if self.forks is None:
            return None
        for ancestor in self.forks.ancestors(pid):  # type: ignore[attr-defined]
            hit = self._pid_cache.get(ancestor)
            if hit is not None and hit[0] is not UNMANAGED:
                return hit[0]
            found = self._from_proc(ancestor)
            if found is not None:
                self._pid_cache[ancestor] = (found, self.clock())
                return found
        return None
