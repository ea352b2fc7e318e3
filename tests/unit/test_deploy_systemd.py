"""deploy/systemd: systemd-analyze verifies the unit with its policy drop-in,
rates it below 4.0 (OK band), and the drop-in is exactly what
`enforcer export --format systemd` makes of the monitor's policy."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import (REPO, SYSTEM_UNITS, SYSTEMD, VENV_BIN, need, run,  # noqa: E402
                            systemd_root, temp_dir, unit_settings)

UNIT = SYSTEMD / "enforcer-monitor.service"
DROPIN = SYSTEMD / "enforcer-monitor.service.d" / "policy.conf"
POLICY = SYSTEMD / "monitor-policy.yaml"


def make_root(root: Path, unit_text: str | None = None) -> None:
    """The unit and its policy drop-in, installed under `root` (systemd_root)."""
    text = unit_text if unit_text is not None else UNIT.read_text()
    (exec_start,) = unit_settings(UNIT)["ExecStart"]
    systemd_root(root, {UNIT.name: text,
                        "enforcer-monitor.service.d/policy.conf": DROPIN.read_text()},
                 exec_start)


def analyze(*args: str, unit_text: str | None = None) -> tuple[int, str]:
    tool = need("systemd-analyze")
    if not SYSTEM_UNITS.is_dir():
        pytest.skip("no systemd unit directory to borrow targets from")
    with temp_dir("deploy-systemd-") as root:
        make_root(root, unit_text)
        r = run([tool, *args, f"--root={root}", UNIT.name])
    return r.returncode, r.stdout + r.stderr


def test_systemd_analyze_verify_accepts_the_unit() -> None:
    code, out = analyze("verify")
    assert code == 0 and out.strip() == "", out


def test_verify_would_catch_a_mistake() -> None:
    code, out = analyze("verify", unit_text=UNIT.read_text().replace("RestrictRealtime=yes", "RestrictRealtme=yes"))
    assert "Unknown key" in out


def exposure(out: str) -> float:
    m = re.search(r"Overall exposure level for enforcer-monitor.service: ([0-9.]+) (\w+)", out)
    assert m, out
    return float(m.group(1))


def test_security_rating_is_ok() -> None:
    code, out = analyze("security", "--offline=true")
    assert code == 0, out
    score = exposure(out)
    assert score < 4.0, f"exposure {score}:\n{out}"


def test_the_drop_in_carries_the_hardening() -> None:
    """Without the policy's drop-in the rating is worse: it is read and it counts."""
    with temp_dir("deploy-systemd-") as root:
        make_root(root)
        (root / "etc/systemd/system/enforcer-monitor.service.d/policy.conf").unlink()
        r = run([need("systemd-analyze"), "security", "--offline=true", f"--root={root}", UNIT.name])
    without = exposure(r.stdout + r.stderr)
    code, out = analyze("security", "--offline=true")
    assert exposure(out) + 2.0 < without


def test_drop_in_is_the_export_of_the_monitor_policy() -> None:
    r = run([str(VENV_BIN / "enforcer"), "export", "--format", "systemd", str(POLICY.relative_to(REPO))],
            cwd=REPO)
    if r.returncode != 0 and "not available" in r.stderr:
        pytest.skip("enforcer export is not in this build yet")
    assert r.returncode == 0, r.stderr
    assert r.stdout == DROPIN.read_text(), (
        "deploy/systemd/enforcer-monitor.service.d/policy.conf is stale; regenerate it with\n"
        "  enforcer export --format systemd deploy/systemd/monitor-policy.yaml "
        "-o deploy/systemd/enforcer-monitor.service.d/policy.conf")


def test_monitor_policy_grants_only_audit_read() -> None:
    text = DROPIN.read_text()
    assert "CapabilityBoundingSet=CAP_AUDIT_READ\n" in text
    assert "NoNewPrivileges=yes" in text
    syscalls = set(re.search(r"^SystemCallFilter=(.*)$", text, re.M).group(1).split())  # type: ignore[union-attr]
    for forbidden in ("ptrace", "mount", "setuid", "bpf", "init_module", "kexec_load", "unshare",
                      "setns", "execveat", "chown", "setxattr", "io_uring_setup", "perf_event_open"):
        assert forbidden not in syscalls, forbidden
    for needed in ("socket", "bind", "recvfrom", "clone", "clone3", "openat", "accept4"):
        assert needed in syscalls, needed
    unit = "\n".join(line for line in UNIT.read_text().splitlines() if not line.startswith("#"))
    for never in ("PrivateNetwork=yes", "PrivateUsers=yes", "ProtectProc=invisible"):
        assert never not in unit and never not in text
