"""Limit events from v1 and v2 cgroup files, against fixture trees."""

from __future__ import annotations

from pathlib import Path

from enforcer.monitor.registry import Workload
from enforcer.monitor.sources.cgroups import CgroupLocator, CgroupRoots, LimitPoller, read_counters


def v2_tree(root: Path, rel: str, memory_events: str, pids_events: str, cpu_stat: str) -> None:
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    d = root / rel.lstrip("/")
    d.mkdir(parents=True)
    (d / "cgroup.controllers").write_text("cpu memory pids\n")
    (d / "memory.events").write_text(memory_events)
    (d / "pids.events").write_text(pids_events)
    (d / "cpu.stat").write_text(cpu_stat)
    (d / "cgroup.procs").write_text("11\n12\n")


def v1_tree(root: Path, rel: str, failcnt: int, oom_control: str, pids_max: int,
            throttled: int) -> None:
    for ctrl in ("memory", "pids", "cpu,cpuacct"):
        (root / ctrl / rel.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / "memory" / rel.lstrip("/") / "memory.failcnt").write_text(f"{failcnt}\n")
    (root / "memory" / rel.lstrip("/") / "memory.oom_control").write_text(oom_control)
    (root / "pids" / rel.lstrip("/") / "pids.events").write_text(f"max {pids_max}\n")
    (root / "cpu,cpuacct" / rel.lstrip("/") / "cpu.stat").write_text(
        f"nr_periods 10\nnr_throttled {throttled}\nthrottled_time 5\n")


def test_detect_roots(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    assert CgroupRoots.detect(str(tmp_path)) == CgroupRoots(v1=None, v2=str(tmp_path))
    hybrid = tmp_path / "h"
    (hybrid / "unified").mkdir(parents=True)
    (hybrid / "unified" / "cgroup.controllers").write_text("")
    assert CgroupRoots.detect(str(hybrid)) == CgroupRoots(v1=str(hybrid), v2=str(hybrid / "unified"))


def test_v2_counters(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/e/w", "low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
            "max 3\n", "usage_usec 100\nnr_periods 4\nnr_throttled 2\nthrottled_usec 9\n")
    locator = CgroupLocator(CgroupRoots.detect(str(tmp_path)))
    w = Workload(id="w", policy="p", cgroups={"": "/e/w"})
    assert read_counters(locator, w) == {
        ("memory", "oom"): 1, ("memory", "oom_kill"): 1, ("memory", "max"): 5,
        ("memory", "high"): 2, ("pids", "max"): 3, ("cpu", "throttled"): 2}
    assert locator.member_dirs(w) == [str(tmp_path / "e" / "w")]


def test_v1_counters_with_a_comma_hierarchy(tmp_path: Path) -> None:
    v1_tree(tmp_path, "/enforcer/w", 7, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", 4, 6)
    locator = CgroupLocator(CgroupRoots(v1=str(tmp_path), v2=None))
    w = Workload(id="w", policy="p", cgroups={"memory": "/enforcer/w", "pids": "/enforcer/w",
                                              "cpu,cpuacct": "/enforcer/w"})
    assert read_counters(locator, w) == {
        ("memory", "max"): 7, ("memory", "oom_kill"): 2, ("pids", "max"): 4, ("cpu", "throttled"): 6}


def test_poller_reports_increases_only_and_first_read_in_full(tmp_path: Path) -> None:
    v1_tree(tmp_path, "/w", 0, "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n", 2, 0)
    locator = CgroupLocator(CgroupRoots(v1=str(tmp_path), v2=None))
    w = Workload(id="w", policy="p", cgroups={"memory": "/w", "pids": "/w"})
    events: list[tuple[str, str, str, int]] = []
    poller = LimitPoller(locator, lambda wl, r, e, n: events.append((wl.id, r, e, n)))
    assert poller.poll([w]) == 2
    assert events == [("w", "pids", "max", 2)]  # hits before we started still count
    assert poller.poll([w]) == 0
    (tmp_path / "pids" / "w" / "pids.events").write_text("max 5\n")
    (tmp_path / "memory" / "w" / "memory.oom_control").write_text(
        "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n")
    poller.poll([w])
    assert events[1:] == [("w", "memory", "oom", 1), ("w", "pids", "max", 3)]
    poller.poll([w])  # still under_oom: not a new OOM
    assert len(events) == 3
    # The cgroup vanishes and comes back empty: nothing is counted twice.
    (tmp_path / "pids" / "w" / "pids.events").write_text("max 1\n")
    poller.poll([w])
    assert len(events) == 3


def test_missing_cgroup_is_quiet(tmp_path: Path) -> None:
    locator = CgroupLocator(CgroupRoots(v1=str(tmp_path), v2=None))
    w = Workload(id="w", policy="p", cgroups={"memory": "/nope"})
    assert read_counters(locator, w) == {}
    assert LimitPoller(locator, lambda *a: None).poll([w]) == 0


def test_watcher_reports_v2_changes_and_registry_changes(tmp_path: Path) -> None:
    import select

    from enforcer.monitor.sources.cgroups import LimitWatcher

    root = tmp_path / "cg"
    root.mkdir()
    v2_tree(root, "/e/w", "max 0\noom 0\noom_kill 0\n", "max 0\n", "nr_throttled 0\n")
    registry_dir = tmp_path / "rt" / "workloads"
    locator = CgroupLocator(CgroupRoots.detect(str(root)))
    watcher = LimitWatcher(locator)
    try:
        watcher.watch_parent(str(registry_dir.parent.parent))  # "rt" does not exist yet
        (tmp_path / "rt").mkdir()
        ready = select.select(watcher.fds(), [], [], 2)[0]
        assert watcher.read(ready)[1] is True  # told to look again
        registry_dir.mkdir()
        assert watcher.watch_registry(str(registry_dir))
        (registry_dir / "w.json").write_text("{}")
        ready = select.select(watcher.fds(), [], [], 2)[0]
        assert watcher.read(ready) == (set(), True, set())

        w = Workload(id="w", policy="p", cgroups={"": "/e/w"})
        watcher.watch(w)
        (root / "e" / "w" / "pids.events").write_text("max 1\n")
        ready = select.select(watcher.fds(), [], [], 2)[0]
        assert watcher.read(ready) == ({"w"}, False, set())
        watcher.unwatch("w")
        (root / "e" / "w" / "memory.events").write_text("max 1\noom 1\noom_kill 1\n")
        assert watcher.read(select.select(watcher.fds(), [], [], 0.2)[0]) == (set(), False, set())
    finally:
        watcher.close()
