"""Hole 14: a non-root user inherited the base's capabilities as ambient.

`extends: default` plus `user:` (a database server, say) gave the non-root
workload default's 14 capabilities in its ambient set: it read a root-only
file through CAP_DAC_OVERRIDE and setuid(0) succeeded -- more privilege than
the same server run unconfined. The attacker here is the workload itself
(or whoever exploits it). After the fix a capability is ambient for a
non-root user only when the policy lists it under `capabilities.ambient`.

Run against the code before the fix (commit cd0cd9d):
test_extends_default_with_a_user_holds_no_capability failed with
CapAmb/CapEff 00000000a80425fb, the secret read, and setuid(0) == 0.
"""

from __future__ import annotations

import os
import subprocess
from typing import Iterator

import pytest

from tests import session

from run_helpers import PYTHON, REPO, require_root, scratch_dir

pytestmark = [pytest.mark.root]

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody (the default python3 is not)

# The workload: report its capability sets, try the secret, try setuid(0).
PROBE = r"""
import os, sys
caps = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')}
print('CapEff', caps['CapEff']); print('CapAmb', caps['CapAmb']); print('CapPrm', caps['CapPrm'])
try:
    print('secret', open(sys.argv[1]).read().strip())
except OSError as e:
    print('secret-denied', e.errno)
try:
    os.setuid(0); print('setuid0 ok')
except OSError as e:
    print('setuid0-denied', e.errno)
"""


@pytest.fixture
def scratch() -> Iterator[str]:
    require_root()
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run a workload as nobody")
    d = scratch_dir("enforcer-ambient-")
    yield d
    session.remove_tree(d)


def run_as(policy_text: str, scratch: str) -> dict[str, str]:
    policy = os.path.join(scratch, "server.yaml")
    with open(policy, "w") as f:
        f.write(policy_text)
    os.chmod(policy, 0o644)
    secret = os.path.join(scratch, "secret")
    with open(secret, "w") as f:
        f.write("s3cr3t\n")
    os.chmod(secret, 0o600)  # root's only
    probe = os.path.join(scratch, "probe.py")
    with open(probe, "w") as f:
        f.write(PROBE)
    os.chmod(probe, 0o644)
    env = dict(os.environ, ENFORCER_CACHE_DIR=os.path.join(scratch, "cache"))
    r = subprocess.run([PYTHON, "-m", "enforcer", "run", "--policy", policy, "--",
                        SYSTEM_PYTHON, "-I", probe, secret],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def test_extends_default_with_a_user_holds_no_capability(scratch: str) -> None:
    got = run_as(f"name: server\nextends: default\nuser: {{uid: {NOBODY}, gid: {NOBODY}}}\n",
                 scratch)
    assert int(got["CapAmb"], 16) == 0, got
    assert int(got["CapEff"], 16) == 0, got
    assert int(got["CapPrm"], 16) == 0, got
    assert "secret" not in got and got.get("secret-denied") == "13", got  # EACCES
    assert "setuid0" not in got and got.get("setuid0-denied") == "1", got  # EPERM


def test_an_explicit_ambient_capability_is_the_only_one_held(scratch: str) -> None:
    got = run_as(f"name: server\nextends: default\nuser: {{uid: {NOBODY}, gid: {NOBODY}}}\n"
                 "capabilities:\n  keep: [NET_BIND_SERVICE, SETUID, DAC_OVERRIDE]\n"
                 "  ambient: [NET_BIND_SERVICE]\n", scratch)
    bind = 1 << 10
    assert int(got["CapAmb"], 16) == bind and int(got["CapEff"], 16) == bind, got
    assert got.get("secret-denied") == "13" and got.get("setuid0-denied") == "1", got
