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

    def pids_of(self, workload: Workload) -> set[int]:
        pids = _pids_in(self.member_dirs(workload))
        if not pids and workload.pid is not None:
            try:
                root = psutil.Process(workload.pid)
                pids = {workload.pid} | {c.pid for c in root.children(recursive=True)}
            except psutil.Error:
                pass
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
