"""Suite-wide guard: the tests leave the machine as they found them.

At the end of the session we look for what this session created and did
not remove: cgroups and mounts whose names carry the session tag (see
tests/session.py), anything left under the session's cgroup parent, and
mounts under pytest's temporary directory. Anything found fails the run,
naming it, so a leak is fixed where it happens rather than piling up on CI
machines. Nothing else on the host is looked at: another program creating
cgroups or mounts while the suite runs is not a leak of ours.
Area-specific fixtures live in tests/<area>_helpers.py and tests/e2e/conftest.py.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests import session

# Before any test starts a process: every enforcer the tests run creates its
# workload cgroups under the session's own parent.
session.export_environment()

# Fixtures shared by more than one directory of tests.
pytest_plugins = ["tests.shim_fixtures"]

CGROUP_ROOT = "/sys/fs/cgroup"


def _mount_points() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4].replace("\\040", " ") for line in f]
    except OSError:
        return []


def session_mounts(tmp_root: str) -> list[str]:
    """Mount points this session made: named with its tag or under its temp dir."""
    prefix = tmp_root.rstrip("/") + "/"
    return sorted({m for m in _mount_points()
                   if session.TAG in m or m == tmp_root or m.startswith(prefix)})


def _hierarchies() -> list[str]:
    if not os.path.isdir(CGROUP_ROOT):
        return []
    found = []
    for name in sorted(os.listdir(CGROUP_ROOT)):
        base = os.path.join(CGROUP_ROOT, name)
        if os.path.isdir(base) and not os.path.islink(base):
            found.append(base)
    # A pure v2 host has no per-controller directories: the root is the hierarchy.
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.procs")):
        found.append(CGROUP_ROOT)
    return found


def session_cgroups() -> list[str]:
    """Cgroups this session made: two levels deep (where runc, dockerd, the
    tests and enforcer create theirs), named with the session tag."""
    found: set[str] = set()
    for base in _hierarchies():
        try:
            top = [e for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for entry in top:
            if session.TAG in entry.name:
                found.add(entry.path)
            try:
                found.update(sub.path for sub in os.scandir(entry.path)
                             if sub.is_dir(follow_symlinks=False) and session.TAG in sub.name)
            except OSError:
                pass
        parent = os.path.join(base, session.CGROUP_PARENT.lstrip("/"))
        for dirpath, _dirs, _files in os.walk(parent):
            found.add(dirpath)
    return sorted(found)


def _remove_session_parent() -> None:
    """The session's cgroup parent (enforcer keeps one per hierarchy, as Docker
    keeps `docker/`) goes at the end; rmdir fails with EBUSY while a workload
    cgroup is still inside, and that one is then reported as the leak."""
    for base in _hierarchies():
        try:
            os.rmdir(os.path.join(base, session.CGROUP_PARENT.lstrip("/")))
        except OSError:
            pass


@pytest.fixture(scope="session", autouse=True)
def machine_left_as_found(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    tmp_root = str(tmp_path_factory.getbasetemp())
    yield
    _remove_session_parent()
    problems = []
    leaked_mounts = session_mounts(tmp_root)
    if leaked_mounts:
        problems.append("mounts left behind: " + ", ".join(leaked_mounts))
    leaked_cgroups = session_cgroups()
    if leaked_cgroups:
        problems.append("cgroups left behind: " + ", ".join(leaked_cgroups))
    if problems:
        pytest.fail("the test session did not clean up: " + "; ".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skip is a failure.

    The tests skip when this machine lacks a tool (dockerd, promtool,
    busybox-static, ...) so a developer can run the rest. CI installs all of
    them through scripts/setup.sh, so there a skip means a missing install
    step, and a green run would hide untested code.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every prerequisite is installed: {reason}"
