"""Hole 7: `enforcer run` with no --policy must confine a root workload.

As root, with no policy named, the workload tries what worked before the
fix under the old built-in `default` (a container policy that assumed a
container's own root file system):

* write into a fresh directory of the host (one the test made);
* signal a host process (a `sleep` the test started);
* leave its cgroup by writing itself into another cgroup's `cgroup.procs`
  (a scratch cgroup the test made, carrying the session tag);
* write to a block device of the host (a loop device over a scratch file
  the test made): root without capabilities still owns the device nodes
  in the host's /dev;
* and, without writing anything: /sys and the cgroup file systems must
  be mounted read-only, and the host's processes must be invisible.

Every probe is harmless if it gets through: it can only change what the
test created for it.
"""

from __future__ import annotations

import os
import subprocess
from typing import Iterator

import pytest

from run_helpers import alive, enforcer_run, require_root, scratch_dir
from tests import session

pytestmark = [pytest.mark.root]


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-default-")
    yield d
    session.remove_tree(d)


def run_default(work: str, script: str) -> subprocess.CompletedProcess[str]:
    """`enforcer run -- sh -c SCRIPT` as root, no --policy."""
    r = enforcer_run(["--", "sh", "-c", script],
                     env={"ENFORCER_CACHE_DIR": os.path.join(work, "cache"),
                          "ENFORCER_RUNTIME_DIR": os.path.join(work, "runtime")})
    assert r.returncode == 0, r.stderr
    return r


def test_cannot_write_host_directories(work: str) -> None:
    target = os.path.join(work, "fresh")
    os.mkdir(target)
    r = run_default(work, f"echo pwned > {target}/file && echo WROTE; "
                          f"mkdir {target}/dir && echo MKDIR; true")
    assert "WROTE" not in r.stdout and "MKDIR" not in r.stdout
    assert os.listdir(target) == []


def test_cannot_signal_host_processes(work: str) -> None:
    victim = subprocess.Popen(["sleep", "300"])
    try:
        r = run_default(work, f"kill -TERM {victim.pid} && echo SIGNALLED; "
                              f"test -e /proc/{victim.pid} && echo VISIBLE; "
                              "ls /proc | grep -c '^[0-9]'")
        assert "SIGNALLED" not in r.stdout and "VISIBLE" not in r.stdout
        assert alive(victim.pid)
        # Its own pid namespace: only the workload's own processes are there.
        assert int(r.stdout.split()[-1]) <= 4
    finally:
        victim.kill()
        victim.wait()


@pytest.fixture
def scratch_cgroup() -> Iterator[str]:
    """An empty cgroup (pids hierarchy) for the workload to try to move into."""
    base = "/sys/fs/cgroup/pids"
    if not os.path.exists(f"{base}/cgroup.procs"):
        base = "/sys/fs/cgroup"  # pure cgroup v2
    path = os.path.join(base, session.unique("enforcer-escape-"))
    os.mkdir(path)
    yield path
    for pid in open(f"{path}/cgroup.procs").read().split():
        subprocess.run(["kill", "-9", pid], capture_output=True)
    os.rmdir(path)


def test_cannot_leave_its_cgroup(work: str, scratch_cgroup: str) -> None:
    r = run_default(work, f"echo $$ > {scratch_cgroup}/cgroup.procs && echo MOVED; "
                          "cat /proc/self/cgroup")
    assert "MOVED" not in r.stdout
    assert os.path.basename(scratch_cgroup) not in r.stdout
    assert open(f"{scratch_cgroup}/cgroup.procs").read() == ""


@pytest.fixture
def loop_device(work: str) -> Iterator[tuple[str, str]]:
    image = os.path.join(work, "disk.img")
    with open(image, "wb") as f:
        f.write(b"\0" * (1 << 20))
    r = subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True)
    assert r.returncode == 0, f"losetup: {r.stderr}"
    dev = r.stdout.strip()
    yield dev, image
    subprocess.run(["losetup", "-d", dev], check=True)


def test_cannot_write_host_block_devices(work: str, loop_device: tuple[str, str]) -> None:
    dev, image = loop_device
    r = run_default(work, f"printf PWNED | dd of={dev} conv=notrunc,fsync 2>/dev/null "
                          "&& echo WROTE; true")
    assert "WROTE" not in r.stdout
    with open(image, "rb") as f:
        assert f.read(5) == b"\0" * 5


def test_sys_and_cgroup_filesystems_are_read_only(work: str) -> None:
    # Read-only probing: the mount table the workload sees, nothing written.
    r = run_default(work, "cat /proc/self/mountinfo")
    checked = 0
    for line in r.stdout.splitlines():
        fields = line.split()
        point, options = fields[4], fields[5].split(",")
        fstype = fields[fields.index("-") + 1]
        if point == "/sys" or fstype in ("sysfs", "cgroup", "cgroup2"):
            assert "ro" in options, f"{point} ({fstype}) is writable in the workload"
            checked += 1
    assert checked >= 2
