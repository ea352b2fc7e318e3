"""The fast start path end to end: the launcher's imports with a cached
Plan, and the workload's audit session in its registry record."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import session

from enforcer.audit_session import UNSET
from enforcer.launcher import write_launcher
from run_helpers import PYTHON, enforcer_run, require_root, scratch_dir

pytestmark = pytest.mark.root

# Neither the heavy packages of the brief nor the stdlib modules this path
# was cut loose from for speed (each costs ms at every start).
NOT_ON_START_PATH = ("yaml", "pyseccomp", "psutil", "prometheus_client", "argparse",
                     "dataclasses", "typing", "json", "re", "enum", "hashlib", "tempfile",
                     "inspect", "signal", "threading", "logging")


@pytest.fixture
def work() -> str:
    require_root()
    d = scratch_dir()
    yield d
    session.remove_tree(d)


def test_launcher_start_path_imports_only_what_it_needs(work: str) -> None:
    launcher = os.path.join(work, "enforcer")
    write_launcher(launcher, "enforcer")
    env = {**os.environ, "ENFORCER_CACHE_DIR": os.path.join(work, "cache")}
    first = subprocess.run([launcher, "run", "--policy", "restricted", "--", "/bin/true"],
                           capture_output=True, text=True, env=env, cwd=work)
    # No cached Plan yet: the launcher restarts with site-packages to compile.
    assert first.returncode == 0, first.stderr
    r = subprocess.run([PYTHON, "-I", "-S", "-X", "importtime", launcher, "run", "--policy",
                        "restricted", "--", "/bin/true"], capture_output=True, text=True,
                       env=env, cwd=work)
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert "enforcer.apply.supervise" in imported  # the measurement saw the run
    assert not imported & set(NOT_ON_START_PATH), sorted(imported & set(NOT_ON_START_PATH))


def _session_and_record(work: str, env: dict[str, str]) -> tuple[int, dict[str, object]]:
    import json

    runtime = os.path.join(work, "runtime")
    script = 'cat /proc/self/sessionid; echo; cat "$1"/workloads/*.json'
    r = enforcer_run(["--policy", "default", "--", "sh", "-c", script, "sh", runtime],
                     env={"ENFORCER_RUNTIME_DIR": runtime,
                          "ENFORCER_CACHE_DIR": os.path.join(work, "cache"), **env})
    assert r.returncode == 0, r.stderr
    session_line, record_text = r.stdout.split("\n", 1)
    assert not os.listdir(os.path.join(runtime, "workloads"))  # removed after the run
    return int(session_line), json.loads(record_text)


def _own_session() -> int:
    with open("/proc/self/sessionid") as f:
        return int(f.read())


def test_the_workload_gets_a_fresh_audit_session_named_in_its_record(work: str) -> None:
    session, record = _session_and_record(work, {"ENFORCER_KEEP_AUDIT_SESSION": ""})
    assert session != UNSET and session != _own_session()
    assert record["audit_session"] == session
    again, _ = _session_and_record(work, {"ENFORCER_KEEP_AUDIT_SESSION": ""})
    assert again != session  # one per workload, never reused


def test_keep_audit_session_keeps_the_launchers_session(work: str) -> None:
    session, record = _session_and_record(work, {"ENFORCER_KEEP_AUDIT_SESSION": "1"})
    assert session == _own_session()
    assert record["audit_session"] == (None if session == UNSET else session)
