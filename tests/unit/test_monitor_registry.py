"""Attribution: registry records -> workloads, pid -> workload, malformed
records counted once, the cardinality cap and expiry."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer import registry
from enforcer.monitor.registry import OVERFLOW_LABEL, UNMANAGED, WorkloadIndex, parse_proc_cgroup
from tests.monitor_helpers import write_workload


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_proc(root: Path, pid: int, lines: str) -> None:
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / str(pid) / "cgroup").write_text(lines)


def make_index(tmp_path: Path, **kw) -> tuple[WorkloadIndex, list[str]]:  # type: ignore[no-untyped-def]
    bad: list[str] = []
    index = WorkloadIndex(str(tmp_path / "rt"), proc_root=str(tmp_path / "proc"),
                          on_malformed=bad.append, **kw)
    return index, bad


def test_parse_proc_cgroup() -> None:
    assert parse_proc_cgroup("4:memory:/a/b\n0::/x\n1:name=systemd:/\nbogus\n") == [
        ("memory", "/a/b"), ("", "/x"), ("name=systemd", "/")]


def test_attribution_by_record_pid_cgroup_and_subcgroup(tmp_path: Path) -> None:
    rt = str(tmp_path / "rt")
    write_workload(rt, "w1", pid=100, policy="web", cgroups={"memory": "/enforcer/w1", "": "/e/w1"})
    fake_proc(tmp_path / "proc", 200, "4:memory:/enforcer/w1\n0::/e/w1\n")
    fake_proc(tmp_path / "proc", 300, "4:memory:/\n0::/e/w1/sub/deeper\n")
    fake_proc(tmp_path / "proc", 400, "4:memory:/other\n0::/other\n")
    index, bad = make_index(tmp_path)
    assert index.refresh()
    assert index.attribute(100).id == "w1"  # record pid, no /proc needed
    assert index.attribute(200).id == "w1"  # /proc/PID/cgroup
    assert index.attribute(300).id == "w1"  # a sub-cgroup of the workload's
    assert index.attribute(400) is UNMANAGED
    assert index.attribute(999) is UNMANAGED  # gone from /proc: unmanaged, not dropped
    assert bad == []


def test_root_cgroup_in_a_record_claims_nothing(tmp_path: Path) -> None:
    write_workload(str(tmp_path / "rt"), "w1", pid=100, cgroups={"memory": "/"})
    fake_proc(tmp_path / "proc", 200, "4:memory:/\n")
    index, _ = make_index(tmp_path)
    index.refresh()
    assert index.attribute(200) is UNMANAGED


def test_a_record_written_after_a_miss_is_found_on_the_next_record(tmp_path: Path) -> None:
    index, _ = make_index(tmp_path)
    index.refresh()
    rt = str(tmp_path / "rt")
    write_workload(rt, "late", pid=555)
    # No poll in between: the miss path re-reads the registry itself.
    assert index.attribute(555).id == "late"


def test_fork_ancestry_attributes_a_dead_child(tmp_path: Path) -> None:
    class Forks:
        def __init__(self) -> None:
            self.parents = {7001: 7000, 7002: 7001}
            self.drained = 0

        def drain(self) -> int:
            self.drained += 1
            return 0

        def ancestors(self, pid: int) -> list[int]:
            chain = []
            while pid in self.parents:
                pid = self.parents[pid]
                chain.append(pid)
            return chain

    forks = Forks()
    write_workload(str(tmp_path / "rt"), "w", pid=7000)
    index, _ = make_index(tmp_path, forks=forks)
    index.refresh()
    assert index.attribute(7002).id == "w"  # grandchild, never seen in /proc
    assert forks.drained == 1


def test_malformed_registry_files_are_counted_once_per_version(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    write_workload(str(rt), "good", pid=1)
    wdir = Path(registry.workloads_dir(str(rt)))
    (wdir / "bad.json").write_text("{not json")
    (wdir / "wrongname.json").write_text(json.loads(json.dumps(
        (wdir / "good.json").read_text())))
    index, bad = make_index(tmp_path)
    index.refresh()
    assert sorted(w.id for w in index.live()) == ["good"]
    assert bad == ["registry_record", "registry_record"]
    index.refresh(force=True)
    assert len(bad) == 2  # unchanged files are not counted again
    (wdir / "bad.json").write_text('{"version": 1}')
    index.refresh(force=True)
    assert len(bad) == 3  # a new version of a bad file is a new bad input


def test_cap_on_tracked_workloads_and_expiry(tmp_path: Path) -> None:
    clock = Clock()
    rt = str(tmp_path / "rt")
    for i in range(3):
        write_workload(rt, f"w{i}", pid=100 + i)
    expired: list[str] = []
    index, _ = make_index(tmp_path, max_workloads=2, grace=60, clock=clock)
    index.on_expired.append(lambda w: expired.append(w.id))
    index.refresh()
    labels = sorted(w.label for w in index.live())
    assert labels.count(OVERFLOW_LABEL) == 1 and len(set(labels)) == 3
    labelled = [w for w in index.live() if w.label != OVERFLOW_LABEL]
    registry.remove_record(labelled[0].id, rt)
    index.refresh()
    assert labelled[0].ended is not None
    # Still attributed during the grace period (late records of a dead workload).
    assert index.attribute(labelled[0].pid or 0).id == labelled[0].id
    clock.now += 30
    assert index.expire() == []
    clock.now += 31
    assert [w.id for w in index.expire()] == [labelled[0].id]
    assert expired == [labelled[0].id]
    write_workload(rt, "new", pid=200)
    index.refresh()
    assert index.workloads["new"].label == "new"  # the freed slot is reused


def test_prune_drops_pids_that_moved_or_died(tmp_path: Path) -> None:
    clock = Clock()
    rt = str(tmp_path / "rt")
    write_workload(rt, "w", pid=100, cgroups={"memory": "/w"})
    fake_proc(tmp_path / "proc", 200, "4:memory:/w\n")
    index, _ = make_index(tmp_path, clock=clock)
    index.refresh()
    assert index.attribute(200).id == "w"
    fake_proc(tmp_path / "proc", 200, "4:memory:/elsewhere\n")  # pid reused by another process
    clock.now += 11
    assert index.prune_pids(10) >= 1
    assert index.attribute(200) is UNMANAGED


record_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["version", "id", "kind", "policy", "policy_hash", "mode",
                                     "cgroups", "pid", "limits", "started"]),
                    record_values, max_size=10).map(lambda d: json.dumps(d).encode())))
def test_fuzz_registry_files_never_crash_and_bad_ones_are_counted(tmp_path_factory, data: bytes) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("fuzz")
    wdir = Path(registry.workloads_dir(str(tmp / "rt")))
    wdir.mkdir(parents=True)
    (wdir / "x.json").write_bytes(data)
    index, bad = make_index(tmp)
    index.refresh()
    try:
        ok = registry.read_record(str(wdir / "x.json")).id == "x"
    except Exception:
        ok = False
    if ok:
        assert [w.id for w in index.live()] == ["x"] and bad == []
    else:
        assert index.live() == [] and bad == ["registry_record"]
    index.attribute(os.getpid())  # and attribution still works


def test_attribution_by_audit_session_needs_no_proc_entry(tmp_path: Path) -> None:
    """A record's audit session attributes any pid in it, even one long gone."""
    rt = str(tmp_path / "rt")
    record = registry.WorkloadRecord(id="w1", kind="run", policy="web", policy_hash="sha256:t",
                                     mode="enforce", cgroups={}, pid=100, audit_session=4242)
    registry.write_record(record, rt)
    index, bad = make_index(tmp_path)
    assert index.refresh()
    assert index.attribute(5555, ses=4242).id == "w1"  # no /proc/5555 at all
    assert index.attribute(5555, ses=7) is UNMANAGED  # somebody's login session
    assert index.attribute(5556) is UNMANAGED
    assert bad == []


def test_audit_session_mapping_is_dropped_with_the_workload(tmp_path: Path) -> None:
    clock = Clock()
    rt = str(tmp_path / "rt")
    record = registry.WorkloadRecord(id="w1", kind="run", policy="web", policy_hash="sha256:t",
                                     mode="enforce", cgroups={}, pid=100, audit_session=4243)
    path = registry.write_record(record, rt)
    index, _ = make_index(tmp_path, grace=10.0, clock=clock)
    index.refresh()
    os.unlink(path)
    index.refresh(force=True)
    # Records of its last processes may still arrive during the grace period.
    assert index.attribute(1, ses=4243).id == "w1"
    clock.now += 11
    index.expire()
    assert index.attribute(1, ses=4243) is UNMANAGED


# -- stale records (issue 19, point 6) ------------------------------------------


def test_a_record_whose_process_is_gone_is_stale_until_it_changes(tmp_path: Path) -> None:
    from tests.monitor_helpers import fake_process

    rt, proc = str(tmp_path / "rt"), str(tmp_path / "proc")
    write_workload(rt, "gone", pid=100, policy="restricted")
    write_workload(rt, "live", pid=200, policy="restricted")
    fake_process(proc, 200)
    index, _ = make_index(tmp_path)
    index.refresh()
    assert [w.id for w in index.sweep_stale()] == ["gone"]
    assert [w.id for w in index.live() if not w.stale] == ["live"]
    assert index.stale_by_policy() == {"restricted": 1}
    assert index.sweep_stale() == [] and not index.refresh(force=True)  # reported once
    # Still attributed: records of its last moments may still arrive.
    assert index.attribute(100).id == "gone"
    # Rewritten (a restarted container under the same id): judged afresh.
    write_workload(rt, "gone", pid=300, policy="restricted")
    fake_process(proc, 300)
    assert index.refresh(force=True) and index.sweep_stale() == []
    assert sorted(w.id for w in index.live() if not w.stale) == ["gone", "live"]
    assert index.stale_by_policy() == {}
    # Removed by its owner: ended, no longer reported.
    write_workload(rt, "gone", pid=400, policy="restricted")
    index.refresh(force=True)
    assert [w.id for w in index.sweep_stale()] == ["gone"]
    registry.remove_record("gone", rt)
    index.refresh(force=True)
    assert index.stale_by_policy() == {} and index.workloads["gone"].ended is not None


def test_pid_reuse_and_zombies_make_a_record_stale(tmp_path: Path) -> None:
    from tests.monitor_helpers import fake_process

    rt, proc = str(tmp_path / "rt"), str(tmp_path / "proc")
    write_workload(rt, "reused", pid=100)
    write_workload(rt, "zombie", pid=200)
    fake_process(proc, 100, starttime=5)
    fake_process(proc, 200, state="Z")
    index, _ = make_index(tmp_path)
    index.refresh()
    assert [w.id for w in index.sweep_stale()] == ["zombie"]
    fake_process(proc, 100, starttime=6)  # the pid now belongs to a newer process
    assert [w.id for w in index.sweep_stale()] == ["reused"]


def test_a_process_younger_than_its_record_is_not_the_one_it_names(tmp_path: Path) -> None:
    from tests.monitor_helpers import fake_process

    rt, proc = str(tmp_path / "rt"), tmp_path / "proc"
    path = write_workload(rt, "w", pid=100)
    written = os.stat(path).st_mtime
    ticks = os.sysconf("SC_CLK_TCK")
    proc.mkdir()
    # Boot 1000 s before the record; the process started 990 s after boot
    # (10 s before the record: fine) or 1010 s after (later: a reused pid).
    (proc / "stat").write_text(f"cpu 1 2 3\nbtime {int(written) - 1000}\n")
    fake_process(str(proc), 100, starttime=990 * ticks)
    index, _ = make_index(tmp_path)
    index.refresh()
    assert index.sweep_stale() == []
    write_workload(rt, "w", pid=100)
    os.utime(path, (written, written))
    fake_process(str(proc), 100, starttime=1010 * ticks)
    index.refresh(force=True)
    assert [w.id for w in index.sweep_stale()] == ["w"]


def test_a_workload_whose_main_process_exited_runs_while_its_cgroup_has_processes(
        tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cgroup.procs").write_text("4242\n")
    write_workload(str(tmp_path / "rt"), "w", pid=100, cgroups={"memory": "/w"})
    index, _ = make_index(tmp_path, cgroup_paths=lambda w: [str(cg)])
    index.refresh()
    assert index.sweep_stale() == []
    (cg / "cgroup.procs").write_text("")
    assert [w.id for w in index.sweep_stale()] == ["w"]
