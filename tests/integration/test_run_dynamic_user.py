"""Dynamic users for real: concurrent `enforcer run`s under `restricted`
each get a uid of their own from the documented range, the registry record
names it, files the workload creates are owned by it, and it is given back
when the workload ends (its lock is free again)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import uuid
from typing import Iterator

import pytest

from enforcer.apply import dynamic_user
from run_helpers import (PYTHON, REPO, pids_with_arg, process_ids, require_root, scratch_dir,
                         wait_for)
from tests import session

pytestmark = [pytest.mark.root]


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-dynuser-")
    yield d
    session.remove_tree(d)


def test_concurrent_workloads_get_distinct_ids_and_give_them_back(work: str) -> None:
    runtime = os.path.join(work, "runtime")
    env = {**os.environ, "ENFORCER_CACHE_DIR": os.path.join(work, "cache"),
           "ENFORCER_RUNTIME_DIR": runtime}
    # Compile once, so the six start at once rather than six compiles.
    subprocess.run([PYTHON, "-m", "enforcer", "run", "--policy", "restricted", "--", "true"],
                   cwd=REPO, env=env, check=True)
    markers = [f"600.{uuid.uuid4().int % 10**9:09d}" for _ in range(6)]
    names = [session.unique("t-dyn-") for _ in markers]
    procs = [subprocess.Popen([PYTHON, "-m", "enforcer", "run", "--policy", "restricted",
                               "--name", name, "--", "sleep", marker], cwd=REPO, env=env,
                              stderr=subprocess.DEVNULL)
             for name, marker in zip(names, markers)]
    try:
        pids = [wait_for(lambda m=m: (pids_with_arg(m, "sleep") or [None])[0],
                         what="a workload") for m in markers]
        uids = [process_ids(pid)[0] for pid in pids]
        first, last = dynamic_user.DEFAULT_RANGE
        assert len(set(uids)) == 6 and all(first <= u <= last for u in uids)
        assert [process_ids(pid)[1] for pid in pids] == uids  # gid: the same number
        for name, uid in zip(names, uids):
            record = json.load(open(os.path.join(runtime, "workloads", f"{name}.json")))
            assert record["uid"] == uid
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
    for uid in uids:
        fd = os.open(os.path.join(dynamic_user.LOCK_DIR, str(uid)), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: nobody holds it
        finally:
            os.close(fd)


def test_files_the_workload_creates_belong_to_its_dynamic_user(work: str) -> None:
    policy = os.path.join(work, "writer.yaml")
    out = os.path.join(work, "out")
    os.mkdir(out)
    os.chmod(out, 0o1777)  # a dynamic user can write only where anyone may
    with open(policy, "w") as f:
        f.write(f"name: writer\nextends: restricted\nfilesystem: {{writable_paths: [{out}]}}\n")
    r = subprocess.run([PYTHON, "-m", "enforcer", "run", "--policy", policy, "--", "sh", "-c",
                        f"id -u; touch {out}/made"], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "ENFORCER_CACHE_DIR": os.path.join(work, "cache")})
    assert r.returncode == 0, r.stderr
    assert os.stat(os.path.join(out, "made")).st_uid == int(r.stdout.split()[0])
