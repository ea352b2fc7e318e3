"""Exports of `env`, a dynamic user and `private_devices`: what each target
gets, and what it reports it cannot say."""

from __future__ import annotations

from pathlib import Path

from enforcer.emit.docker import docker_export
from enforcer.emit.kubernetes import kubernetes_export
from enforcer.emit.oci import merge_patch, oci_patch
from enforcer.emit.systemd import systemd_export
from enforcer.policy.loader import load_policy
from enforcer.policy.model import Policy

POLICY = """name: app
extends: restricted
filesystem: {private_devices: true}
env:
  keep: [APP_*, http_proxy]
  set: {MODE: production, QUOTE: 'a "b" 50%'}
"""


def policy(tmp_path: Path, text: str = POLICY) -> Policy:
    path = tmp_path / "app.yaml"
    path.write_text(text)
    return load_policy(str(path))


def test_oci_sets_env_and_keeps_the_images(tmp_path: Path) -> None:
    patch, notes = oci_patch(policy(tmp_path))
    assert patch["process"]["env"] == ["MODE=production", 'QUOTE=a "b" 50%']
    assert patch["process"]["user"] == {"uid": 65534, "gid": 65534}
    merged = merge_patch({"process": {"env": ["PATH=/usr/bin", "MODE=debug"]}}, patch)
    assert merged["process"]["env"] == ["PATH=/usr/bin", "MODE=production", 'QUOTE=a "b" 50%']
    assert any("dynamic user" in n for n in notes)
    assert any("env.keep APP_*, http_proxy" in n for n in notes)


def test_container_targets_say_nothing_about_the_default_env(tmp_path: Path) -> None:
    _, notes = oci_patch(load_policy("default"))
    assert not any("env" in n for n in notes)


def test_docker_and_kubernetes(tmp_path: Path) -> None:
    p = policy(tmp_path)
    export, notes = docker_export(p)
    flags = export.flags
    assert flags[flags.index("--env") + 1] == "MODE=production"
    assert any("dynamic user" in n for n in notes)
    k8s, notes = kubernetes_export(p)
    [container] = k8s.pod["spec"]["containers"]
    assert container["env"][0] == {"name": "MODE", "value": "production"}
    assert k8s.pod["spec"]["securityContext"]["runAsUser"] == 65534
    assert any("dynamic user" in n for n in notes)


def test_systemd(tmp_path: Path) -> None:
    text, notes = systemd_export(policy(tmp_path))
    lines = text.splitlines()
    assert "DynamicUser=yes" in lines and not any(ln.startswith("User=") for ln in lines)
    assert "PrivateDevices=yes" in lines
    assert "PassEnvironment=http_proxy" in lines
    assert 'Environment="QUOTE=a \\"b\\" 50%%"' in lines
    assert any("APP_*" in n and "PassEnvironment" in n for n in notes)
    passthrough, notes = systemd_export(policy(tmp_path, "name: all\nenv: {clear: false}\n"))
    assert any("env.clear: false" in n for n in notes)
