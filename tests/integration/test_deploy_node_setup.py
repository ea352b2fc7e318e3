"""Node setup for real: the policy-sync DaemonSet's script (taken from
deploy/kubernetes/node-setup.yaml) compiles the ConfigMap's policies into
Plans the shim can load, only recompiles what changed, and keeps the last
good Plan when a policy breaks; install-node.sh precompiles the shipped
policies with the real compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import DEPLOY, K8S, VENV_BIN, run, shipped_policy_names, temp_dir, yaml_docs  # noqa: E402

from enforcer.plan import Plan, load_plan_file  # noqa: E402


def sync_script() -> str:
    (ds,) = [d for d in yaml_docs(K8S / "node-setup.yaml") if d["kind"] == "DaemonSet"]
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["/bin/sh", "-c"]
    script: str = c["args"][0]
    return script


def configmap_files(dest: Path) -> list[str]:
    """The ConfigMap's data as kubelet mounts it: one file per key."""
    (cm,) = yaml_docs(K8S / "policies-configmap.yaml")
    for key, text in cm["data"].items():
        (dest / key).write_text(text)
    return sorted(cm["data"])


def sync_once(src: Path, host: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SRC=str(src), HOST_ROOT=str(host), ONCE="1",
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return run(["/bin/sh", "-c", sync_script()], env=env, timeout=300)


def load_plan(path: Path) -> Plan:
    return load_plan_file(str(path))  # strict: verifies fields and hash


@pytest.mark.slow
def test_policy_sync_compiles_updates_and_keeps_the_last_good_plan() -> None:
    with temp_dir("deploy-sync-src-") as src, temp_dir("deploy-sync-host-") as host:
        keys = configmap_files(src)
        r = sync_once(src, host)
        assert r.returncode == 0, r.stderr
        plans = host / "etc" / "enforcer" / "plans"
        for key in keys:
            name = key.removesuffix(".yaml")
            plan = load_plan(plans / f"{name}.json")
            assert plan.policy_name == name
            assert (host / "etc" / "enforcer" / "policies" / key).read_text() == (src / key).read_text()
        assert r.stdout.count("compiled") == len(keys)

        # Nothing changed: nothing is recompiled.
        before = {p.name: p.stat().st_mtime_ns for p in plans.iterdir()}
        r = sync_once(src, host)
        assert r.returncode == 0 and "compiled" not in r.stdout, r.stdout + r.stderr
        assert {p.name: p.stat().st_mtime_ns for p in plans.iterdir()} == before

        # A broken edit: the node keeps the previous Plan and the log says so.
        victim = keys[0]
        name = victim.removesuffix(".yaml")
        good = (plans / f"{name}.json").read_text()
        (src / victim).write_text((src / victim).read_text() + "\nsyscalls: {default: frobnicate}\n")
        r = sync_once(src, host)
        assert r.returncode == 0
        assert f"{victim} does not compile; keeping the previous Plan" in r.stderr
        assert (plans / f"{name}.json").read_text() == good


@pytest.mark.slow
def test_install_node_precompiles_the_shipped_policies() -> None:
    with temp_dir("deploy-node-") as root:
        (root / "etc" / "containerd").mkdir(parents=True)
        env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        r = run(["sh", str(DEPLOY / "containerd" / "install-node.sh"), "--root", str(root),
                 "--python", sys.executable, "--config-version", "2"], env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        for name in shipped_policy_names():
            assert load_plan(root / "etc" / "enforcer" / "plans" / f"{name}.json").policy_name == name
