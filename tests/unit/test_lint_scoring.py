"""`enforcer lint` explains its score (issue 19, point 3): each finding's
points add up to the score; a short allow-list and argument checks earn
credit; "set this next" ranks changes whose YAML really does what it says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from enforcer.policy.lint import lint, suggest, syscall_counts
from enforcer.policy.loader import load_policy, resolve_policy_source
from policy_helpers import write_policy

SHIPPED = ["default", "restricted", "sandbox", "web-server", "batch-job"]

# Test policies that open more than the shipped ones do.
EXTRA = {
    "admin": "extends: restricted\ncapabilities: {keep: [SYS_ADMIN]}\n"
             "syscalls:\n  allow: [mount, umount2, ptrace, bpf]\n",
    "audit": "extends: default\nmode: audit\n",
    "denylist": "syscalls: {default: allow, deny: [reboot]}\n",
    "dropadd": "extends: default\ncapabilities: {drop: [NET_RAW], add: [SYS_PTRACE]}\n"
               "no_new_privileges: false\n",
    "nonroot": "extends: default\nuser: {uid: 999, gid: 999}\n",
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("lint")
    extra = [str(write_policy(d, f"{name}.yaml", f"name: {name}\n{text}"))
             for name, text in EXTRA.items()]
    return SHIPPED + extra


def cents(x: float) -> int:
    return round(x * 100)


def test_the_points_add_up_to_the_score_exactly(specs: list[str]) -> None:
    for spec in specs:
        report = lint(load_policy(spec))
        assert sum(cents(f.points) for f in report.findings) == cents(report.score), spec
        # Heaviest first; the same weight, the same points (order plays no part).
        weights = [f.weight for f in report.findings]
        assert weights == sorted(weights, reverse=True)
        by_weight: dict[float, set[int]] = {}
        for f in report.findings:
            by_weight.setdefault(f.weight, set()).add(cents(f.points))
        assert all(max(p) - min(p) <= 1 for p in by_weight.values()), (spec, by_weight)


def test_the_cli_shows_points_that_add_up(specs: list[str]) -> None:
    """Before: `enforcer lint batch-job` showed one finding of weight 0.10
    and a score of 1.0."""
    for spec in specs:
        out = cli("lint", spec).stdout
        score = float(re.search(r"exposure (\d+\.\d)/10", out).group(1))  # type: ignore[union-attr]
        rows = re.findall(r"^ +(\d+\.\d\d) +(\d+\.\d\d)  ", out, re.M)
        assert rows, out
        assert sum(cents(float(p)) for p, _ in rows) == cents(score), out
        assert re.search(rf"^ +{score:.2f} += the score", out, re.M), out


def test_set_this_next_yaml_does_what_it_says(specs: list[str], tmp_path: Path) -> None:
    """Each suggested line, written into a policy that extends the linted
    one, gives exactly the score the table promises and removes the
    findings it names."""
    tried = 0
    for spec in specs:
        policy = load_policy(spec)
        report = lint(policy)
        for n, change in enumerate(suggest(policy, report)):
            assert change.score_after < report.score and change.fixes
            child = write_policy(tmp_path, f"child-{policy.name}-{n}.yaml", (
                f"name: child\nextends: {resolve_policy_source(spec)}\n"
                f"scope: {policy.scope}\n{change.yaml}\n"))
            after = lint(load_policy(str(child)))
            assert after.score == change.score_after, (spec, change, after.findings)
            assert not set(change.fixes) & {f.id for f in after.findings}, (spec, change)
            tried += 1
    assert tried >= 15


def test_set_this_next_is_ranked_and_at_most_three() -> None:
    for spec in SHIPPED:
        got = suggest(load_policy(spec))
        assert len(got) <= 3
        assert [s.score_after for s in got] == sorted(s.score_after for s in got)
    default = suggest(load_policy("default"))
    assert len(default) == 3 and default[0].yaml == "capabilities: {keep: []}"


def test_a_short_allow_list_and_argument_checks_earn_credit(tmp_path: Path) -> None:
    """A learned 58-syscall policy scored 8.0, the same as `default` it
    extends: the allow-list's length counted for nothing."""
    from enforcer.policy.lint import syscall_states

    # 58 syscalls `restricted` allows outright (nothing any check flags).
    names = sorted(n for n, state in syscall_states(load_policy("restricted")).items()
                   if state == "allowed" and n not in ("socket", "clone"))[:58]
    body = "name: learned\nextends: default\nscope: container\nsyscalls:\n  inherit: false\n" \
           "  default: errno EPERM\n  allow: [%s]\n" % ", ".join(names)
    short = write_policy(tmp_path, "short.yaml", body)
    checked = write_policy(tmp_path, "checked.yaml", body + (
        "  rules:\n    - {syscalls: [socket], action: allow, "
        "args: [{index: 0, op: eq, value: AF_INET}]}\n"))
    plain = write_policy(tmp_path, "plain.yaml", body.replace("allow: [", "allow: [socket, "))
    counts = syscall_counts(load_policy(str(short)))
    assert counts.allowed == 58 and counts.conditional == 0
    score = {p.stem: lint(load_policy(str(p))).score for p in (short, checked, plain)}
    assert score["short"] < lint(load_policy("default")).score
    surface = {p.stem: next(f.weight for f in lint(load_policy(str(p))).findings
                            if f.id == "syscall-surface") for p in (checked, plain)}
    assert surface["checked"] < surface["plain"]  # an argument check counts half


def test_json_has_points_and_set_next() -> None:
    doc = json.loads(cli("lint", "--json", "sandbox").stdout)[0]
    assert sum(cents(f["points"]) for f in doc["findings"]) == cents(doc["score"])
    assert doc["set_next"] and {"yaml", "score_after", "fixes"} <= set(doc["set_next"][0])


def test_docs_describe_every_finding_and_weight(specs: list[str]) -> None:
    from enforcer.policy.lint import SURFACE_FREE, SURFACE_WEIGHT, SYSCALL_CHECKS

    docs = (Path(__file__).parents[2] / "docs" / "lint.md").read_text()
    for id_, weight, _, _ in SYSCALL_CHECKS:
        assert f"| `{id_}` | {weight:g} |" in docs, id_
    assert f"{SURFACE_WEIGHT:g} × (allowed + conditional / 2 − {SURFACE_FREE})" in docs
    seen = {f.id for spec in specs for f in lint(load_policy(spec)).findings}
    for id_ in seen:
        assert f"`{id_}`" in docs or id_.startswith("cap-"), id_
