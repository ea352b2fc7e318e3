"""The layers hold: `lint-imports` keeps every contract in pyproject.toml
([tool.importlinter]; docs/architecture.md explains them).

Policy -> compile -> Plan <- apply / shim / emit, the monitor apart, and
the start path (apply, shim, the Plan store) importing neither the
compiler, the policy package, emit, PyYAML nor pyseccomp -- imports inside
functions included. Running it here makes CI (scripts/test.sh) gate it.
"""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lint_imports() -> subprocess.CompletedProcess[str]:
    tool = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    return subprocess.run([tool, "--no-cache"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_every_import_contract_is_kept() -> None:
    r = lint_imports()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "Contracts: 5 kept" in r.stdout, r.stdout
