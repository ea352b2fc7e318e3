"""Dynamic user allocation (enforcer/apply/dynamic_user.py): distinct ids
under concurrent starts, given back with the workload, stale locks of dead
holders reclaimed only when their workload is gone, the range and the lock
directory checked."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from enforcer.apply import dynamic_user
from enforcer.apply.dynamic_user import allocate, id_range
from enforcer.errors import ApplyError

SMALL = {dynamic_user.RANGE_ENV: "70000-70003"}  # four ids


def lock_dir(tmp_path: Path) -> str:
    d = tmp_path / "uids"
    d.mkdir(mode=0o700)
    return str(d)


def test_ids_are_distinct_while_held_and_reused_after_release(tmp_path: Path) -> None:
    d = lock_dir(tmp_path)
    held = [allocate(f"w{i}", [], directory=d, environ=SMALL, passwd_files=()) for i in range(4)]
    assert sorted(h.uid for h in held) == [70000, 70001, 70002, 70003]
    with pytest.raises(ApplyError) as e:
        allocate("w5", [], directory=d, environ=SMALL, passwd_files=())
    assert "every id of the range is in use" in str(e.value)
    held[2].release()
    again = allocate("w6", [], directory=d, environ=SMALL, passwd_files=())
    assert again.uid == held[2].uid
    assert Path(d, str(again.uid)).read_text().splitlines()[0] == "w6"


def _take_and_report(d: str, queue: "multiprocessing.Queue[int]", barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    uid = allocate(f"p{os.getpid()}", [], directory=d, environ={dynamic_user.RANGE_ENV:
                                                                "70000-70015"},
                   passwd_files=()).uid
    queue.put(uid)
    barrier.wait()  # type: ignore[attr-defined]  # hold it until every process has one


def test_concurrent_allocations_never_share_an_id(tmp_path: Path) -> None:
    """16 processes start together and take all 16 ids of the range: a
    shared id (a race between the check and the take) would leave one
    process without one."""
    d = lock_dir(tmp_path)
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    barrier = ctx.Barrier(16)
    procs = [ctx.Process(target=_take_and_report, args=(d, queue, barrier)) for _ in range(16)]
    for p in procs:
        p.start()
    uids = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(uids) == list(range(70000, 70016))


def test_a_dead_holders_id_is_reclaimed_unless_its_workload_lives_on(tmp_path: Path) -> None:
    d = lock_dir(tmp_path)
    one = {dynamic_user.RANGE_ENV: "70000-70000"}
    procs = tmp_path / "cgroup.procs"
    # A supervisor killed with SIGKILL: its lock is gone with it, the file stays.
    pid = os.fork()
    if pid == 0:
        allocate("killed", [str(procs)], directory=d, environ=one, passwd_files=())
        os._exit(0)
    os.waitpid(pid, 0)
    # Its workload left a process behind in its cgroup: the id stays taken.
    procs.write_text("4242\n")
    with pytest.raises(ApplyError):
        allocate("next", [], directory=d, environ=one, passwd_files=())
    # Gone (cgroup removed): the id is free again.
    procs.unlink()
    assert allocate("next", [], directory=d, environ=one, passwd_files=()).uid == 70000


def test_ids_of_real_users_and_groups_are_skipped(tmp_path: Path) -> None:
    d = lock_dir(tmp_path)
    passwd = tmp_path / "passwd"
    passwd.write_text("a:x:70000:70000::/:/bin/sh\nb:x:70001:70001::/:/bin/sh\n")
    group = tmp_path / "group"
    group.write_text("g:x:70002:\n")
    got = allocate("w", [], directory=d, environ=SMALL, passwd_files=(str(passwd), str(group)))
    assert got.uid == 70003


@pytest.mark.parametrize("text", ["", "70000-70010", "1000-1000"])
def test_range_accepts(text: str) -> None:
    first, last = id_range({dynamic_user.RANGE_ENV: text} if text else {})
    assert 1000 <= first <= last


@pytest.mark.parametrize("text", ["0-100", "60000-70000", "65534-65534", "70000", "a-b",
                                  "80000-70000", "70000-4294967295"])
def test_range_refuses(text: str) -> None:
    with pytest.raises(ApplyError) as e:
        id_range({dynamic_user.RANGE_ENV: text})
    assert e.value.step == "user" and dynamic_user.RANGE_ENV in str(e.value)


def test_default_range_is_outside_systemd_and_debian_ranges() -> None:
    first, last = dynamic_user.DEFAULT_RANGE
    assert first > 65535  # systemd's DynamicUser 61184-65519, Debian's 60000-64999, nobody
    assert last < 100000  # shadow's subordinate ids (/etc/subuid) start there


def test_lock_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "uids"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(ApplyError) as e:
        allocate("w", [], directory=str(d), environ=SMALL, passwd_files=())
    assert "not writable by group or others" in str(e.value)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ApplyError):
        allocate("w", [], directory=str(link), environ=SMALL, passwd_files=())
