"""`syscalls.inherit: false`: a file's syscall rules replace its parents'."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.errors import PolicyErrors
from enforcer.policy.loader import load_policy


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def allowed(policy) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.syscall for r in policy.syscalls.rules if not r.action.blocks}


def test_default_inherits_the_parents_rules(tmp_path: Path) -> None:
    child = write(tmp_path, "c.yaml", "name: c\nextends: restricted\nsyscalls:\n  allow: [read]\n")
    p = load_policy(child)
    assert "openat" in allowed(p)  # from restricted's @file-system
    assert len(allowed(p)) > 100


def test_inherit_false_keeps_only_this_files_rules(tmp_path: Path) -> None:
    child = write(tmp_path, "c.yaml", (
        "name: c\nextends: restricted\nsyscalls:\n  inherit: false\n"
        "  allow: [read, write, exit_group]\n"))
    p = load_policy(child)
    assert allowed(p) == {"read", "write", "exit_group"}
    # The base's denials and kill rules are gone too: the default decides.
    assert [r.syscall for r in p.syscalls.rules] == ["read", "write", "exit_group"]
    # Scalars are still inherited from restricted.
    assert str(p.syscalls.default_action) == "errno EPERM"
    assert str(p.syscalls.unknown_action) == "errno ENOSYS"
    # And so is everything outside `syscalls`.
    assert p.filesystem.read_only_root is True
    assert p.user is not None and p.user.uid == 65534


def test_inherit_false_with_no_rules_allows_nothing(tmp_path: Path) -> None:
    child = write(tmp_path, "c.yaml", "name: c\nextends: default\nsyscalls:\n  inherit: false\n")
    assert load_policy(child).syscalls.rules == ()


def test_inherit_true_is_the_default(tmp_path: Path) -> None:
    a = load_policy(write(tmp_path, "a.yaml", "name: a\nextends: default\nsyscalls:\n  allow: [read]\n"))
    b = load_policy(write(tmp_path, "b.yaml", (
        "name: b\nextends: default\nsyscalls:\n  inherit: true\n  allow: [read]\n")))
    def key(p):  # type: ignore[no-untyped-def]
        return [(r.syscall, r.action, r.args) for r in p.syscalls.rules]

    assert key(a) == key(b)


def test_grandchild_adds_to_an_inherit_false_parent(tmp_path: Path) -> None:
    write(tmp_path, "learned.yaml", (
        "name: learned\nextends: default\nsyscalls:\n  inherit: false\n  allow: [read]\n"))
    top = write(tmp_path, "top.yaml", "name: top\nextends: learned.yaml\nsyscalls:\n  allow: [write]\n")
    assert allowed(load_policy(top)) == {"read", "write"}


def test_only_ancestors_are_replaced_in_a_diamond(tmp_path: Path) -> None:
    # io_setup: a syscall restricted does not name, so side's entry survives
    # the merge up to learned.yaml.
    write(tmp_path, "side.yaml", "name: side\nsyscalls:\n  allow: [io_setup]\n")
    write(tmp_path, "learned.yaml", (
        "name: learned\nextends: restricted\nsyscalls:\n  inherit: false\n  allow: [read]\n"))
    # side comes first in the chain but is not an ancestor of learned.
    top = write(tmp_path, "top.yaml", "name: top\nextends: [side.yaml, learned.yaml]\n")
    assert allowed(load_policy(top)) == {"io_setup", "read"}


def test_inherit_must_be_a_boolean(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "name: bad\nsyscalls:\n  inherit: maybe\n")
    with pytest.raises(PolicyErrors) as e:
        load_policy(bad)
    text = str(e.value.errors[0])
    assert "bad.yaml:3" in text and "syscalls.inherit" in text


def test_schema_knows_inherit() -> None:
    import json

    from enforcer.policy.make_schema import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["properties"]["syscalls"]["properties"]["inherit"] == {"type": "boolean"}
