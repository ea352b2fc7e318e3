"""Hole 12: enforcer-shimd serves every installed policy, and never compiles.

Started the README's way (the fast launchers of `python -m enforcer.launcher`,
which is what scripts/setup.sh and install-node.sh write), the server could
not compile: a policy with no precompiled Plan and no cache entry ended in
`internal error in enforcer-shimd (ModuleNotFoundError: No module named
'pyseccomp')`. And had it compiled, it would have parsed YAML and built BPF
as root with its full rights, against DESIGN's rule that the privileged side
only loads Plans.

Now a cache miss is compiled in a separate process that holds no
capability, cannot write a file, cannot be traced, and hands back a Plan
the server verifies; the server itself never maps libseccomp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from enforcer.shim.health import server_processes, terminate
from tests import session
from tests.shim_helpers import FIXTURE_CONFIG, PYTHON, REPO, applied_policy, fake_runc

pytestmark = [pytest.mark.root]


def _fast_python() -> list[str]:
    """--python as scripts/setup.sh passes it: the distribution's python3
    when it is the venv's minor version (then site.main() cannot find the
    venv's site-packages, which is how the bug showed)."""
    system = "/usr/bin/python3"
    if not os.access(system, os.X_OK):
        return []
    version = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    return ["--python", system] if version == str(sys.version_info[:2]) else []


@pytest.fixture
def node() -> Iterator[Path]:
    root = Path(session.mkdtemp("enf-adv-compile-", dir="/tmp"))
    try:
        yield root
    finally:
        session.remove_tree(str(root))


def _maps(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read()
    except OSError:
        return ""


def test_a_policy_without_a_plan_is_served_and_compiled_outside_the_server(node: Path) -> None:
    bin_dir = node / "bin"
    bin_dir.mkdir()
    r = subprocess.run([PYTHON, "-m", "enforcer.launcher", *_fast_python(), str(bin_dir)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    marker = node / "runc-args"
    (node / "plans").mkdir()
    (node / "shim.json").write_text(json.dumps({"plans_dir": str(node / "plans"),
                                                "runc": fake_runc(str(node / "runc"),
                                                                  str(marker))}))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "ENFORCER_SHIM_CONFIG": str(node / "shim.json"),
           "ENFORCER_RUNTIME_DIR": str(node / "run"),
           "ENFORCER_CACHE_DIR": str(node / "cache"),
           "ENFORCER_SHIM_SOCKET": str(node / "shim.sock")}
    log = open(node / "shimd.log", "wb")
    server = subprocess.Popen([str(bin_dir / "enforcer-shimd"), "--socket", str(node / "shim.sock"),
                               "--verbose"], env=env, cwd="/", stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (node / "shim.sock").exists():
            assert server.poll() is None and time.monotonic() < deadline, \
                (node / "shimd.log").read_text()
            time.sleep(0.05)
        # The first request compiles (a cache miss), the second loads the cache.
        for cid in (session.unique("enf-adv-c-") for _ in range(2)):
            bundle = node / cid
            bundle.mkdir()
            shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
            # No fallback: only the server can have done it.
            fe = subprocess.run([str(bin_dir / "enforcer-runc"), "--policy", "restricted",
                                 "create", "--bundle", str(bundle), "--pid-file",
                                 str(bundle / "pid"), cid],
                                env={**env, "ENFORCER_SHIM_FALLBACK": str(node / "none")},
                                capture_output=True, text=True, timeout=300)
            server_log = (node / "shimd.log").read_text()
            assert fe.returncode == 0, f"{fe.stderr}\n--- server log ---\n{server_log}"
            assert cid in server_log
            assert applied_policy(node / "run", cid).startswith("restricted@")
            entries = list((node / "cache").iterdir())
            assert len(entries) == 1, entries
            st = entries[0].stat()
            assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
        for pid in [server.pid, *server_processes(str(node / "shim.sock"))]:
            assert "libseccomp" not in _maps(pid), f"process {pid} of the server loaded libseccomp"
    finally:
        left = terminate(server, lambda: server_processes(str(node / "shim.sock")))
        log.close()
        assert not left, left
