"""Containers under Landlock policies, for the runc end-to-end tests
(tests/e2e/test_shim_landlock.py) and the attacks on the Landlock helper
(tests/adversarial/test_landlock_attacks.py): the policies, a writable
busybox bundle, the helper as a node installs it, the shim's environment.

The fixtures are imported by name into the test modules that use them.
Busybox is static, so the policies need no loader in `execute`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any, Iterator

import pytest

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs, runc_spec_bundle
from tests.shim_helpers import REPO, RUNC, force_delete

PYTHON = os.path.join(REPO, ".venv", "bin", "python")

POLICY = """name: {name}
extends: default
landlock:
  filesystem:
    read: [/]
    write: [/var/lib/app, /dev/null]
    execute: [/bin]
  scope: [signal, abstract-unix-socket]
"""

# Writes anywhere (/dev, where the helper is, included); executes only /bin.
WIDE_POLICY = """name: {name}
extends: default
landlock:
  filesystem:
    read: [/]
    write: [/]
    execute: [/bin]
"""

# Writes to three places, one granted; prints what happened.
WRITES = ("echo ok > /var/lib/app/x && cat /var/lib/app/x; "
          "echo no > /tmp/x 2>/dev/null && echo tmp-written || echo tmp-denied; "
          "echo no > /etc/x 2>/dev/null && echo etc-written || echo etc-denied")


def writable(config: dict[str, Any]) -> dict[str, Any]:
    """`runc spec` makes the root read-only; these tests need Landlock to be
    what stops a write."""
    config["root"]["readonly"] = False
    return config


def bundle_for(path: str, rootfs_src: str, args: list[str]) -> str:
    return runc_spec_bundle(path, rootfs_src, args, writable)


@pytest.fixture(scope="module", autouse=True)
def _needs_root_runc_and_landlock() -> None:
    """Imported with autouse: the whole module needs these."""
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root and runc")
    from enforcer.apply.landlock import kernel_abi

    if kernel_abi() < 6:
        pytest.skip("needs Landlock ABI 6")


@pytest.fixture(scope="module")
def rootfs_src(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("ll-rootfs") / "rootfs"))


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The helper as a node has it: root-owned, in a directory only root writes."""
    d = tmp_path_factory.mktemp("ll-helper")
    os.chmod(d, 0o755)
    path = str(d / "enforcer-landlock")
    subprocess.run([PYTHON, "-m", "enforcer.shim.frontend", "--landlock", path], check=True,
                   capture_output=True, cwd=REPO)
    return path


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The policy compiled into a plans_dir, as a node installs it: `runc
    exec` finds the container's policy there by name."""
    d = tmp_path_factory.mktemp("ll-plans")
    for name, text in (("ll-container", POLICY), ("ll-wide", WIDE_POLICY)):
        policy = d / f"{name}.yaml"
        policy.write_text(text.format(name=name))
        subprocess.run([PYTHON, "-m", "enforcer", "compile", str(policy), "-o",
                        str(d / f"{name}.json")], check=True, capture_output=True, cwd=REPO)
    return str(d)


@pytest.fixture
def env(tmp_path: Any, helper: str, plans: str) -> dict[str, str]:
    (tmp_path / "shim.json").write_text(json.dumps({"runc": RUNC, "landlock_helper": helper,
                                                    "plans_dir": plans}))
    return {"ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
            "ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
            "ENFORCER_CACHE_DIR": str(tmp_path / "plan-cache"),
            "LL_POLICY": "ll-container"}


@pytest.fixture
def container_id() -> Iterator[str]:
    cid = session.unique("enf-ll-")
    yield cid
    force_delete(cid)
    force_delete(cid + "-plain")


def wait_running(container_id: str) -> None:
    deadline = time.monotonic() + 30
    while '"running"' not in subprocess.run([RUNC, "state", container_id],
                                            capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "container did not start"
        time.sleep(0.05)
