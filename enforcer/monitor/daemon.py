"""The monitor's main loop: one thread reads the violation source and does
the periodic work (registry, cgroup limits, process facts); the HTTP server
answers scrapes from its own threads, reading the metrics under a lock.

Keeping ingest and bookkeeping on one thread means the registry index and
the pid cache are never touched concurrently; the price is that a slow
poll delays reading the socket a little, which its large buffer absorbs.
"""

from __future__ import annotations

import os
import selectors
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from enforcer.monitor.events import EventLog, iso_time, json_value
from enforcer.monitor.landlock import RECORD_TYPES as LANDLOCK_RECORD_TYPES
from enforcer.monitor.landlock import LandlockDenial, LandlockRecords
from enforcer.monitor.metrics import MonitorMetrics
from enforcer.monitor.registry import OVERFLOW_LABEL, UNMANAGED, Workload, WorkloadIndex
from enforcer.monitor.sources.audit import MalformedRecord, parse_seccomp_record
from enforcer import registry as reg
from enforcer.monitor.sources.cgroups import CgroupLocator, CgroupRoots, LimitPoller, LimitWatcher
from enforcer.monitor.syscalls import SyscallNames, arch_name

# A daemon-mode monitor whose main loop has not read for this long gives up
# the audit daemon's place (the watchdog thread): while nobody reads, the
# kernel makes every process that logs an audit record wait.
DAEMON_STALL_LIMIT = 10.0


class Source(Protocol):
    name: str
    complete: bool
    mode: str  # how it reads: "daemon" / "multicast" (audit), "kmsg"
    registered: bool  # the kernel's audit daemon right now
    notes: list[str]  # what it decided and why; printed and cleared by the monitor

    def open(self) -> None: ...
    def fileno(self) -> int: ...  # may change after drain() (audit: yielding to auditd)
    def close(self) -> None: ...
    def drain(self, handle: Any, on_lost: Any, on_malformed: Any, limit: int = ...) -> int: ...
    def account(self, on_lost: Any, on_estimated: Any, final: bool = ...) -> None: ...
    def detach(self, on_lost: Any) -> None: ...  # no new records from now on
    def abandon(self) -> bool: ...  # stop being the audit daemon, from any thread


@dataclass
class MonitorConfig:
    runtime_dir: str
    cgroup_root: str = "/sys/fs/cgroup"
    proc_root: str = "/proc"
    events_path: str | None = None
    events_max_bytes: int = 64 << 20
    events_backups: int = 5
    max_workloads: int = 1000
    grace: float = 300.0
    poll_interval: float = 1.0
    procs_interval: float = 5.0
    prune_interval: float = 10.0
    fork_tracking: bool = True
    # The syscalls of `enforcer record` sessions: "count" them apart
    # (enforcer_recorded_syscalls_total) or "ignore" them. Never violations.
    recordings: str = "count"


class Monitor:
    def __init__(self, config: MonitorConfig, source: Source | None,
                 metrics: MonitorMetrics | None = None) -> None:
        self.config = config
        self.source = source
        source_name = source.name if source is not None else "audit"
        self.metrics = metrics or MonitorMetrics(sources=(source_name,))
        if source is not None:
            self.metrics.source_info[source.name] = source.complete
        self.names = SyscallNames()
        self.events = (EventLog(config.events_path, config.events_max_bytes, config.events_backups)
                       if config.events_path else None)
        self.forks = None
        if config.fork_tracking:
            from enforcer.monitor.sources.forks import ForkTracker

            tracker = ForkTracker()
            try:
                tracker.open()
                self.forks = tracker
                self.metrics.fork_tracking = 1
            except OSError as e:
                print(f"enforcer monitor: fork tracking unavailable ({e.strerror}); processes "
                      "killed before they can be looked up count as unmanaged", file=sys.stderr)
        self.locator = CgroupLocator(CgroupRoots.detect(config.cgroup_root))
        self.index = WorkloadIndex(config.runtime_dir, proc_root=config.proc_root,
                                   cgroup_paths=self.locator.member_dirs,
                                   max_workloads=config.max_workloads, grace=config.grace,
                                   on_malformed=self.metrics.count_malformed, forks=self.forks)
        self.limits = LimitPoller(self.locator, self._limit_event)
        self.watcher: LimitWatcher | None = None
        try:
            self.watcher = LimitWatcher(self.locator)
        except OSError as e:
            print(f"enforcer monitor: inotify unavailable ({e}); limit events of workloads that "
                  "end within a poll interval may be missed", file=sys.stderr)
        self.index.on_added.append(self._workload_added)
        self._facts: Any = None  # ProcessFacts, created on first use (imports psutil)
        self.index.on_ended.append(self._workload_ended)
        self.index.on_expired.append(self._workload_expired)
        self.heartbeat = time.monotonic()
        self._batch: dict[tuple[str, str, str, str], int] = {}
        self._recorded_batch: dict[tuple[str, str], int] = {}
        self._batch_events = 0
        self._count_recordings = config.recordings == "count"
        # Audit sessions of running recordings, for a cheap test before the
        # full parse: a recording can log hundreds of thousands of calls.
        self._recording_sessions: set[int] = set()
        self._last_exit_poll: dict[str, float] = {}
        self._workload_json: dict[str, tuple[Workload, str]] = {}
        self._process_json: dict[tuple[str | None, str | None], str] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.stopping = threading.Event()
        self._init_landlock()

    # -- the hot path --------------------------------------------------------------

    def handle_record(self, payload: bytes) -> None:
        """One type-1326 record body: parse, attribute, count, log."""
        if self._recording_sessions and self._recorded(payload):
            return
        try:
            record = parse_seccomp_record(payload)
        except MalformedRecord:
            self.metrics.count_malformed("audit_record")
            return
        self._batch_events += 1
        workload = self.index.attribute(record.pid, record.ses)
        if workload.recording:  # a recording that started since the last poll
            self._count_recorded(workload)
            return
        name = self.names.name(record.arch, record.syscall)
        action = record.action
        key = (workload.label, workload.policy, name or "unknown", action)
        self._batch[key] = self._batch.get(key, 0) + 1
        if self.events is not None:
            self.events.write_line(self._event_line(record, workload, name, action))

    def _recorded(self, payload: bytes) -> bool:
        """Counted as a recording's syscall, by its `ses=` alone? (the
        cheap path for the flood of a recording; no full parse)."""
        start = payload.find(b" ses=")
        if start < 0:
            return False
        end = payload.find(b" ", start + 5)
        try:
            ses = int(payload[start + 5:end if end > 0 else None])
        except ValueError:
            return False
        if ses not in self._recording_sessions:
            return False
        self._batch_events += 1
        self._count_recorded(self.index.attribute(0, ses))
        return True

    def _count_recorded(self, workload: Workload) -> None:
        if self._count_recordings:
            key = (workload.label, workload.policy)
            self._recorded_batch[key] = self._recorded_batch.get(key, 0) + 1

    def _event_line(self, record: Any, workload: Workload, name: str | None, action: str) -> str:
        """The JSON line of one violation, built from cached pieces.

        Same result as json-encoding the dict in docs/metrics.md, about
        twice as fast: the workload's fields and each (comm, exe) pair are
        encoded once, the rest are numbers and fixed names.
        """
        head = self._workload_json.get(workload.id)
        if head is None or head[0] is not workload:
            text = (f'"workload":{json_value(workload.id)},"policy":{json_value(workload.policy)},'
                    f'"mode":{json_value(workload.mode or None)},'
                    f'"container_id":{json_value(workload.container_id)}')
            if len(self._workload_json) > 4 * self.config.max_workloads:
                self._workload_json.clear()
            head = self._workload_json[workload.id] = (workload, text)
        key = (record.comm, record.exe)
        who = self._process_json.get(key)
        if who is None:
            who = f'"comm":{json_value(record.comm)},"exe":{json_value(record.exe)}'
            if len(self._process_json) > 4096:
                self._process_json.clear()
            self._process_json[key] = who
        uid = "null" if record.uid is None else record.uid
        syscall = "null" if name is None else f'"{name}"'
        return (f'{{"time":"{iso_time(record.time)}",{head[1]},"pid":{record.pid},"uid":{uid},'
                f'{who},"syscall":{syscall},"syscall_nr":{record.syscall},'
                f'"arch":"{arch_name(record.arch)}","action":"{action}","serial":{record.serial}}}\n')

    # -- Landlock denials (monitor/landlock.py) ------------------------------------

    def _init_landlock(self) -> None:
        """Landlock's audit records come through the same source, when it
        can hand on record types other than seccomp's."""
        self.landlock = LandlockRecords(self._landlock_denial, self.metrics.count_malformed)
        self._landlock_batch: dict[tuple[str, str, str], int] = {}
        # domain -> the workload its first attributed denial belonged to
        self._landlock_domains: dict[str, Workload] = {}
        add_handler = getattr(self.source, "add_handler", None)
        if add_handler is not None:
            add_handler(LANDLOCK_RECORD_TYPES, self.landlock.handle)

    def _landlock_denial(self, denial: LandlockDenial) -> None:
        """Attributed like a seccomp violation: by the denied process (pid and
        audit session of its SYSCALL record), else by the process that made
        its Landlock domain, else by an earlier denial of the same domain."""
        self._batch_events += 1
        workload = UNMANAGED
        if denial.pid is not None:
            workload = self.index.attribute(denial.pid, denial.ses)
        if not workload.managed and denial.domain_pid is not None:
            workload = self.index.attribute(denial.domain_pid)
        if not workload.managed:
            workload = self._landlock_domains.get(denial.domain, workload)
        elif denial.domain not in self._landlock_domains:
            if len(self._landlock_domains) > 4 * self.config.max_workloads:
                self._landlock_domains.clear()
            self._landlock_domains[denial.domain] = workload
        for access in denial.blockers:
            key = (workload.label, workload.policy, access)
            self._landlock_batch[key] = self._landlock_batch.get(key, 0) + 1
        if self.events is not None:
            self.events.write_line(self._landlock_line(denial, workload))

    def _landlock_line(self, denial: LandlockDenial, workload: Workload) -> str:
        what: dict[str, Any] = {"access": list(denial.blockers), "domain": denial.domain}
        for name in ("path", "port", "address", "target_pid", "target_comm", "domain_pid"):
            value = getattr(denial, name)
            if value is not None:
                what[name] = value
        syscall = (self.names.name(denial.arch, denial.syscall)
                   if denial.arch is not None and denial.syscall is not None else None)
        return json_value({
            "time": iso_time(denial.time), "workload": workload.id, "policy": workload.policy,
            "mode": workload.mode or None, "container_id": workload.container_id,
            "pid": denial.pid, "uid": denial.uid, "comm": denial.comm, "exe": denial.exe,
            "syscall": syscall, "landlock": what, "serial": denial.serial}) + "\n"

    def flush_batch(self) -> None:
        landlock, self._landlock_batch = self._landlock_batch, {}
        if landlock:
            self.metrics.count_landlock_denials(landlock)
        batch, self._batch = self._batch, {}
        recorded, self._recorded_batch = self._recorded_batch, {}
        n, self._batch_events = self._batch_events, 0
        source = self.source.name if self.source is not None else "audit"
        metrics = self.metrics
        with metrics.lock:
            table = metrics.violations
            for key, value in batch.items():
                table[key] = table.get(key, 0) + value
            recorded_table = metrics.recorded
            for key2, value in recorded.items():
                recorded_table[key2] = recorded_table.get(key2, 0) + value
            metrics.events[source] = metrics.events.get(source, 0) + n
            if batch or n:
                metrics.version += 1  # invalidates the cached /metrics body

    # -- periodic work -----------------------------------------------------------

    def _limit_event(self, workload: Workload, resource: str, event: str, n: int) -> None:
        self.metrics.count_limit_event(workload.label, workload.policy, resource, event, n)

    def _workload_added(self, workload: Workload) -> None:
        self._workload_json.pop(workload.id, None)  # its policy or mode may have changed
        if workload.recording:
            self._recording_sessions = self.index.recording_sessions()
            return  # nothing to watch: its `enforcer run` has the cgroup
        if self.watcher is not None:
            self.watcher.watch(workload)
        # First read now: a limit hit between the record's creation and the
        # watch is counted (the first read reports everything so far).
        self.limits.poll([workload])

    def _workload_ended(self, workload: Workload) -> None:
        # One last read while the cgroup may still exist: a limit hit just
        # before the workload ended must not be lost.
        self.limits.poll([workload])
        if self.watcher is not None:
            self.watcher.unwatch(workload.id)

    def _processes_exited(self, pids: list[int]) -> None:
        # The launcher removes the cgroup right after reaping the workload:
        # read the counters the moment one of its processes exits, while
        # they still exist (an OOM kill or a refused fork is often what
        # makes processes exit). Reads of one workload are spaced 20 ms
        # apart, except for its main process, whose exit ends it.
        now = time.monotonic()
        for pid in pids:
            workload = self.index.by_main_pid(pid)
            if workload is None:
                workload = self.index.known_member(pid)
                if workload is None or now - self._last_exit_poll.get(workload.id, 0.0) < 0.02:
                    continue
            self._last_exit_poll[workload.id] = now
            self.limits.poll([workload])

    def _limits_notified(self, ready: list[int]) -> None:
        assert self.watcher is not None
        changed, registry_changed, ooms = self.watcher.read(ready)
        if registry_changed:
            self._watch_registry()
            self.index.refresh()
        for workload_id in changed:
            workload = self.index.workloads.get(workload_id)
            if workload is None:
                continue
            emitted = self.limits.poll([workload])
            # A v1 OOM notification comes just before the kill; the oom_kill
            # counter moves a moment later. Retry briefly (OOMs are rare).
            tries = 0
            while workload_id in ooms and not emitted and tries < 50:
                time.sleep(0.001)
                emitted = self.limits.poll([workload])
                tries += 1

    def _workload_expired(self, workload: Workload) -> None:
        self._last_exit_poll.pop(workload.id, None)
        self.limits.forget(workload)
        if self._facts is not None:
            self._facts.forget(workload)
        if workload.label != OVERFLOW_LABEL:
            self.metrics.forget_workload(workload.label)

    def _watch_registry(self) -> None:
        """Watch the workloads directory, or its parent until it exists."""
        if self.watcher is None or self.watcher.registry_watched:
            return
        directory = reg.workloads_dir(self.config.runtime_dir)
        if not self.watcher.watch_registry(directory):
            self.watcher.watch_parent(os.path.dirname(directory))

    def poll(self) -> None:
        self.landlock.flush()  # denials whose SYSCALL record never came
        self._watch_registry()
        self.index.refresh()
        for workload in self.index.sweep_stale():
            print(f"enforcer monitor: workload {workload.id} (policy {workload.policy!r}, pid "
                  f"{workload.pid}): its process is gone but its registry record remains; "
                  "not counted as running (enforcer_registry_stale_records)",
                  file=sys.stderr, flush=True)
        self.metrics.set_stale_records(self.index.stale_by_policy())
        self.index.expire()
        self._recording_sessions = self.index.recording_sessions()
        live = self.live_workloads()
        self.limits.poll(live)
        by_policy: dict[str, int] = {}
        for workload in live:
            by_policy[workload.policy] = by_policy.get(workload.policy, 0) + 1
        self.metrics.set_workloads(by_policy)
        self.account_losses()

    def live_workloads(self) -> list[Workload]:
        """Running workloads (a recording is not one: its `enforcer run` is;
        nor is a workload whose record outlived its process)."""
        return [w for w in self.index.live() if not w.recording and not w.stale]

    def account_losses(self, final: bool = False) -> None:
        if self.source is not None:
            self.source.account(self._count_lost, self._count_lost_estimated, final)
            self.metrics.set_audit_daemon(self.source.mode == "daemon" and self.source.registered)

    def poll_facts(self) -> None:
        if self._facts is None:
            from enforcer.monitor.sources.procs import ProcessFacts

            self._facts = ProcessFacts(self.locator.member_dirs)
        self._facts.start_round()
        facts: dict[str, tuple[str, int, int, float]] = {}
        for workload in self.live_workloads():
            count, rss, cpu = self._facts.measure(workload)
            label = workload.label
            if label in facts:  # several workloads under _overflow: sum them
                policy, c0, r0, u0 = facts[label]
                facts[label] = (policy if policy == workload.policy else "_mixed",
                                c0 + count, r0 + rss, u0 + cpu)
            else:
                facts[label] = (workload.policy, count, rss, cpu)
        self.metrics.set_facts(facts)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Open the source and rediscover running workloads."""
        if self.source is not None:
            self.source.open()
            self.metrics.set_audit_daemon(self.source.mode == "daemon")
            self.say_notes()
        try:
            # So it can be watched from the start (enforcer run would make
            # it with the same mode); a read-only mount just means we watch
            # its parent until it appears.
            os.makedirs(reg.workloads_dir(self.config.runtime_dir), mode=0o755, exist_ok=True)
        except OSError:
            pass
        self.index.refresh(force=True)
        self.poll()

    def healthy(self) -> tuple[bool, str]:
        age = time.monotonic() - self.heartbeat
        limit = max(5.0, 3 * self.config.poll_interval)
        if self.stopping.is_set():
            return False, "stopping"
        if age > limit:
            return False, f"main loop stalled for {age:.1f}s"
        return True, "ok"

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self.stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def start_watchdog(self) -> threading.Thread | None:
        """In daemon mode: a thread that gives up the audit daemon's place
        if the main loop stops reading for DAEMON_STALL_LIMIT seconds (a
        bug, a stuck read of /proc). It cannot help a stopped process
        (SIGSTOP stops every thread); the kernel's send timeout does."""
        source = self.source
        if source is None or not source.registered:
            return None

        def watch() -> None:
            while not self.stopping.wait(1.0):
                if not source.registered:
                    return
                stalled = time.monotonic() - self.heartbeat
                if stalled > DAEMON_STALL_LIMIT and source.abandon():
                    print(f"enforcer monitor: WARNING: the main loop has not read for "
                          f"{stalled:.0f} s: gave up the audit daemon's place so that the kernel "
                          "does not make processes wait for it", file=sys.stderr, flush=True)
                    return

        thread = threading.Thread(target=watch, name="daemon-watchdog", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        cfg = self.config
        self.heartbeat = time.monotonic()
        self.start_watchdog()
        now = time.monotonic()
        next_poll = now + cfg.poll_interval
        next_facts = now
        next_prune = now + cfg.prune_interval
        # epoll, not select(): with 1,000 workloads there are more than
        # FD_SETSIZE eventfds.
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        source_fd = self.source.fileno() if self.source is not None else None
        if source_fd is not None:
            selector.register(source_fd, selectors.EVENT_READ, "source")
        if self.forks is not None and self.forks.sock is not None:
            selector.register(self.forks.sock.fileno(), selectors.EVENT_READ, "forks")
        watched: set[int] = set()
        lost = self._count_lost
        malformed = self.metrics.count_malformed
        try:
            while not self.stopping.is_set():
                if self.watcher is not None:
                    current = set(self.watcher.fds())
                    for fd in watched - current:
                        selector.unregister(fd)
                    for fd in current - watched:
                        selector.register(fd, selectors.EVENT_READ, "limits")
                    watched = current
                timeout = max(0.0, min(next_poll, next_facts) - time.monotonic())
                events = selector.select(timeout)
                kinds = {key.data for key, _ in events}
                if "forks" in kinds and self.forks is not None:
                    self.forks.drain()
                    self._processes_exited(self.forks.take_exits())
                if "limits" in kinds:
                    self._limits_notified([key.fd for key, _ in events if key.data == "limits"])
                if "source" in kinds and self.source is not None:
                    # Bounded batches so the periodic work below still runs
                    # during a long burst.
                    for _ in range(16):
                        drained = self.source.drain(self.handle_record, lost, malformed, 1024)
                        self.heartbeat = time.monotonic()  # reading: not stalled
                        if drained == 0:
                            break
                    self.flush_batch()
                    if self.events is not None:
                        self.events.flush()
                    if source_fd is not None and self.source.fileno() != source_fd:
                        # It yielded to another audit daemon: a new socket.
                        selector.unregister(source_fd)
                        source_fd = self.source.fileno()
                        selector.register(source_fd, selectors.EVENT_READ, "source")
                        self.metrics.set_audit_daemon(False)
                        # What the old socket still holds, counted now.
                        self.source.drain(self.handle_record, lost, malformed, 1024)
                        self.flush_batch()
                    self.say_notes()
                now = time.monotonic()
                self.heartbeat = now
                if now >= next_poll:
                    self.poll()
                    next_poll = now + cfg.poll_interval
                    if self.events is not None:
                        self.events.flush()
                if now >= next_prune:
                    self.index.prune_pids(cfg.prune_interval)
                    next_prune = now + cfg.prune_interval
                if now >= next_facts:
                    self.poll_facts()
                    next_facts = time.monotonic() + cfg.procs_interval
        finally:
            selector.close()

    def _count_lost(self, n: int) -> None:
        self.metrics.count_lost(self.source.name if self.source is not None else "audit", n)

    def _count_lost_estimated(self, n: int) -> None:
        self.metrics.count_lost_estimated(self.source.name if self.source is not None else "audit", n)

    def say_notes(self) -> None:
        """Print (once) what the source decided, e.g. its audit mode."""
        if self.source is not None and self.source.notes:
            for note in self.source.notes:
                print(f"enforcer monitor: {note}", file=sys.stderr, flush=True)
            self.source.notes.clear()

    def close(self) -> None:
        """Drain what is already queued, then close everything (idempotent)."""
        if self.source is not None:
            try:
                # A daemon-mode source unregisters here: from now on the
                # kernel waits for nobody on our account. Then what was
                # delivered before is read and counted.
                self.source.detach(self._count_lost)
                self.source.drain(self.handle_record, self._count_lost,
                                  self.metrics.count_malformed, 1 << 20)
            except (OSError, AssertionError):
                pass
            finally:
                self.landlock.flush(older_than=0.0)
                self.source.close()  # unregisters, if detach could not
            self.flush_batch()
            self.account_losses(final=True)
        if self.forks is not None:
            self.forks.close()
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.events is not None:
            self.events.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1


__all__ = ["Monitor", "MonitorConfig", "UNMANAGED"]
