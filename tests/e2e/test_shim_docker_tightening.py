"""Under a real Docker engine: the shim tightens what Docker asked for.

* `docker run --security-opt seccomp=stricter.json` keeps the stricter
  profile under the shim (it used to be replaced by the policy's);
* `docker update --memory` lowers a running shim container's limit (it
  used to fail always: containerd passes the resources on stdin), and
  raising it past the policy is refused.

Uses the private dockerd of tests/e2e/conftest.py and the runtimes that
tests/e2e/test_shim_docker.py registers (enforcer-restricted,
enforcer-web-server, through the compiled front end and an enforcer-shimd).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.e2e.test_shim_docker import names, runtimes, shimd  # noqa: F401  (fixtures)
from tests.paths import DOCKER_DEFAULT_SECCOMP

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

MEMORY_CGROUP = "/sys/fs/cgroup/memory"


def _stricter_profile(path: str) -> str:
    """Docker's default profile, except that mkdir and mkdirat fail with EPERM."""
    profile = json.loads(DOCKER_DEFAULT_SECCOMP.read_text())
    for entry in profile["syscalls"]:
        entry["names"] = [n for n in entry["names"] if n not in ("mkdir", "mkdirat")]
    profile["syscalls"] = [e for e in profile["syscalls"] if e["names"]]
    with open(path, "w") as f:
        json.dump(profile, f)
    return path


def test_a_stricter_security_opt_profile_survives_the_policy(dockerd, runtimes, busybox_image,
                                                            names, tmp_path) -> None:
    profile = _stricter_profile(str(tmp_path / "stricter.json"))
    script = "mkdir /tmp/made 2>/dev/null && echo MADE || echo mkdir-denied"
    plain = dockerd("run", "--rm", "--name", names(), "--network", "none",
                    "--security-opt", f"seccomp={profile}", busybox_image, "sh", "-c", script)
    assert plain.stdout.split() == ["mkdir-denied"], plain.stdout + plain.stderr
    shimmed = dockerd("run", "--rm", "--name", names(), "--network", "none",
                      "--runtime", "enforcer-web-server", "--security-opt", f"seccomp={profile}",
                      busybox_image, "sh", "-c", script)
    assert shimmed.returncode == 0, shimmed.stderr
    assert shimmed.stdout.split() == ["mkdir-denied"], shimmed.stdout + shimmed.stderr


def _memory_limit(dockerd, container_id: str) -> int:
    path = os.path.join(MEMORY_CGROUP, dockerd.cgroup_parent.lstrip("/"), container_id,
                        "memory.limit_in_bytes")
    with open(path) as f:
        return int(f.read())


def test_docker_update_lowers_memory_and_cannot_raise_it_past_the_policy(
        dockerd, runtimes, busybox_image, names) -> None:
    if not os.path.isdir(MEMORY_CGROUP):
        pytest.skip("reads the v1 memory controller (this machine's layout)")
    name = names()
    r = dockerd("run", "-d", "--name", name, "--network", "none", "--memory", "300m",
                "--runtime", "enforcer-restricted", busybox_image, "sleep", "300")
    assert r.returncode == 0, r.stderr
    container_id = r.stdout.strip()
    assert _memory_limit(dockerd, container_id) == 300 << 20
    lowered = dockerd("update", "--memory", "200m", name)
    assert lowered.returncode == 0, lowered.stdout + lowered.stderr
    assert _memory_limit(dockerd, container_id) == 200 << 20
    # restricted allows 512 MiB: Docker may not lift the container past it.
    raised = dockerd("update", "--memory", "1g", "--memory-swap", "2g", name)
    assert raised.returncode != 0, raised.stdout + raised.stderr
    assert _memory_limit(dockerd, container_id) == 200 << 20
    output = raised.stdout + raised.stderr
    if "unable to retrieve OCI runtime error" in output:
        # The shim's reason reaches Docker through runc's --log file, which
        # the shim writes on refusal only once the refusal-logging change
        # (a sibling branch) is in: until then Docker reports that the file
        # was missing, which is still a refusal.
        pytest.xfail("refusals are not yet written to runc's --log file")
    assert "above the policy" in output and "restricted" in output, output
