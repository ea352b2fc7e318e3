"""Ambient capabilities are intersected like the other sets (issue 14).

`podman run --user 1000 --cap-add NET_BIND_SERVICE ... nc -l -p 80` puts
NET_BIND_SERVICE in all five sets, ambient included, so the non-root
process keeps it across execve and can bind port 80. The shim used to
empty the ambient set whenever the policy named no user, so the same
container under `default` (which keeps NET_BIND_SERVICE) could not bind.
Real runc, real container, real bind; both front ends.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs, runc_spec_bundle
from tests.shim_helpers import RUNC, force_delete, run_shim

pytestmark = [pytest.mark.runc, pytest.mark.root, pytest.mark.usefixtures("shim_front_end")]

# Bind port 80 and report; `timeout` ends a listener that did bind.
SCRIPT = ("grep CapAmb /proc/self/status; "
          "timeout 1 nc -l -p 80 2>&1 | grep -q 'Permission denied' "
          "&& echo bind-denied || echo bound")


@pytest.fixture(scope="module")
def rootfs_src(tmp_path_factory: pytest.TempPathFactory) -> str:
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root and runc")
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("ambient-rootfs") / "rootfs"))


@pytest.fixture
def container_id():
    cid = session.unique("enf-ambient-")
    yield cid
    force_delete(cid)


def _as_user_1000_with_net_bind_service(config: dict) -> dict:
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    caps = ["CAP_NET_BIND_SERVICE"]
    config["process"]["capabilities"] = {s: list(caps) for s in
                                         ("bounding", "effective", "permitted", "inheritable",
                                          "ambient")}
    return config


def _env(tmp_path) -> dict[str, str]:
    (tmp_path / "shim.json").write_text(json.dumps({"runc": RUNC}))
    return {"ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
            "ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
            "ENFORCER_CACHE_DIR": str(tmp_path / "plan-cache")}


def test_non_root_container_keeps_ambient_net_bind_service_under_default(
        tmp_path, rootfs_src, container_id) -> None:
    bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src, ["/bin/sh", "-c", SCRIPT],
                              _as_user_1000_with_net_bind_service)
    plain = run_shim_free(bundle, container_id + "-plain")
    assert plain.split() == ["CapAmb:", "0000000000000400", "bound"], plain
    r = run_shim(["--policy", "default", "run", "--bundle", bundle, container_id],
                 env=_env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["CapAmb:", "0000000000000400", "bound"], r.stdout + r.stderr
    config = json.load(open(os.path.join(bundle, "config.json")))
    assert config["process"]["capabilities"]["ambient"] == ["CAP_NET_BIND_SERVICE"]


def test_ambient_capability_the_policy_removes_is_removed(tmp_path, rootfs_src,
                                                         container_id) -> None:
    """`restricted` keeps no capability: the ambient one goes with the rest."""
    bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src, ["/bin/sh", "-c", SCRIPT],
                              _as_user_1000_with_net_bind_service)
    r = run_shim(["--policy", "restricted", "run", "--bundle", bundle, container_id],
                 env=_env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["CapAmb:", "0000000000000000", "bind-denied"], r.stdout + r.stderr


def run_shim_free(bundle: str, container_id: str) -> str:
    """The same bundle under plain runc (a copy of config.json: the shim rewrites it)."""
    import subprocess

    try:
        r = subprocess.run([RUNC, "run", "--bundle", bundle, container_id], capture_output=True,
                           text=True, timeout=60)
    finally:
        force_delete(container_id)
    assert r.returncode == 0, r.stderr
    return r.stdout
