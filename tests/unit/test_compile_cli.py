"""`enforcer compile`."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.cli import main
from enforcer.plan import load_plan_file, plan_from_json

pytest.importorskip("enforcer.policy.loader")

POLICY = """\
name: cli-test
syscalls:
  default: errno EPERM
  allow: [read, write, exit_group]
filesystem:
  read_only_root: true
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(POLICY)
    return p


def test_prints_plan_and_notes(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(policy_file)]) == 0
    out, err = capsys.readouterr()
    plan = plan_from_json(out)
    assert plan.policy_name == "cli-test" and plan.mode == "enforce"
    assert "note: namespaces: added `mount`" in err


def test_output_file_and_audit(policy_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert main(["compile", str(policy_file), "-o", str(out), "--mode", "audit"]) == 0
    plan = load_plan_file(str(out))
    assert plan.mode == "audit" and plan.mounts == ()


def test_pfc_and_bpf(policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(policy_file), "--format", "pfc"]) == 0
    assert 'filter for syscall "read"' in capsys.readouterr().out
    out = tmp_path / "f.bpf"
    assert main(["compile", str(policy_file), "--format", "bpf", "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data and len(data) % 8 == 0


def test_cache_flag_stores(policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ENFORCER_CACHE_DIR", str(tmp_path / "c"))
    assert main(["compile", str(policy_file), "--cache"]) == 0
    capsys.readouterr()
    from enforcer.planstore import lookup

    assert lookup(str(policy_file))[0].hit


def test_bad_policy_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsyscalls:\n  allow: [not_a_syscall]\n")
    assert main(["compile", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:3:" in err and "Traceback" not in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "/nonexistent/p.yaml"]) == 1
    assert "does not exist" in capsys.readouterr().err
