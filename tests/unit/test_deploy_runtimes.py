"""deploy/docker and deploy/containerd: the shim is registered once per
shipped policy, containerd itself accepts the handler config, the wrappers
pass runc's command line through untouched, the shim reads the policy they
add, and install-node.sh sets a node root up (and is safe to run again)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import DEPLOY, need, run, shipped_policy_names, temp_dir  # noqa: E402

CONTAINERD = DEPLOY / "containerd"
SHIM = "/usr/local/bin/enforcer-runc"


def test_daemon_json_registers_the_shim_per_policy() -> None:
    runtimes = json.loads((DEPLOY / "docker" / "daemon.json").read_text())["runtimes"]
    assert sorted(runtimes) == [f"enforcer-{n}" for n in shipped_policy_names()]
    for name, rt in runtimes.items():
        policy = name.removeprefix("enforcer-")
        assert rt == {"path": SHIM, "runtimeArgs": ["--policy", policy]}


def test_the_shim_reads_the_policy_docker_and_the_wrappers_pass() -> None:
    """Docker puts runtimeArgs before runc's global flags; so do the wrappers."""
    from enforcer.shim.cmdline import parse

    argv = ["--policy", "restricted", "--root", "/run/docker/runtime-runc/moby", "--log",
            "/x/log.json", "--log-format", "json", "create", "--bundle", "/b", "--pid-file",
            "/b/init.pid", "c1"]
    cl = parse(argv)
    assert cl.shim == {"policy": "restricted"}
    assert cl.command == "create"
    assert "--policy" not in cl.runc_args and cl.runc_args[0] == "--root"


def containerd_runtimes(version: int) -> dict[str, Any]:
    path = CONTAINERD / ("enforcer-runtimes.toml" if version == 2 else "enforcer-runtimes.v3.toml")
    doc = tomllib.loads(path.read_text())
    assert doc["version"] == version
    plugin = "io.containerd.grpc.v1.cri" if version == 2 else "io.containerd.cri.v1.runtime"
    runtimes: dict[str, Any] = doc["plugins"][plugin]["containerd"]["runtimes"]
    return runtimes


@pytest.mark.parametrize("version", [2, 3])
def test_containerd_snippets_have_a_handler_per_policy(version: int) -> None:
    runtimes = containerd_runtimes(version)
    expected = {f"enforcer-{n}" for n in shipped_policy_names()} | {"enforcer"}
    assert set(runtimes) == expected
    for name, rt in runtimes.items():
        assert rt["runtime_type"] == "io.containerd.runc.v2"
        if name == "enforcer":
            assert rt["options"]["BinaryName"] == SHIM
            assert rt["pod_annotations"] == ["io.enforcer.policy"]
        else:
            assert rt["options"]["BinaryName"] == f"/usr/local/bin/enforcer-runc-{name[9:]}"
            assert (CONTAINERD / "bin" / f"enforcer-runc-{name[9:]}").exists()


def test_containerd_loads_the_handlers_install_node_adds() -> None:
    """containerd's own config loader reads the config install-node.sh
    writes: the node's CRI settings and runc handler survive, ours join.
    (Through `imports` they did not: containerd replaces the whole CRI
    section with an imported file's; tests/e2e/test_cri.py runs pods.)"""
    containerd = need("containerd")
    r = run([containerd, "--version"])
    if " 1." not in r.stdout:
        pytest.skip(f"config version 2 needs containerd 1.x; have {r.stdout.strip()}")
    with temp_dir("deploy-containerd-") as root:
        (root / "etc" / "containerd").mkdir(parents=True)
        config = root / "etc" / "containerd" / "config.toml"
        config.write_text(NODE_CONFIG)
        assert install(root, "--config-version", "2").returncode == 0
        r = run([containerd, "--config", str(config), "config", "dump"])
    assert r.returncode == 0, r.stderr
    cri = tomllib.loads(r.stdout)["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "pause:3.9"
    runtimes = cri["containerd"]["runtimes"]
    assert runtimes["runc"]["options"]["SystemdCgroup"] is True
    for policy in shipped_policy_names():
        rt = runtimes[f"enforcer-{policy}"]
        assert rt["runtime_type"] == "io.containerd.runc.v2"
        assert rt["options"]["BinaryName"] == f"/usr/local/bin/enforcer-runc-{policy}"
    assert runtimes["enforcer"]["pod_annotations"] == ["io.enforcer.policy"]
    assert runtimes["enforcer"]["container_annotations"] == ["io.enforcer.policy"]


@pytest.mark.parametrize("policy", shipped_policy_names())
def test_wrapper_passes_every_argument_through(policy: str) -> None:
    wrapper = CONTAINERD / "bin" / f"enforcer-runc-{policy}"
    assert os.access(wrapper, os.X_OK)
    with temp_dir("deploy-wrapper-") as d:
        recorder = d / "enforcer-runc"
        recorder.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\nexit 42\n')
        recorder.chmod(0o755)
        test_copy = d / wrapper.name
        test_copy.write_text(wrapper.read_text().replace(SHIM, str(recorder)))
        test_copy.chmod(0o755)
        args = ["--root", "/run/containerd/runc/k8s.io", "--log", "/x y/log.json", "create",
                "--bundle", "/b", "--pid-file", "/b/init.pid", "id with space", ""]
        r = run([str(test_copy), *args])
    assert r.returncode == 42, "the wrapper must exec the shim and keep its exit status"
    assert r.stdout.split("\n")[:-1] == ["--policy", policy, *args]


def install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(["sh", str(CONTAINERD / "install-node.sh"), "--root", str(root), "--no-plans",
                "--python", sys.executable, *extra])


# A node's config as kubeadm-style setups write it: its own CRI settings and
# runc handler, which install-node.sh must keep.
NODE_CONFIG = """version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
"""


def _handlers(doc: dict[str, Any], plugin: str) -> dict[str, Any]:
    runtimes: dict[str, Any] = doc["plugins"][plugin]["containerd"]["runtimes"]
    return runtimes


def test_install_node_sets_up_a_root_and_is_idempotent() -> None:
    with temp_dir("deploy-node-") as root:
        (root / "etc" / "containerd").mkdir(parents=True)
        config = root / "etc" / "containerd" / "config.toml"
        config.write_text(NODE_CONFIG)
        # what an older install-node.sh left: removed
        (root / "etc" / "containerd" / "conf.d").mkdir()
        (root / "etc" / "containerd" / "conf.d" / "enforcer-runtimes.toml").write_text("")
        r = install(root, "--config-version", "2")
        assert r.returncode == 0, r.stderr
        text = config.read_text()
        assert text.startswith(NODE_CONFIG), "the node's own settings come first, unchanged"
        doc = tomllib.loads(text)
        assert doc["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == "pause:3.9"
        handlers = _handlers(doc, "io.containerd.grpc.v1.cri")
        shipped = containerd_runtimes(2)
        assert {k: v for k, v in handlers.items() if k != "runc"} == shipped
        assert handlers["runc"]["options"] == {"SystemdCgroup": True}  # the node's, kept
        assert not (root / "etc" / "containerd" / "conf.d" / "enforcer-runtimes.toml").exists()
        for policy in shipped_policy_names():
            w = root / "usr" / "local" / "bin" / f"enforcer-runc-{policy}"
            assert os.access(w, os.X_OK)
        sysctl = (root / "etc" / "sysctl.d" / "10-enforcer-monitor.conf").read_text()
        assert "\nnet.core.rmem_max = 33554432\n" in sysctl
        r = install(root, "--config-version", "2")
        assert r.returncode == 0, r.stderr
        assert config.read_text() == text, "a second run replaces its block, adds no second one"


def test_install_node_creates_a_config_when_there_is_none() -> None:
    """containerd's defaults plus ours: its built-in runc handler written out,
    because a config that defines any handler loses it."""
    with temp_dir("deploy-node-") as root:
        (root / "etc" / "containerd").mkdir(parents=True)
        r = install(root, "--config-version", "3")
        assert r.returncode == 0, r.stderr
        doc = tomllib.loads((root / "etc" / "containerd" / "config.toml").read_text())
        assert doc["version"] == 3 and "imports" not in doc
        handlers = _handlers(doc, "io.containerd.cri.v1.runtime")
        assert handlers["runc"] == {"runtime_type": "io.containerd.runc.v2"}
        assert {k: v for k, v in handlers.items() if k != "runc"} == containerd_runtimes(3)


def test_install_node_refuses_handlers_it_did_not_write() -> None:
    with temp_dir("deploy-node-") as root:
        (root / "etc" / "containerd").mkdir(parents=True)
        config = root / "etc" / "containerd" / "config.toml"
        mine = NODE_CONFIG + \
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.enforcer-default]\n'
        config.write_text(mine)
        r = install(root, "--config-version", "2")
        assert r.returncode == 1
        assert "already defines enforcer handlers" in r.stderr and len(r.stderr.splitlines()) == 1
        assert config.read_text() == mine


def test_install_node_rejects_bad_arguments() -> None:
    with temp_dir("deploy-node-") as root:
        r = install(root, "--config-version", "9")
        assert r.returncode == 1 and "must be 2 or 3" in r.stderr
        r = install(root, "--frobnicate")
        assert r.returncode == 2 and "unknown argument" in r.stderr
