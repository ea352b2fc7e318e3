"""Hole 2: the `io.enforcer.policy` annotation may only name an installed policy.

Whoever writes config.json (an image's labels copied by a runtime, a pod
author's annotations) must not be able to
- supply the policy: a relative path resolved against the bundle reached a
  YAML file in the image's own rootfs;
- make the shim read a host file: an absolute path was opened, and a parse
  error echoed the file's contents into the container's error output;
- load an unsigned Plan: a `*.json` value was loaded as a compiled Plan;
- escape the Plan directory with `..`;
- pick a policy other than the runtime's own (`--policy`, what a runtime
  class names), or one the node administrator did not allow
  (`annotation_policies`).

Each attack runs real runc through both front ends (the compiled one with
the real enforcer-shimd, and the Python shim) on a node of its own, and
checks that the container does not exist, config.json is unchanged, no
record was written, the one-line error echoes nothing of the file, and
nothing on the host changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests import session
from tests.adversarial.shim_attack import HostState, ShimNode, busybox_rootfs
from tests.shim_helpers import applied_policy, make_plan, write_plan

pytestmark = [pytest.mark.root, pytest.mark.runc]

SECRET = "top-secret-token-4f1c"
EVIL_POLICY = "version: 1\nname: evil\nmode: enforce\nsyscalls:\n  default: allow\n"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    return busybox_rootfs(tmp_path_factory.mktemp("annotation-rootfs"))


@pytest.fixture(scope="module")
def node() -> Iterator[ShimNode]:
    node = ShimNode()
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(params=["compiled", "python"])
def front_end(request: pytest.FixtureRequest, node: ShimNode) -> str:
    """The compiled front end (served by enforcer-shimd) or the Python shim."""
    if request.param == "compiled":
        return node.front_end
    return str(Path(node.front_end).with_name("enforcer-runc-py"))


def _attack(node: ShimNode, front_end: str, rootfs: str, annotation: str,
            shim_args: tuple[str, ...] = (), extra_files: dict[str, str] | None = None,
            watched: tuple[str, ...] = ()) -> tuple[str, Path]:
    """Create a container whose config.json carries `annotation`; it must be refused.

    The runtime runs in the bundle directory, as containerd starts it.
    """
    cid = session.unique("enf-adv-ann-")
    bundle = node.bundle(cid, ["/bin/true"], rootfs, extra_files,
                         {"io.enforcer.policy": annotation})
    before = (bundle / "config.json").read_bytes()
    host = HostState(node, [bundle / "config.json", *watched])
    r = node.shim([*shim_args, "--root", str(node.runc_root), "create", "--bundle", str(bundle),
                   cid], front_end=front_end, cwd=bundle)
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enforcer-runc: "), r.stderr
    assert (bundle / "config.json").read_bytes() == before
    assert cid not in node.containers()
    assert f"{cid}.json" not in node.records()
    host.assert_unchanged()
    return lines[0], bundle


def test_a_policy_from_the_image_is_refused(node: ShimNode, front_end: str, rootfs: str) -> None:
    """A relative path resolved against the bundle: the image ships the policy."""
    line, _ = _attack(node, front_end, rootfs, "rootfs/evil.yaml",
                      extra_files={"evil.yaml": EVIL_POLICY})
    assert "io.enforcer.policy" in line and "name" in line, line


def test_a_host_file_is_not_read(node: ShimNode, front_end: str, rootfs: str) -> None:
    """An absolute path: the shim must not open it, let alone echo it."""
    secret = node.root / "secret.yaml"
    secret.write_text(f"{SECRET}: 1\nsecond-line-{SECRET}: 2\n")
    secret.chmod(0o600)
    line, _ = _attack(node, front_end, rootfs, str(secret), watched=(str(secret),))
    assert SECRET not in line
    assert "io.enforcer.policy" in line, line


def test_an_unsigned_plan_is_not_loaded(node: ShimNode, front_end: str, rootfs: str) -> None:
    """A `*.json` value was loaded as a compiled Plan, from anywhere."""
    weak = node.root / "weak.json"
    write_plan(str(weak), make_plan(policy_name="weak", no_new_privileges=False))
    line, _ = _attack(node, front_end, rootfs, str(weak), watched=(str(weak),))
    assert "io.enforcer.policy" in line, line


@pytest.mark.parametrize("value", ["../plans/strict", "strict/../lenient", ".hidden",
                                   "strict.json", "-policy", "a b", "strict\n"])
def test_names_that_are_paths_are_refused(node: ShimNode, front_end: str, rootfs: str,
                                          value: str) -> None:
    line, _ = _attack(node, front_end, rootfs, value)
    assert "io.enforcer.policy" in line, line


def test_the_runtimes_own_policy_cannot_be_replaced(node: ShimNode, front_end: str,
                                                   rootfs: str) -> None:
    """The runtime (a RuntimeClass handler, a Docker runtime) names `strict`;
    the pod asks for `lenient`: refused, not silently switched."""
    line, _ = _attack(node, front_end, rootfs, "lenient", shim_args=("--policy", "strict"))
    assert "strict" in line and "lenient" in line, line


def test_only_allowed_policies_may_be_chosen(node: ShimNode, front_end: str,
                                             rootfs: str) -> None:
    config = json.loads(node.config_path.read_text())
    node.write_config({**config, "annotation_policies": ["strict"]})
    try:
        line, _ = _attack(node, front_end, rootfs, "lenient")
        assert "annotation_policies" in line and "lenient" in line, line
    finally:
        node.write_config(config)


def test_an_installed_policy_by_name_runs(node: ShimNode, front_end: str, rootfs: str) -> None:
    """What stays allowed: a name of an installed policy, and the runtime's own."""
    for shim_args in ((), ("--policy", "strict")):
        cid = session.unique("enf-adv-ann-")
        bundle = node.bundle(cid, ["/bin/true"], rootfs,
                             annotations={"io.enforcer.policy": "strict"})
        r = node.shim([*shim_args, "--root", str(node.runc_root), "create", "--bundle",
                       str(bundle), cid], front_end=front_end, cwd=bundle)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert cid in node.containers()
        assert applied_policy(node.root / "run", cid).startswith("strict@")
        seccomp = json.loads((bundle / "config.json").read_text())["linux"]["seccomp"]
        assert any("mkdir" in rule["names"] for rule in seccomp["syscalls"])  # strict's filter
        r = node.shim(["--root", str(node.runc_root), "delete", "--force", cid],
                      front_end=front_end)
        assert r.returncode == 0, r.stderr
        assert cid not in node.containers() and f"{cid}.json" not in node.records()
