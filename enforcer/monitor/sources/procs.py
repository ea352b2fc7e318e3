"""Per-workload process facts through psutil: process count, RSS, CPU time.

Processes are found through the workload's cgroup (cgroup.procs), or, for a
workload without one, its registered pid and that pid's descendants.
CPU time is exported as a counter, so it must never go down although an
exited process takes its CPU time with it from /proc: the last value seen
for each pid is kept, and when a pid disappears its time moves into the
workload's "exited" total.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

import psutil

from enforcer.monitor.registry import Workload

Facts = tuple[int, int, float]  # processes, rss bytes, cpu seconds


def _pids_in(directories: Iterable[str]) -> set[int]:
    pids: set[int] = set()
    for directory in directories:
        try:
            with open(os.path.join(directory, "cgroup.procs"), "rb") as f:
                pids.update(int(x) for x in f.read().split())
            return pids
        except (OSError, ValueError):
            continue
    return pids


class ProcessFacts:
    def __init__(self, member_dirs: Callable[[Workload], list[str]]) -> None:
        self.member_dirs = member_dirs
        self._exited_cpu: dict[str, float] = {}
        self._pid_cpu: dict[str, dict[int, float]] = {}
        # ppid -> child pids, read once per round (start_round): asking
        # psutil for each workload's children reads every /proc/PID/stat
        # once per workload, seconds with a thousand workloads, during which
        # the monitor's main loop reads no audit record.
        self._children: dict[int, list[int]] | None = None

    def start_round(self) -> None:
        """The process table changes between rounds: read it afresh."""
        self._children = None

    def _descendants(self, pid: int) -> set[int]:
        if self._children is None:
            children: dict[int, list[int]] = {}
            for process in psutil.process_iter(["ppid"]):
                ppid = process.info["ppid"]
                if ppid is not None:
                    children.setdefault(ppid, []).append(process.pid)
            self._children = children
        found = {pid}
        stack = [pid]
        while stack:
            for child in self._children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def pids_of(self, workload: Workload) -> set[int]:
        pids = _pids_in(self.member_dirs(workload))
        if not pids and workload.pid is not None and psutil.pid_exists(workload.pid):
            pids = self._descendants(workload.pid)
        return pids

    def measure(self, workload: Workload) -> Facts:
        count = 0
        rss = 0
        seen: dict[int, float] = {}
        for pid in self.pids_of(workload):
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                seen[pid] = times.user + times.system
                count += 1
            except psutil.Error:
                continue  # exited between the listing and the look
        previous = self._pid_cpu.get(workload.id, {})
        exited = self._exited_cpu.get(workload.id, 0.0)
        exited += sum(cpu for pid, cpu in previous.items() if pid not in seen)
        self._exited_cpu[workload.id] = exited
        self._pid_cpu[workload.id] = seen
        return count, rss, exited + sum(seen.values())

    def forget(self, workload: Workload) -> None:
        self._exited_cpu.pop(workload.id, None)
        self._pid_cpu.pop(workload.id, None)
