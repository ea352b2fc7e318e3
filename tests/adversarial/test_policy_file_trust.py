"""Hole 9: policy files are trusted blindly.

The attacker is a local user (or a workload) who can write a file that a
privileged `enforcer run` then reads as its policy: a policy left
world-writable, one owned by another user, one in a directory someone else
can write (they swap the file), an `extends` that reaches a host file or
climbs out of the policy's directory, or a bare name that used to fall back
to a file of that name in the working directory. As root, every one of them
must be refused before anything runs, with one line naming the file and
what is allowed; the workload's marker file must never appear.

Run against the code before the fix (commit cd0cd9d) every refusal test
here failed: the workload ran (exit 0, marker created).
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
# A complete, permissive policy: if it is used, the marker gets written.
PERMISSIVE = "name: {name}\nsyscalls: {{default: allow}}\n"
APPLY_FAILED = 125


@pytest.fixture
def scratch() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-trust-")  # root-owned, 0755, under /var/lib
    yield d
    session.remove_tree(d)


def write(path: str, text: str, mode: int = 0o644, uid: int = 0) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    os.chown(path, uid, 0)
    return path


def run_policy(spec: str, scratch: str, *, cwd: str = REPO) -> tuple[subprocess.CompletedProcess[str], str]:
    """`enforcer run --policy SPEC -- touch MARKER` as root; (result, marker path)."""
    marker = os.path.join(scratch, "workload-ran")
    env = dict(os.environ, ENFORCER_CACHE_DIR=os.path.join(scratch, "cache"),
               PYTHONPATH=REPO)
    r = subprocess.run([PYTHON, "-m", "enforcer", "run", "--policy", spec, "--",
                        "/bin/touch", marker], capture_output=True, text=True, env=env,
                       cwd=cwd, timeout=120)
    return r, marker


def assert_refused(r: subprocess.CompletedProcess[str], marker: str, *words: str) -> None:
    assert r.returncode == APPLY_FAILED, (r.returncode, r.stderr)
    assert not os.path.exists(marker), "the workload ran under an untrusted policy"
    for word in words:
        assert word in r.stderr, f"{word!r} not in: {r.stderr}"
    assert "Traceback" not in r.stderr


def assert_ran(r: subprocess.CompletedProcess[str], marker: str) -> None:
    assert r.returncode == 0, r.stderr
    assert os.path.exists(marker)


# -- the file itself -----------------------------------------------------------


@pytest.mark.parametrize("mode, why", [(0o666, "writable by others"), (0o664, "writable by its group")])
def test_a_policy_others_can_write_is_refused(scratch: str, mode: int, why: str) -> None:
    policy = write(os.path.join(scratch, "shared.yaml"), PERMISSIVE.format(name="shared"), mode)
    r, marker = run_policy(policy, scratch)
    assert_refused(r, marker, "shared.yaml", why)


def test_a_policy_owned_by_another_user_is_refused(scratch: str) -> None:
    policy = write(os.path.join(scratch, "theirs.yaml"), PERMISSIVE.format(name="theirs"),
                   0o644, uid=NOBODY)
    r, marker = run_policy(policy, scratch)
    assert_refused(r, marker, "theirs.yaml", f"owned by uid {NOBODY}")


def test_a_policy_in_a_directory_others_can_write_is_refused(scratch: str) -> None:
    # The file is root's and 0644, but anyone can rename another file over it.
    shared_dir = os.path.join(scratch, "drop")
    os.makedirs(shared_dir)
    os.chmod(shared_dir, 0o777)
    policy = write(os.path.join(shared_dir, "p.yaml"), PERMISSIVE.format(name="p"))
    r, marker = run_policy(policy, scratch)
    assert_refused(r, marker, shared_dir, "writable by others")


def test_a_policy_in_a_directory_owned_by_another_user_is_refused(scratch: str) -> None:
    their_dir = os.path.join(scratch, "home")
    os.makedirs(their_dir)
    os.chown(their_dir, NOBODY, NOBODY)
    policy = write(os.path.join(their_dir, "p.yaml"), PERMISSIVE.format(name="p"))
    r, marker = run_policy(policy, scratch)
    assert_refused(r, marker, their_dir, f"owned by uid {NOBODY}")


def test_a_trusted_symlink_to_an_untrusted_policy_is_refused(scratch: str) -> None:
    target = write(os.path.join(scratch, "ww", "real.yaml"), PERMISSIVE.format(name="real"), 0o666)
    link = os.path.join(scratch, "link.yaml")
    os.symlink(target, link)
    r, marker = run_policy(link, scratch)
    assert_refused(r, marker, "real.yaml", "writable by others")


def test_a_plan_file_others_can_write_is_refused(scratch: str) -> None:
    """A compiled Plan decides even more than a policy: the same rule."""
    plan = os.path.join(scratch, "p.plan.json")
    r = subprocess.run([PYTHON, "-m", "enforcer", "compile", "default", "-o", plan],
                       capture_output=True, text=True, cwd=REPO, timeout=120,
                       env=dict(os.environ, ENFORCER_CACHE_DIR=os.path.join(scratch, "cache")))
    assert r.returncode == 0, r.stderr
    os.chmod(plan, 0o666)
    marker = os.path.join(scratch, "workload-ran")
    r = subprocess.run([PYTHON, "-m", "enforcer", "run", "--plan", plan, "--", "/bin/touch", marker],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert_refused(r, marker, "p.plan.json", "writable by others")


# -- extends ---------------------------------------------------------------------


def test_extends_of_a_parent_others_can_write_is_refused(scratch: str) -> None:
    write(os.path.join(scratch, "parent.yaml"), PERMISSIVE.format(name="parent"), 0o666)
    top = write(os.path.join(scratch, "top.yaml"), "name: top\nextends: parent.yaml\n")
    r, marker = run_policy(top, scratch)
    assert_refused(r, marker, "parent.yaml", "writable by others")


def test_extends_naming_a_host_file_is_refused_without_echoing_it(scratch: str) -> None:
    top = write(os.path.join(scratch, "top.yaml"), "name: top\nextends: /etc/shadow\n")
    r, marker = run_policy(top, scratch)
    assert_refused(r, marker, "top.yaml:2", "/etc/shadow")
    assert "root:" not in r.stderr and "root:" not in r.stdout


def test_extends_climbing_out_with_dotdot_is_refused(scratch: str) -> None:
    # A perfectly valid, trusted policy one level up: reachable only by `..`.
    write(os.path.join(scratch, "outside.yaml"), PERMISSIVE.format(name="outside"))
    top = write(os.path.join(scratch, "team", "top.yaml"),
                "name: top\nextends: ../outside.yaml\n")
    r, marker = run_policy(top, scratch)
    assert_refused(r, marker, "top.yaml:2", "..")


def test_extends_climbing_out_through_a_symlinked_directory_is_refused(scratch: str) -> None:
    write(os.path.join(scratch, "elsewhere", "x.yaml"), PERMISSIVE.format(name="x"))
    team = os.path.join(scratch, "team")
    os.makedirs(team)
    os.symlink(os.path.join(scratch, "elsewhere"), os.path.join(team, "sub"))
    top = write(os.path.join(team, "top.yaml"), "name: top\nextends: sub/x.yaml\n")
    r, marker = run_policy(top, scratch)
    assert_refused(r, marker, "top.yaml:2", "outside")


def test_extends_bare_name_does_not_resolve_to_a_file_beside_the_policy(scratch: str) -> None:
    # (a name that is no shipped policy: a shipped name always means the shipped one)
    write(os.path.join(scratch, "mybase"), PERMISSIVE.format(name="mybase"))
    top = write(os.path.join(scratch, "top.yaml"), "name: top\nextends: mybase\n")
    r, marker = run_policy(top, scratch)
    assert_refused(r, marker, "top.yaml:2", "mybase")


# -- names -------------------------------------------------------------------------


def test_bare_name_does_not_fall_back_to_the_working_directory(scratch: str) -> None:
    # An attacker who controls the directory root runs enforcer from.
    write(os.path.join(scratch, "mybase"), PERMISSIVE.format(name="mybase"))
    r, marker = run_policy("mybase", scratch, cwd=scratch)
    assert_refused(r, marker, "mybase", "no policy named")


# -- the Plan cache must not remember a trust that is gone ---------------------------


def test_cache_does_not_keep_trusting_a_policy_that_became_writable(scratch: str) -> None:
    policy = write(os.path.join(scratch, "p.yaml"), PERMISSIVE.format(name="p"))
    r, marker = run_policy(policy, scratch)
    assert_ran(r, marker)  # compiled and cached while it was trusted
    os.unlink(marker)
    os.chmod(policy, 0o666)
    r, marker = run_policy(policy, scratch)
    assert_refused(r, marker, "p.yaml", "writable by others")


# -- what stays allowed ----------------------------------------------------------------


def test_trusted_files_and_allowed_extends_still_work(scratch: str) -> None:
    write(os.path.join(scratch, "common", "base.yaml"), PERMISSIVE.format(name="base"))
    absolute = write(os.path.join(scratch, "abs.yaml"), PERMISSIVE.format(name="abs"))
    top = write(os.path.join(scratch, "top.yaml"),
                f"name: top\nextends: [./common/base.yaml, {absolute}, default]\n"
                "syscalls: {default: allow}\n")
    r, marker = run_policy(top, scratch)
    assert_ran(r, marker)
