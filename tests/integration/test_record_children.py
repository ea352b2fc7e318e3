"""Every process of the recorded workload counts, however short its life,
and a recording that cannot be trusted writes nothing (root, real kernel)."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests import session

from enforcer.policy.loader import load_policy
from enforcer.record.render import read_metadata
from record_helpers import allowed_names, enforcer, remove, scratch_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]

@pytest.fixture(autouse=True, scope="module")
def _audit_rules_lock() -> Iterator[None]:
    """A recording adds audit rules, a host singleton (tests/session.py)."""
    with session.host_lock("audit"):
        yield


PY = "/usr/bin/python3"
# The parent never calls getsid; 20 children each call it once and exit at
# once, and one more child execs /bin/true.
FORKER = """\
import os
for _ in range(20):
    pid = os.fork()
    if pid == 0:
        os.getsid(0)
        os._exit(0)
    os.waitpid(pid, 0)
pid = os.fork()
if pid == 0:
    os.execv("/bin/true", ["true"])
os.waitpid(pid, 0)
"""


@pytest.fixture(scope="module")
def workdir() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (kernel audit stream, seccomp, cgroups)")
    d = scratch_dir()
    yield d
    remove(d)


def test_short_lived_children_are_recorded(workdir: str) -> None:
    out = os.path.join(workdir, "forker.yaml")
    r = enforcer(["record", "--base", "default", "-o", out, "--", PY, "-I", "-S", "-c", FORKER])
    assert r.returncode == 0, r.stderr
    meta = read_metadata(open(out).read(), out)
    assert meta["counts"]["getsid"] == 20  # exactly one record per child's call
    assert meta["runs"][0]["processes"] == 22  # the parent, 20 children, true
    assert meta["counts"]["execve"] == 2  # the workload's own, and true's
    assert "getsid" in allowed_names(load_policy(out))
    # And the learned policy runs the same workload.
    run = enforcer(["run", "--policy", out, "--", PY, "-I", "-S", "-c", FORKER])
    assert run.returncode == 0, run.stderr


def test_missing_command_writes_nothing(workdir: str) -> None:
    out = os.path.join(workdir, "missing.yaml")
    r = enforcer(["record", "-o", out, "--", "/nonexistent/command"])
    assert r.returncode != 0
    assert "did not run" in r.stderr and not os.path.exists(out), r.stderr
    assert not [n for n in os.listdir(workdir) if n.startswith(".record-")]


def test_bad_default_action_is_refused_before_running(workdir: str) -> None:
    out = os.path.join(workdir, "bad.yaml")
    marker = os.path.join(workdir, "ran")
    r = enforcer(["record", "--default-action", "errno EWHAT", "-o", out, "--",
                  "/bin/touch", marker])
    assert r.returncode != 0 and "--default-action" in r.stderr and "EWHAT" in r.stderr
    assert not os.path.exists(marker) and not os.path.exists(out)


def test_merge_of_recordings_with_different_bases_is_refused(workdir: str) -> None:
    a, b = os.path.join(workdir, "a.yaml"), os.path.join(workdir, "b.yaml")
    for path, base in ((a, "default"), (b, "restricted")):
        r = enforcer(["record", "--base", base, "-o", path, "--", "/bin/true"])
        assert r.returncode == 0, r.stderr
    out = os.path.join(workdir, "ab.yaml")
    r = enforcer(["record", "--merge", a, b, "-o", out])
    assert r.returncode != 0 and "different bases" in r.stderr and not os.path.exists(out)


def test_base_given_as_a_path_outside_the_output_dir_is_extended_by_absolute_path(workdir: str) -> None:
    import subprocess
    import sys

    bases = os.path.join(workdir, "bases")
    outs = os.path.join(workdir, "out")
    os.makedirs(bases, exist_ok=True)
    os.makedirs(outs, exist_ok=True)
    with open(os.path.join(bases, "mine.yaml"), "w") as f:
        f.write("name: mine\nextends: restricted\nrlimits:\n  nofile: 512\n")
    out = os.path.join(outs, "true.yaml")
    r = subprocess.run([sys.executable, "-m", "enforcer", "record", "--base", "bases/mine.yaml",
                        "-o", out, "--", "/bin/true"], cwd=workdir, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # Outside the output's directory: written absolute (a relative `..` is refused).
    base = os.path.realpath(os.path.join(bases, "mine.yaml"))
    assert f"extends: {base}" in open(out).read()
    policy = load_policy(out)
    assert any(lim.resource == "NOFILE" and lim.soft == 512 for lim in policy.rlimits)
    assert enforcer(["run", "--policy", out, "--", "/bin/true"]).returncode == 0


def test_a_burst_of_100000_calls_is_counted_exactly(workdir: str) -> None:
    out = os.path.join(workdir, "burst.yaml")
    r = enforcer(["record", "-o", out, "--", PY, "-I", "-S", "-c",
                  "import os\nfor _ in range(100000): os.getppid()\n"])
    assert r.returncode == 0, r.stderr
    assert read_metadata(open(out).read(), out)["counts"]["getppid"] == 100000


def test_a_syscall_number_without_a_name_is_left_out_and_said(workdir: str) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("uses an x86_64 syscall number")
    out = os.path.join(workdir, "unnamed.yaml")
    r = enforcer(["record", "-o", out, "--", PY, "-I", "-S", "-c",
                  "import ctypes\nctypes.CDLL(None).syscall(999)\n"])
    assert r.returncode == 0, r.stderr
    assert "left out x86_64 syscall 999 (seen 1)" in r.stderr
    text = open(out).read()
    assert "#   x86_64 syscall 999 (1): libseccomp has no name for it" in text
    assert read_metadata(text, out)["left_out"]["x86_64 syscall 999"][0] == 1


def test_a_recording_loads_from_another_directory(workdir: str) -> None:
    """Record with a base given by a relative path, in one directory; the
    learned policy's `extends` is that base's absolute path, so a copy of it
    loads and runs from another directory (issue 19, point 5)."""
    import shutil
    import subprocess

    from record_helpers import PYTHON

    here, elsewhere = os.path.join(workdir, "here"), os.path.join(workdir, "elsewhere")
    os.makedirs(os.path.join(here, "bases"))
    os.makedirs(elsewhere)
    base = os.path.join(here, "bases", "team.yaml")
    with open(base, "w") as f:
        f.write("name: team\nextends: restricted\n")
    r = subprocess.run([PYTHON, "-m", "enforcer", "record", "--base", "bases/team.yaml",
                        "-o", "learned.yaml", "--", "/bin/true"],
                       capture_output=True, text=True, timeout=120, cwd=here)
    assert r.returncode == 0, r.stderr
    text = open(os.path.join(here, "learned.yaml")).read()
    assert f"extends: {base}\n" in text, text
    shutil.copy(os.path.join(here, "learned.yaml"), os.path.join(elsewhere, "copy.yaml"))
    run = subprocess.run([PYTHON, "-m", "enforcer", "run", "--policy", "./copy.yaml", "--",
                          "/bin/true"], capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert run.returncode == 0, run.stderr
