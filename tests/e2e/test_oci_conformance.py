"""OCI conformance (issue 14): the runtime-tools validation suite, every
program, against runc and against the shim with `default`, side by side.

What passes under runc must pass under the shim. Each program runs under
runc and then under the shim, so both see the same machine load; a program
that differs is run again under both, and only a difference seen twice
counts (a flake is named in the table, not hidden). A difference is either
explained in DOCUMENTED, and named with its reason in docs/shim.md
("OCI conformance"), or the test fails. A documented difference that no
longer shows fails it too, so the docs do not keep stale excuses.

The shim runs the way a node runs it: the compiled front end talking to an
enforcer-shimd of this test's own, with a precompiled `default` Plan and
no fallback to the Python shim (ENFORCER_SHIM_FALLBACK names nothing), so
an operation the server did not serve fails visibly. Both runtimes get
their own `--root`, so the suite's containers never mix with the host's.

See tests/e2e/runtime_tools.py for how the programs are contained (a
private mount namespace, a session cgroup, a machine-wide lock).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests import session
from tests.e2e import runtime_tools as rt
from tests.shim_fixtures import ShimServer, start_server, stop_server
from tests.shim_helpers import REPO, RUNC

pytestmark = [pytest.mark.runc, pytest.mark.root, pytest.mark.slow]

ENFORCER = os.path.join(REPO, ".venv", "bin", "enforcer")
SHIM_DOC = Path(REPO) / "docs" / "shim.md"

# Programs where the shim with `default` passes less than runc, on purpose.
# Each is named, with this reason, in docs/shim.md ("OCI conformance").
DOCUMENTED = {
    "linux_ns_itype": "`default` gives every container a mount namespace of its own "
                      "(policy `namespaces: [mount]`), so one whose config asks for none "
                      "does not share the runtime's",
}

# runc 1.1.5 passes 27 of the 58 programs here (on a cgroup v1 hybrid host);
# far fewer means the setup broke (a rootfs the programs cannot use, a
# wrapper that fails) and both sides would fail alike, which proves nothing.
MIN_RUNC_PASSES = 20


@pytest.fixture(scope="module")
def suite() -> rt.Suite:
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root and runc")
    for tool in ("go", "make", "unshare", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    if not rt.RUNTIME_TOOLS_TARBALL.exists():
        pytest.skip(f"{rt.RUNTIME_TOOLS_TARBALL.name} is not in shared/third_party")
    return rt.build_suite()


@pytest.fixture
def work() -> Iterator[Path]:
    """The scratch tree and the session cgroup the programs run in, under
    the machine-wide lock (the suite's cgroup paths are fixed)."""
    cgroup = f"{session.CGROUP_PARENT}/runtime-tools"
    with session.host_lock("runtime-tools"):
        directory = Path(session.mkdtemp("enf-oci-", dir="/tmp"))
        # Searchable by all: a container with a user namespace (linux_uid_mappings,
        # linux_ns_nopath) reaches its bundle as a mapped, unprivileged uid.
        directory.chmod(0o755)
        try:
            session.make_cgroup(cgroup)
            yield directory
        finally:
            session.remove_cgroup_tree(cgroup)
            session.remove_tree(str(directory))


def _shim_config(work: Path) -> Path:
    plans = work / "plans"
    plans.mkdir()
    subprocess.run([ENFORCER, "compile", "default", "-o", str(plans / "default.json")],
                   check=True, capture_output=True, timeout=300)
    config = work / "shim.json"
    config.write_text(json.dumps({"runc": RUNC, "plans_dir": str(plans),
                                  "runtime_dir": str(work / "registry"),
                                  "cache_dir": str(work / "plan-cache")}))
    return config


def _delete_leftovers(runtime: str, runc_root: str, enter: list[str]) -> list[str]:
    """Containers a program left (a failing one may): force-deleted through
    the same runtime, so the shim's registry sees the delete too."""
    left = rt.leftover_containers(RUNC, runc_root)
    for container in left:
        subprocess.run([*enter, runtime, "delete", "--force", container], capture_output=True,
                       timeout=60)
    return left


def _stop(server: ShimServer) -> str:
    """Stop the server; what it left behind, as a message (checked last, so
    that it does not hide the comparison's result)."""
    try:
        stop_server(server)
    except AssertionError as e:
        return str(e)
    return ""


def test_the_shim_passes_what_runc_passes(suite: rt.Suite, work: Path) -> None:
    workdir = rt.prepare_workdir(suite, work / "cwd")
    (work / "tmp").mkdir()
    config = _shim_config(work)
    cgroup_dirs = [os.path.join(h, session.CGROUP_PARENT.strip("/"), "runtime-tools")
                   for h in session.cgroup_hierarchies()]

    def in_cgroup() -> None:
        session.join_cgroup(cgroup_dirs)

    pairs: list[tuple[rt.ProgramResult, rt.ProgramResult]] = []
    differences: list[rt.Difference] = []
    notes: dict[str, str] = {}
    with rt.private_mount_namespace() as enter:
        (work / "shimd").mkdir()
        # The server's own configuration; the runtime's environment names the
        # same file (a request naming another is not the server's to serve).
        shim_env = {"ENFORCER_SHIM_CONFIG": str(config)}
        server = start_server(str(work / "shimd"), env=shim_env, prefix=enter(REPO))
        try:
            runtimes = {
                "runc": rt.runtime_wrapper(work / "runc", [RUNC, "--root", str(work / "root-runc")]),
                "shim": rt.runtime_wrapper(
                    work / "enforcer-runc-default",
                    [server.binary, "--policy", "default", "--root", str(work / "root-shim")],
                    {**shim_env, "ENFORCER_SHIM_SOCKET": server.socket,
                     "ENFORCER_SHIM_FALLBACK": str(work / "no-fallback")}),
            }

            def run_both(program: str) -> tuple[rt.ProgramResult, rt.ProgramResult]:
                return tuple(  # type: ignore[return-value]
                    rt.run_program(suite, program, runtimes[side], workdir, work / "tmp",
                                   work / "logs" / side, enter, in_cgroup)
                    for side in ("runc", "shim"))

            for program in suite.programs:
                runc, shim = run_both(program)
                if rt.compare(runc, shim) is not None:
                    again = run_both(program)
                    if rt.compare(*again) is None:
                        notes[program] = "differed once, not on the rerun (flaky)"
                    runc, shim = again
                difference = rt.compare(runc, shim)
                if difference is not None:
                    differences.append(difference)
                    notes[program] = DOCUMENTED.get(program, "**unexplained**")
                pairs.append((runc, shim))
            # Shown before anything else can fail (run with -s to see it).
            print("\n" + rt.results_table(pairs, notes))
            print("seconds: runc %.0f, shim %.0f" % (sum(r.seconds for r, _ in pairs),
                                                    sum(s.seconds for _, s in pairs)))

            left_runc = _delete_leftovers(runtimes["runc"], str(work / "root-runc"), enter(REPO))
            left_shim = _delete_leftovers(runtimes["shim"], str(work / "root-shim"), enter(REPO))
            records = sorted(os.listdir(work / "registry" / "workloads"))
            served = server.log_text().count(f"--policy default")
        finally:
            leak = _stop(server)

    table = rt.results_table(pairs, notes)
    details = "\n".join(str(d) for d in differences)
    runc_passes = sum(runc.verdict == "pass" for runc, _ in pairs)
    assert runc_passes >= MIN_RUNC_PASSES, f"runc passed only {runc_passes}:\n{table}"
    # Every operation went through enforcer-shimd (create, start, state, kill, delete).
    assert served >= 5 * len(suite.programs), server.log_text()[-3000:]

    differing = {d.program for d in differences}
    unexplained = differing - set(DOCUMENTED)
    assert not unexplained, f"passes under runc, not under the shim:\n{details}\n\n{table}"
    stale = set(DOCUMENTED) - differing
    assert not stale, f"documented differences that no longer show: {sorted(stale)}\n{table}"
    doc = SHIM_DOC.read_text()
    assert all(f"`{program}`" in doc for program in DOCUMENTED), \
        "every documented difference is named in docs/shim.md"
    # The shim's registry follows the containers: none left for a deleted one.
    assert records == [], f"registry records outlived their containers: {records}"
    # Containers the programs left behind: the same under both runtimes.
    assert len(left_shim) == len(left_runc), (left_runc, left_shim)
    assert not leak
