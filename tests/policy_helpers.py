"""Shared helpers for the policy tests (tests/unit/test_policy_*.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BAD_POLICIES = REPO / "tests" / "unit" / "bad_policies"
SHIPPED = sorted((REPO / "policies").glob("*.yaml"))


def run_cli(*args: str, cwd: Path | str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (`python -m enforcer ...`) and capture its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "enforcer", *args],
        cwd=str(cwd or REPO), env=env, capture_output=True, text=True, timeout=timeout,
    )


def write_policy(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path
