"""Suite-wide guard: the tests leave the machine as they found them.

At the end of the session we compare the host's mount table, the cgroups
under every hierarchy and our runtime directory with what they were at the
start. Anything a test created and did not remove fails the run, naming it,
so a leak is fixed where it happens rather than piling up on CI machines.
Area-specific fixtures live in tests/<area>_helpers.py and tests/e2e/conftest.py.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

# Fixtures shared by more than one directory of tests.
pytest_plugins = ["tests.shim_fixtures"]

CGROUP_ROOT = "/sys/fs/cgroup"


def _mounts() -> set[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            # mount point (field 5) + fs type; ids change with remounts, these don't
            return {" ".join(line.split()[4:5] + line.split(" - ")[1].split()[:1]) for line in f}
    except OSError:
        return set()


def _cgroups() -> set[str]:
    found: set[str] = set()
    if not os.path.isdir(CGROUP_ROOT):
        return found
    for hierarchy in os.listdir(CGROUP_ROOT):
        base = os.path.join(CGROUP_ROOT, hierarchy)
        if not os.path.isdir(base) or os.path.islink(base):
            continue
        # Only look two levels deep: where enforcer and the tests create theirs.
        for entry in os.scandir(base):
            if entry.is_dir(follow_symlinks=False):
                found.add(entry.path)
                try:
                    for sub in os.scandir(entry.path):
                        if sub.is_dir(follow_symlinks=False):
                            found.add(sub.path)
                except OSError:
                    pass
    return found


def _remove_empty_parents(created: set[str]) -> None:
    """enforcer keeps a parent cgroup `enforcer/` per hierarchy (as Docker
    keeps `docker/`) for its workloads' cgroups. If the session created it,
    remove it again; rmdir fails with EBUSY if a workload cgroup is still
    inside, and that one is then reported as the leak."""
    for path in sorted(created, key=len, reverse=True):
        if os.path.basename(path) == "enforcer":
            try:
                os.rmdir(path)
            except OSError:
                pass


@pytest.fixture(scope="session", autouse=True)
def machine_left_as_found() -> Iterator[None]:
    mounts_before, cgroups_before = _mounts(), _cgroups()
    yield
    _remove_empty_parents(_cgroups() - cgroups_before)
    leaked_mounts = sorted(_mounts() - mounts_before)
    leaked_cgroups = sorted(_cgroups() - cgroups_before)
    problems = []
    if leaked_mounts:
        problems.append("mounts left behind: " + ", ".join(leaked_mounts))
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
