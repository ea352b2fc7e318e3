"""Units of the fast start path: the Plan's canonical fast parse, the body
hand-over to the child, the registry writer, the fast launcher's text."""

from __future__ import annotations

import json
import os

import pytest

from enforcer import fastjson, registry
from enforcer.errors import PlanError
from enforcer.launcher import launcher_text
from enforcer.plan import (PLAN_FORMAT, CgroupPlan, MountOp, Plan, canonical_json, plan_body_json,
                           plan_from_body_json, plan_from_json, replace, sha256_hex)


def a_plan() -> Plan:
    return Plan(format=PLAN_FORMAT, enforcer_version="t", policy_name="fast", policy_hash="ab" * 32,
                mode="enforce", seccomp=None, capabilities=None,
                mounts=(MountOp("make_private", "/"), MountOp("readonly", "/")),
                cgroup=CgroupPlan(pids_max=64), namespaces=("mount",))


def test_canonical_text_is_json_dumps_sorted_compact() -> None:
    plan = a_plan()
    body = plan.to_dict()
    assert canonical_json(body) == json.dumps(body, sort_keys=True, separators=(",", ":"))
    text = plan.to_json()
    assert json.loads(text)["sha256"] == sha256_hex(canonical_json(body).encode())
    assert plan_from_json(text) == plan


def test_fast_parse_hands_the_verified_body_on_unchanged() -> None:
    plan = plan_from_json(a_plan().to_json())
    assert plan_body_json(plan) == canonical_json(plan.to_dict())
    assert plan_from_body_json(plan_body_json(plan)) == plan
    # Another Plan object gets its own text, not the last one parsed.
    other = replace(plan, policy_name="other")
    assert json.loads(plan_body_json(other))["policy_name"] == "other"


def test_any_change_of_the_content_is_refused() -> None:
    text = a_plan().to_json()
    tampered = text.replace('"pids_max":64', '"pids_max":99', 1)
    assert tampered != text
    with pytest.raises(PlanError, match="does not match its sha256"):
        plan_from_json(tampered)


def test_a_pretty_printed_plan_still_loads_through_the_full_check() -> None:
    outer = json.loads(a_plan().to_json())
    assert plan_from_json(json.dumps(outer, indent=2)) == a_plan()


def test_a_duplicate_key_layout_cannot_smuggle_a_body_past_the_digest() -> None:
    good = a_plan()
    evil_body = canonical_json(replace(good, mounts=()).to_dict())
    inner = canonical_json(good.to_dict()) + ',"sha256":"' + "0" * 64 + '","plan":' + evil_body
    text = '{"plan":' + inner + ',"sha256":"' + sha256_hex(inner.encode()) + '"}'
    with pytest.raises(PlanError, match="does not match its sha256"):
        plan_from_json(text)


def test_body_hand_over_is_as_strict_as_the_loader() -> None:
    body = json.loads(canonical_json(a_plan().to_dict()))
    body["surprise"] = 1
    with pytest.raises(PlanError, match="unknown field"):
        plan_from_body_json(json.dumps(body), source="plan from the supervisor")
    with pytest.raises(PlanError, match="not valid JSON"):
        plan_from_body_json("{", source="plan from the supervisor")


def test_plan_records_are_immutable_values() -> None:
    plan = a_plan()
    with pytest.raises(AttributeError):
        plan.mode = "audit"  # type: ignore[misc]
    assert plan == a_plan() and hash(plan.mounts) == hash(a_plan().mounts)
    assert replace(plan, mode="audit").mode == "audit" and plan.mode == "enforce"
    with pytest.raises(TypeError):
        replace(plan, no_such_field=1)


def test_registry_record_is_written_whole_and_leaves_no_temp_file(tmp_path) -> None:
    rec = registry.WorkloadRecord(id="run-1-abc", kind="run", policy="p", policy_hash="h",
                                  mode="enforce", pid=42, audit_session=7)
    path = registry.write_record(rec, str(tmp_path))
    assert os.listdir(os.path.dirname(path)) == ["run-1-abc.json"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    text = open(path).read()
    assert text == json.dumps(rec.to_dict(), sort_keys=True)
    assert registry.read_record(path) == rec
    rec.pid = 43
    registry.write_record(rec, str(tmp_path))  # replaces atomically
    assert registry.read_record(path).pid == 43
    assert fastjson.loads(open(path).read())["audit_session"] == 7


def test_fast_launcher_text() -> None:
    text = launcher_text("enforcer", "/usr/bin/python3")
    first = text.splitlines()[0]
    assert first == "#!/usr/bin/python3 -IS"
    assert "sys.path.append(" in text  # after the stdlib, not before it
    assert "from enforcer.cli import main" in text
    assert "os._exit(" in text and '"threading" in sys.modules' in text
    compile(text, "launcher", "exec")
