"""Mount rules for real: masked and hidden files and directories, writable
exceptions, tmpfs, a new root with pivot_root, and the remount fallback for
kernels without mount_setattr. Everything happens in private mount
namespaces; the host's mount table is unchanged afterwards (conftest)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Iterator

import pytest

from tests import session

from enforcer.plan import replace
from enforcer.plan import MountOp
from run_helpers import enforcer_run, make_plan, require_root, scratch_dir, write_plan

pytestmark = pytest.mark.root


@pytest.fixture
def tree() -> Iterator[str]:
    require_root()
    d = scratch_dir()
    for sub in ("masked-dir", "hidden-dir", "rw", "ro", "tmpfs"):
        os.makedirs(os.path.join(d, sub))
        open(os.path.join(d, sub, "f"), "w").write("secret\n")
    for name in ("masked-file", "hidden-file"):
        open(os.path.join(d, name), "w").write("secret\n")
    yield d
    session.remove_tree(d)


def test_mask_hide_writable_tmpfs(tree: str) -> None:
    p = lambda *a: os.path.join(tree, *a)  # noqa: E731
    plan = make_plan(policy_name="mounts", mounts=(
        MountOp("make_private", "/"), MountOp("readonly", "/"), MountOp("writable", p("rw")),
        MountOp("tmpfs", p("tmpfs"), size=1 << 20, mode=0o700, options=("nosuid", "noexec")),
        MountOp("mask", p("masked-file")), MountOp("mask", p("masked-dir")),
        MountOp("hide", p("hidden-file")), MountOp("hide", p("hidden-dir")),
        MountOp("mask", "/nonexistent-optional", optional=True)),
        namespaces=("mount",))
    script = "; ".join([
        f"cat {p('masked-file')} | wc -c", f"ls -A {p('masked-dir')} | wc -l",
        f"stat -c %a {p('hidden-file')} {p('hidden-dir')}", f"cat {p('hidden-file')} | wc -c",
        f"touch {p('rw', 'new')} && echo RW-OK", f"touch {p('ro', 'new')} 2>/dev/null || echo RO",
        f"ls -A {p('tmpfs')} | wc -l", f"stat -c %a {p('tmpfs')}",
        "grep -c ' - tmpfs ' /proc/self/mountinfo >/dev/null && echo done"])
    r = enforcer_run(["--plan", write_plan(plan, tree), "--", "sh", "-c", script])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0", "0", "0", "0", "RW-OK", "RO", "0", "700", "done"]
    # Nothing leaked to the host: the files are intact and the rw write landed.
    assert open(p("masked-file")).read() == "secret\n"
    assert os.path.exists(p("rw", "new")) and not os.path.exists(p("ro", "new"))


def test_missing_required_path_fails_closed(tree: str) -> None:
    plan = make_plan(mounts=(MountOp("make_private", "/"),
                             MountOp("mask", os.path.join(tree, "nope"))))
    marker = os.path.join(tree, "marker")
    r = enforcer_run(["--plan", write_plan(plan, tree), "--", "touch", marker])
    assert r.returncode == 125 and not os.path.exists(marker)
    assert r.stderr.strip() == (f"enforcer run: mounts: mask {tree}/nope: ENOENT "
                                "(No such file or directory): path does not exist")


def test_pivot_root_into_busybox(tree: str) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox not installed")
    root = os.path.join(tree, "rootfs")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "proc"))
    shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
    os.symlink("busybox", os.path.join(root, "bin", "sh"))
    os.symlink("busybox", os.path.join(root, "bin", "ls"))
    plan = make_plan(mounts=(MountOp("make_private", "/"), MountOp("bind", root, source=root),
                             MountOp("readonly", root), MountOp("pivot_root", root)),
                     namespaces=("mount",))
    r = enforcer_run(["--plan", write_plan(plan, tree), "--", "/bin/sh", "-c",
                      "ls /; ls /work 2>/dev/null || echo NO-HOST"], env={"PATH": "/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["bin", "proc", "NO-HOST"]
    # With a pid namespace, the Plan's `proc` mount in the new root is the
    # namespace's own.
    pidns = replace(plan, namespaces=("mount", "pid"),
                    mounts=plan.mounts[:-1] + (MountOp("proc", os.path.join(root, "proc")),
                                               plan.mounts[-1]))
    r = enforcer_run(["--plan", write_plan(pidns, tree), "--", "/bin/sh", "-c",
                      "echo $$; ls /proc | grep -c '^[0-9]'"], env={"PATH": "/bin"})
    assert r.returncode == 0, r.stderr
    pid, count = r.stdout.split()
    assert pid == "2" and int(count) <= 4  # pid 1 is the namespace's init


def test_remount_fallback_without_mount_setattr(tree: str) -> None:
    # Run the fallback path directly in a forked child in its own mount
    # namespace, as a kernel before 5.12 would make us do.
    code = (
        "import os, sys\n"
        "from enforcer.apply import _sys, mounts\n"
        "_sys.unshare(_sys.CLONE_NEWNS)\n"
        "_sys.mount(None, '/', None, _sys.MS_REC | _sys.MS_PRIVATE)\n"
        f"_sys.mount({tree!r}, {tree!r}, None, _sys.MS_BIND | _sys.MS_REC)\n"
        f"mounts._remount_walk({tree!r}, True, True)\n"
        "try:\n"
        f"    open({tree!r} + '/rw/x', 'w')\n"
        "    sys.exit('still writable')\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "30"  # EROFS
    assert not os.path.exists(os.path.join(tree, "rw", "x"))
