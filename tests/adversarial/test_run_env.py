"""Hole 15 (environment): the caller's environment must not leak into the workload.

Before the fix `enforcer run` handed the workload its own whole
environment: tokens, agent sockets (SSH_AUTH_SOCK), LD_PRELOAD, whatever
the caller had. Now a policy's `env` section decides (docs/policy-reference.md):
by default the environment is reset to a short list of harmless names
(as sudo's env_reset does), `keep` adds names or `PREFIX*` patterns,
`set` sets values, `clear: false` passes everything on.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from run_helpers import enforcer_run, require_root, scratch_dir
from tests import session

pytestmark = [pytest.mark.root]

CALLER = {"AWS_SECRET_ACCESS_KEY": "caller-secret", "SSH_AUTH_SOCK": "/tmp/agent.sock",
          "LD_PRELOAD": "/tmp/evil.so", "LANG": "C.UTF-8", "TERM": "xterm",
          "HOME": "/root", "APP_MODE": "debug", "APP_LEVEL": "3", "OTHER": "x"}


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-env-")
    yield d
    session.remove_tree(d)


def workload_env(work: str, args: list[str]) -> dict[str, str]:
    r = enforcer_run([*args, "--", "env", "-0"],
                     env={**CALLER, "ENFORCER_CACHE_DIR": os.path.join(work, "cache")})
    assert r.returncode == 0, r.stderr
    return dict(item.split("=", 1) for item in r.stdout.split("\0") if item)


@pytest.mark.parametrize("args", [[], ["--policy", "restricted"], ["--policy", "default"]],
                         ids=["no-policy", "restricted", "default"])
def test_secrets_in_the_callers_environment_do_not_pass(work: str, args: list[str]) -> None:
    env = workload_env(work, args)
    for name in ("AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK", "LD_PRELOAD", "OTHER", "APP_MODE"):
        assert name not in env, f"{name} reached the workload"
    # The harmless basics stay, so ordinary programs behave as before.
    assert env["LANG"] == "C.UTF-8" and env["TERM"] == "xterm" and "PATH" in env
    assert not any(k.startswith("ENFORCER_") for k in env)


def test_policy_env_keep_set_and_clear(work: str) -> None:
    keep = os.path.join(work, "keep.yaml")
    with open(keep, "w") as f:
        f.write("version: 1\nname: env-keep\nextends: restricted\n"
                "env:\n  keep: [APP_*]\n  set: {APP_MODE: production, EXTRA: \"1\"}\n")
    env = workload_env(work, ["--policy", keep])
    assert env["APP_MODE"] == "production"  # `set` wins over a kept value
    assert env["APP_LEVEL"] == "3" and env["EXTRA"] == "1"
    assert "AWS_SECRET_ACCESS_KEY" not in env and "OTHER" not in env

    passthrough = os.path.join(work, "passthrough.yaml")
    with open(passthrough, "w") as f:
        f.write("version: 1\nname: env-all\nextends: restricted\nenv: {clear: false}\n")
    env = workload_env(work, ["--policy", passthrough])
    assert env["OTHER"] == "x" and env["AWS_SECRET_ACCESS_KEY"] == "caller-secret"
