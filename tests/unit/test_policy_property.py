"""Property test: whatever YAML arrives, the loader returns a Policy or
raises PolicyErrors — never any other exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
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


@settings(max_examples=2000, deadline=None,
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
        assert e.errors
        for err in e.errors:
            assert err.message
            if err.location is not None:
                assert err.location.line >= 1 and err.location.column >= 1
    else:
        assert isinstance(policy, Policy)
