"""The workload's environment (`env` in a policy): validation and merge,
the Plan's form, and how enforcer/apply/environ.py builds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.apply.environ import DEFAULT_PATH, workload_environment
from enforcer.compile.compiler import compile_policy
from enforcer.errors import PlanError, PolicyErrors
from enforcer.plan import EnvPlan, plan_from_json, replace
from enforcer.policy.loader import load_policy
from enforcer.policy.model import DEFAULT_ENV_KEEP

CALLER = {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_TIME": "de_DE",
          "AWS_SECRET_ACCESS_KEY": "s", "SSH_AUTH_SOCK": "/tmp/a", "LD_PRELOAD": "/x.so",
          "APP_MODE": "debug", "APP_LEVEL": "3"}


def test_default_keeps_only_the_harmless_names() -> None:
    env = workload_environment(EnvPlan(clear=True, keep=DEFAULT_ENV_KEEP), CALLER)
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_TIME": "de_DE"}


def test_keep_by_prefix_and_set_wins() -> None:
    env = workload_environment(EnvPlan(clear=True, keep=DEFAULT_ENV_KEEP + ("APP_*",),
                                       set={"APP_MODE": "production", "NEW": "1"}), CALLER)
    assert env["APP_MODE"] == "production" and env["APP_LEVEL"] == "3" and env["NEW"] == "1"
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_a_cleared_environment_still_has_a_path() -> None:
    assert workload_environment(EnvPlan(clear=True, keep=("TERM",)), {})["PATH"] == DEFAULT_PATH


def test_clear_false_passes_everything_and_sets() -> None:
    env = workload_environment(EnvPlan(clear=False, set={"X": "y"}), CALLER)
    assert env == {**CALLER, "X": "y"}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return str(path)


def test_policy_env_merges_over_extends(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\nenv:\n  keep: [APP_*]\n"
                                        "  set: {A: '1', B: '2'}\n")
    p = load_policy(write(tmp_path, "name: child\nextends: ./base.yaml\n"
                                    "env:\n  keep: [EXTRA]\n  set: {B: three}\n"))
    assert p.env.clear is True
    assert p.env.keep == DEFAULT_ENV_KEEP + ("APP_*", "EXTRA")
    assert dict(p.env.set) == {"A": "1", "B": "three"}
    plan = compile_policy(p)
    assert plan.env == EnvPlan(clear=True, keep=p.env.keep, set={"A": "1", "B": "three"})
    assert plan_from_json(plan.to_json()).env == plan.env


@pytest.mark.parametrize("text,message", [
    ("env: {keep: ['A B']}", "is not a variable name"),
    ("env: {keep: ['*']}", "write `clear: false`"),
    ("env: {set: {'1X': a}}", "is not a variable name"),
    ("env: {set: {X: yes}}", "must be a string"),
    ("env: {set: {X: 1}}", 'quote it: "1"'),
    ("env: {clear: 1}", "must be true or false"),
    ("env: {keeps: [A]}", "did you mean 'keep'"),
])
def test_bad_env_sections_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyErrors) as e:
        load_policy(write(tmp_path, f"name: bad\n{text}\n"))
    assert message in str(e.value) and "p.yaml:2:" in str(e.value)


def test_plan_env_is_checked_strictly() -> None:
    from enforcer.plan import Plan, PLAN_FORMAT

    plan = Plan(format=PLAN_FORMAT, enforcer_version="t", policy_name="e", policy_hash="0" * 64,
                mode="enforce", seccomp=None, capabilities=None)
    for bad in ({"A=B": "x"}, {"A": "x\0y"}, {"": "x"}):
        text = replace(plan, env=EnvPlan(set=bad)).to_json()
        with pytest.raises(PlanError):
            plan_from_json(text)
