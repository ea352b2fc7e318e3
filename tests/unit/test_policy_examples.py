"""policies/examples/: what docs/servers.md promises of each example,
checked on the loaded policy (the real servers run under them in
tests/integration/test_example_servers.py), and the YAML of
docs/servers.md loads."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from enforcer.compile.compiler import compile_policy
from enforcer.kernel.capabilities import from_name
from enforcer.policy.loader import load_policy
from enforcer.policy.model import Policy
from tests.policy_helpers import REPO

EXAMPLES = REPO / "policies" / "examples"
OWN_USER = {"nginx": "www-data", "redis": "redis", "postgresql": "postgres"}
PORTS = {"nginx": 8080, "nginx-as-root": 8080, "redis": 6379, "postgresql": 5432}


def load(name: str) -> Policy:
    return load_policy(str(EXAMPLES / f"{name}.yaml"))


def test_every_example_is_listed() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(PORTS)


@pytest.mark.parametrize("name", sorted(PORTS))
def test_example_is_tight(name: str) -> None:
    p = load(name)
    compile_policy(p)
    assert p.name == name and p.scope == "host"
    assert p.no_new_privileges and p.filesystem.read_only_root
    assert p.resources.memory_max and p.resources.pids_max
    assert {"mount", "pid"} <= set(p.namespaces)
    ll = p.landlock
    assert ll is not None
    # Only the server's own port, and no outgoing connections.
    assert ll.bind == (PORTS[name],) and ll.connect == ()
    assert set(ll.scope) == {"signal", "abstract-unix-socket"}
    # Nothing both writable and executable; nothing writable on a system path.
    writes = {g.path for g in ll.write}
    execs = {g.path for g in ll.execute}
    assert not any(w == e or e.startswith(w.rstrip("/") + "/") for w in writes for e in execs)
    assert not writes & {"/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/var"}
    assert "/" not in {g.path for g in ll.read} and "/etc" not in {g.path for g in ll.read}


@pytest.mark.parametrize("name", sorted(OWN_USER))
def test_example_runs_as_its_own_user_without_capabilities(name: str) -> None:
    import pwd

    p = load(name)
    assert p.user is not None and not p.user.dynamic
    try:
        want = pwd.getpwnam(OWN_USER[name]).pw_uid
    except KeyError:
        pytest.skip(f"{OWN_USER[name]} does not exist here (its Debian package creates it)")
    assert p.user.uid == want != 0
    assert p.capabilities.keep == frozenset() and not p.capabilities.ambient


def test_nginx_as_root_keeps_only_what_switching_users_needs() -> None:
    p = load("nginx-as-root")
    assert p.user is not None and p.user.uid == 0
    assert p.capabilities.keep == frozenset(from_name(c) for c in ("SETUID", "SETGID", "CHOWN"))
    # The switch may go to www-data (33) only: every allowed uid/gid-changing
    # call carries a condition naming it, or bounds setgroups' length.
    changing = {"setuid", "setgid", "setgroups", "chown", "setresuid", "setresgid", "setreuid",
                "setregid", "fchown", "fchownat", "lchown", "setfsuid", "setfsgid", "capset"}
    allowed = [r for r in p.syscalls.rules
               if r.syscall in changing and r.action.kind.name == "ALLOW"]
    assert {r.syscall for r in allowed} == {"setuid", "setgid", "setgroups", "chown"}
    for r in allowed:
        assert r.args, f"{r.syscall} allowed without a condition"
        if r.syscall == "setgroups":
            assert [(a.index, a.op.name, a.value) for a in r.args] == [(0, "LE", 1)]
        else:
            uid_arg = 1 if r.syscall == "chown" else 0
            assert any(a.index == uid_arg and a.op.name == "EQ" and a.value == 33 for a in r.args)


SERVERS_DOC = REPO / "docs" / "servers.md"


@pytest.mark.parametrize("name", sorted(PORTS))
def test_servers_doc_table_has_each_example_with_its_lint_score(name: str) -> None:
    from enforcer.policy import lint as lint_mod

    m = re.search(rf"^\| `{re.escape(name)}.yaml` \|.* \| (\d+\.\d) \|$", SERVERS_DOC.read_text(),
                  re.M)
    assert m, f"{name} missing from the table of docs/servers.md"
    assert float(m.group(1)) == lint_mod.lint(load(name)).score, name


@pytest.mark.parametrize("index,block", list(enumerate(
    re.findall(r"```yaml\n(.*?)```", SERVERS_DOC.read_text(), re.S))))
def test_servers_doc_yaml_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int,
                                block: str) -> None:
    # `extends: nginx` names the administrator's copy of the example.
    admin = tmp_path / "policies"
    admin.mkdir()
    shutil.copy(EXAMPLES / "nginx.yaml", admin / "nginx.yaml")
    monkeypatch.setenv("ENFORCER_POLICY_DIR", str(admin))
    if not re.search(r"^name:", block, re.M):
        block = "name: example\n" + block
    path = tmp_path / "example.yaml"
    path.write_text(block)
    os.chmod(path, 0o644)
    load_policy(str(path))
