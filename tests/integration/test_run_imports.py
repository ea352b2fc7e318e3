"""The start path of `enforcer run` with a cached Plan imports none of
PyYAML, pyseccomp, psutil, prometheus_client (nor argparse).

Checked two ways in a fresh interpreter: the modules present in sys.modules
right before the workload is exec'd (the supervisor's own process), and
`python -X importtime` of a whole `enforcer run`.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import session

from run_helpers import PYTHON, REPO, enforcer_run, require_root, scratch_dir

HEAVY = ("yaml", "pyseccomp", "psutil", "prometheus_client", "argparse")

pytestmark = pytest.mark.root


@pytest.fixture
def cache() -> str:
    require_root()
    d = scratch_dir()
    r = enforcer_run(["--policy", "restricted", "--", "/bin/true"],
                     env={"ENFORCER_CACHE_DIR": d})
    assert r.returncode == 0, r.stderr  # this run compiled and cached the Plan
    yield d
    session.remove_tree(d)


def test_importtime_of_cached_run(cache: str) -> None:
    r = subprocess.run([PYTHON, "-X", "importtime", "-m", "enforcer", "run", "--policy",
                        "restricted", "--", "/bin/true"], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, "ENFORCER_CACHE_DIR": cache})
    assert r.returncode == 0
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert "enforcer.apply.supervise" in imported  # the check sees our imports at all
    bad = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert bad == [], f"start path imported {bad}"


def test_sys_modules_at_exec(cache: str) -> None:
    # Replace os.execve in the child with a dump of sys.modules: exactly the
    # modules loaded when the workload would start. The supervisor (which
    # loads the Plan after the fork) dumps its own when it is done.
    code = (
        "import os, sys\n"
        "def fake_execve(path, argv, env):\n"
        "    sys.stdout.write('CHILD ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
        "    sys.stdout.flush()\n"
        "    os._exit(0)\n"
        "os.execve = fake_execve\n"
        "from enforcer.cli import main\n"
        "rc = main(['run', '--policy', 'restricted', '--', '/bin/true'])\n"
        "sys.stdout.write('PARENT ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
        "sys.exit(rc)\n"
    )
    r = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "ENFORCER_CACHE_DIR": cache})
    assert r.returncode == 0, r.stderr
    dumps = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    child, parent = set(dumps["CHILD"].split()), set(dumps["PARENT"].split())
    assert "enforcer.apply.sequence" in child and "enforcer.plan" in child
    assert "enforcer.planstore" in parent and "enforcer.registry" in parent
    # the start path never compiles: a miss goes to the confined compiler
    assert not any(m == "enforcer.compile" or m.startswith("enforcer.compile.")
                   for m in child | parent)
    for who, modules in (("child", child), ("supervisor", parent)):
        bad = sorted(m for m in modules if m.split(".")[0] in HEAVY)
        assert bad == [], f"loaded in the {who}: {bad}"
