"""The policy side of `enforcer run` as a host sandbox: `user.dynamic`,
`scope`, `filesystem.private_devices`, the `host-root-writable` lint
finding, and what the shipped policies say about each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enforcer.compile.compiler import compile_policy
from enforcer.errors import PolicyErrors
from enforcer.plan import MountOp, UserPlan
from enforcer.policy.lint import lint
from enforcer.policy.loader import load_policy
from enforcer.policy.model import DYNAMIC_FALLBACK_ID


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def findings(spec: str) -> set[str]:
    return {f.id for f in lint(load_policy(spec)).findings}


def test_dynamic_user_compiles_to_a_fallback_marked_dynamic(tmp_path: Path) -> None:
    p = load_policy(write(tmp_path, "d.yaml", "name: d\nuser: {dynamic: true, groups: [27]}\n"))
    assert p.user is not None and p.user.dynamic and p.user.uid == DYNAMIC_FALLBACK_ID
    assert compile_policy(p).user == UserPlan(uid=DYNAMIC_FALLBACK_ID, gid=DYNAMIC_FALLBACK_ID,
                                              groups=(27,), dynamic=True)


@pytest.mark.parametrize("text,message", [
    ("user: {dynamic: true, uid: 1000}", "user.uid cannot go with `dynamic: true`"),
    ("user: {dynamic: true, gid: 1000}", "user.gid cannot go with `dynamic: true`"),
    ("user: {dynamic: false}", "user needs `uid:` (a number or a user name) or `dynamic: true`"),
    ("user: {dynamic: yes please}", "user.dynamic must be true or false"),
    ("scope: cluster", "scope must be `host` or `container`"),
    ("filesystem: {private_devices: 1}", "filesystem.private_devices must be true or false"),
])
def test_bad_values_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyErrors) as e:
        load_policy(write(tmp_path, "bad.yaml", f"name: bad\n{text}\n"))
    assert message in str(e.value) and "bad.yaml:2:" in str(e.value)


def test_a_child_replaces_an_inherited_dynamic_user(tmp_path: Path) -> None:
    p = load_policy(write(tmp_path, "c.yaml", "name: c\nextends: restricted\nuser: {uid: 1000}\n"))
    assert p.user is not None and not p.user.dynamic and p.user.uid == 1000


def test_scope_is_never_inherited(tmp_path: Path) -> None:
    assert load_policy("default").scope == "container"
    child = load_policy(write(tmp_path, "c.yaml", "name: c\nextends: default\n"))
    assert child.scope == "host"
    # ... so the extended container policy is judged as a host sandbox:
    assert "host-root-writable" in findings(write(tmp_path, "c2.yaml", "name: c2\n"
                                                   "extends: default\n"))
    assert "host-root-writable" not in findings("default")


def test_host_root_writable_is_flagged_only_for_root_with_a_writable_host_root(
        tmp_path: Path) -> None:
    assert "host-root-writable" in findings(write(tmp_path, "a.yaml", "name: a\n"))
    assert "host-root-writable" in findings(write(tmp_path, "b.yaml",
                                                  "name: b\nuser: {uid: 0}\n"))
    for text in ("filesystem: {read_only_root: true}", "user: {uid: 1000}",
                 "user: {dynamic: true}", "filesystem: {rootfs: /srv/root}",
                 "scope: container"):
        assert "host-root-writable" not in findings(write(tmp_path, "ok.yaml",
                                                          f"name: ok\n{text}\n")), text
    report = lint(load_policy(write(tmp_path, "a.yaml", "name: a\n")))
    [f] = [f for f in report.findings if f.id == "host-root-writable"]
    assert f.weight >= 0.5 and "scope: container" in f.message


@pytest.mark.parametrize("name", ["sandbox", "restricted", "web-server", "batch-job"])
def test_host_policies_confine_on_the_host(name: str) -> None:
    """What hole 7 asks of a host sandbox: read-only root, own pid namespace,
    no root with a writable host root (the lint finding)."""
    p = load_policy(name)
    assert p.scope == "host" and p.filesystem.read_only_root and "pid" in p.namespaces
    assert "host-root-writable" not in findings(name)


def test_sandbox_is_root_without_capabilities_or_host_devices() -> None:
    p = load_policy("sandbox")
    assert p.user is None and p.capabilities.keep == frozenset()
    plan = compile_policy(p)
    assert MountOp(kind="devices", path="/dev") in plan.mounts
    # The /dev/shm tmpfs lands on the private /dev: mounted after it.
    kinds = [(op.kind, op.path) for op in plan.mounts]
    assert kinds.index(("devices", "/dev")) < kinds.index(("tmpfs", "/dev/shm"))
    assert plan.cgroup.empty  # also runs for an unprivileged caller without a delegated cgroup


@pytest.mark.parametrize("name", ["restricted", "web-server", "batch-job"])
def test_confining_policies_get_a_dynamic_user(name: str) -> None:
    p = load_policy(name)
    assert p.user is not None and p.user.dynamic


def test_writable_paths_with_a_dynamic_user_get_a_note(tmp_path: Path) -> None:
    plan = compile_policy(load_policy(write(
        tmp_path, "w.yaml", "name: w\nextends: restricted\n"
                            "filesystem: {writable_paths: [/var/lib/w]}\n")))
    assert any("dynamic uid" in n and "writable_paths" in n for n in plan.notes)


def test_schema_accepts_the_new_fields(tmp_path: Path) -> None:
    import jsonschema

    from enforcer.policy.make_schema import build

    schema = build()
    good = {"name": "g", "scope": "container", "user": {"dynamic": True, "groups": [1]},
            "filesystem": {"private_devices": True},
            "env": {"clear": True, "keep": ["LC_*", "TERM"], "set": {"A": "b"}}}
    jsonschema.validate(good, schema)
    for bad in ({"name": "b", "user": {"dynamic": True, "uid": 1}},
                {"name": "b", "user": {"dynamic": False}},
                {"name": "b", "env": {"set": {"A": 1}}},
                {"name": "b", "env": {"keep": ["A B"]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    shipped = json.loads((Path(__file__).parents[2] / "enforcer/policy/schema.json").read_text())
    assert shipped == schema
