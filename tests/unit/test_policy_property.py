"""Property test: whatever YAML arrives, the loader returns a Policy or
raises PolicyErrors — never any other exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from enforcer.errors import PolicyErrors
from enforcer.policy.loader import load_policy
from enforcer.policy.model import Policy

KEYS = ["version", "name", "description", "extends", "mode", "syscalls", "capabilities",
        "no_new_privileges", "filesystem", "resources", "rlimits", "user", "namespaces",
        "default", "allow", "deny", "rules", "args", "index", "op", "value", "mask", "action",
        "keep", "drop", "add", "memory", "max", "swap", "pids", "cpu", "cores", "quota", "period",
        "io", "weight", "devices", "device", "tmpfs", "path", "size", "mode", "options",
        "read_only_root", "masked_paths", "uid", "gid", "groups", "nofile", "soft", "hard",
        "architectures", "unknown", "deny_action", "log_denials", "syscalls", "rootfs", "<<"]
WORDS = ["read", "write", "@basic-io", "@system-service", "ptrace", "wirte", "errno EPERM",
         "errno 1", "allow", "kill", "kill-process", "log", "trap", "errno", "errno EPREM",
         "64Mi", "1G", "10MB", "max", "unlimited", "CLONE_NEWUSER|CLONE_NEWNS", "AF_INET",
         "masked_eq", "eq", "ne", "NET_BIND_SERVICE", "ALL", "cap_chown", "/tmp", "tmp", "/..",
         "default", "native", "x86_64", "x32", "aarch64", "mount", "net", "nobody", "root",
         "enforce", "audit", "1777", "8:0", "50ms", "1.5", "restricted", "./x.yaml", "", "\t", "~"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=5),
    ),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(
    lambda d: {"name": "p", **d} if d.get("name") is None and len(d) % 2 else d
)


def _mutate(text: str, data: st.DataObject) -> str:
    """Sometimes damage the text: cut it, or splice in YAML punctuation."""
    choice = data.draw(st.integers(0, 3))
    if choice == 0 or not text:
        return text
    pos = data.draw(st.integers(0, len(text)))
    if choice == 1:
        return text[:pos]
    junk = data.draw(st.sampled_from(["&a ", "*a", "[", "]", "{", ": ", "- ", "\t", "!!binary ",
                                      "!x ", "---\n", "\x00", "\ufeff", "'", '"', "? ", "<<: *a\n"]))
    return text[:pos] + junk + text[pos:]


@settings(max_examples=2000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=documents, data=st.data())
def test_loader_never_raises_anything_but_policy_errors(tmp_path: Path, doc: dict[str, Any],
                                                        data: st.DataObject) -> None:
    text = yaml.safe_dump(doc, default_flow_style=data.draw(st.booleans()), allow_unicode=True)
    text = _mutate(text, data)
    path = tmp_path / "generated.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        policy = load_policy(str(path))
    except PolicyErrors as e:
        event("refused with PolicyErrors")
        assert e.errors
        for err in e.errors:
            assert err.message
            if err.location is not None:
                assert err.location.line >= 1 and err.location.column >= 1
    else:
        event("loaded as a Policy")
        assert isinstance(policy, Policy)


# Mostly well-formed policies, so the merge and build stages see real work too.
sc_words = st.sampled_from(["read", "write", "close", "socket", "clone", "ptrace", "mount", "open",
                            "@basic-io", "@network", "@system-service", "@mount", "@debug", "bpf"])
actions = st.sampled_from(["allow", "errno EPERM", "errno 38", "kill-process", "log", "trap",
                           {"action": "errno", "errno": "EACCES"}])
arg = st.fixed_dictionaries({"index": st.integers(0, 5), "op": st.sampled_from(["eq", "ne", "gt", "le"]),
                             "value": st.sampled_from([0, 1, "AF_INET", "CLONE_NEWUSER|CLONE_NEWNS", 2**40])})
rule = st.fixed_dictionaries({"syscalls": st.lists(sc_words, min_size=1, max_size=3), "action": actions},
                             optional={"args": st.lists(arg, max_size=2)})
plausible = st.fixed_dictionaries(
    {"name": st.just("plausible")},
    optional={
        "mode": st.sampled_from(["enforce", "audit"]),
        "extends": st.sampled_from(["default", "restricted", ["web-server", "batch-job"]]),
        "syscalls": st.fixed_dictionaries({}, optional={
            "default": actions, "allow": st.lists(sc_words, max_size=4), "deny": st.lists(sc_words, max_size=4),
            "rules": st.lists(rule, max_size=4),
            "architectures": st.sampled_from([["native"], ["x86_64", "x86"], ["aarch64"], ["native", "x32"]]),
        }),
        "capabilities": st.one_of(
            st.fixed_dictionaries({"keep": st.lists(st.sampled_from(["CHOWN", "sys_admin", "ALL", "NET_RAW"]))}),
            st.fixed_dictionaries({}, optional={"drop": st.lists(st.sampled_from(["ALL", "KILL"])),
                                                "add": st.lists(st.sampled_from(["CHOWN", "cap_kill"]))})),
        "filesystem": st.fixed_dictionaries({}, optional={
            "read_only_root": st.booleans(), "masked_paths": st.sampled_from(["default", ["default", "/x"]]),
            "tmpfs": st.lists(st.fixed_dictionaries({"path": st.sampled_from(["/tmp", "/run"])},
                                                    optional={"size": st.sampled_from(["1Mi", 0, "2G"])}),
                              max_size=2),
            "read_only_paths": st.lists(st.sampled_from(["/etc", "/usr"])),
            "writable_paths": st.lists(st.sampled_from(["/etc", "/var"]))}),
        "resources": st.fixed_dictionaries({}, optional={
            "memory": st.fixed_dictionaries({}, optional={"max": st.sampled_from(["64Mi", "max", 1, "1.5Gi"]),
                                                          "swap": st.sampled_from([0, "1G"])}),
            "pids": st.fixed_dictionaries({"max": st.integers(-1, 100)}),
            "cpu": st.sampled_from([{"cores": 0.5}, {"quota": "50ms"}, {"cores": 0}])}),
        "rlimits": st.dictionaries(st.sampled_from(["nofile", "CORE", "rlimit_nproc"]),
                                   st.sampled_from([0, 1024, "unlimited", {"soft": 1, "hard": 2}])),
        "user": st.sampled_from([{"uid": 0}, {"uid": "nobody"}, {"uid": 1000, "groups": [1, "nogroup"]}]),
        "namespaces": st.lists(st.sampled_from(["mount", "pid", "net", "user"]), unique=True),
    },
)


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=plausible)
def test_plausible_policies_load_or_fail_cleanly(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "plausible.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        policy = load_policy(str(path))
    except PolicyErrors as e:
        event("refused with PolicyErrors")
        assert all(err.message for err in e.errors)
    else:
        event("loaded as a Policy")
        assert policy.name == "plausible"
        for r in policy.syscalls.rules:
            assert r.origin is not None and r.via
        from enforcer.policy.lint import lint

        assert 0.0 <= lint(policy).score <= 10.0
