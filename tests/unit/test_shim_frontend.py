"""The compiled front end builds cleanly, and the launcher installs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from enforcer.shim.frontend import CFLAGS, SOURCE, compiler
from tests.shim_helpers import PYTHON, REPO


def test_front_end_compiles_without_a_warning() -> None:
    cc = compiler()
    assert cc, "no C compiler (scripts/setup.sh installs gcc)"
    r = subprocess.run([cc, *CFLAGS, "-Werror", "-fsyntax-only", SOURCE], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_launcher_builds_the_front_end_beside_the_python_shim(tmp_path: Path) -> None:
    r = subprocess.run([PYTHON, "-m", "enforcer.launcher", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names = sorted(os.listdir(tmp_path))
    assert names == ["enforcer", "enforcer-landlock", "enforcer-runc", "enforcer-runc-py",
                     "enforcer-shimd"]
    with open(tmp_path / "enforcer-runc", "rb") as f:
        assert f.read(4) == b"\x7fELF"  # the compiled front end, not a script
    # The Landlock helper runs inside containers: static, no loader.
    from tests.landlock_helpers import pt_interp

    assert pt_interp(str(tmp_path / "enforcer-landlock")) is None
    assert "built" in r.stdout


def test_launcher_falls_back_to_the_python_shim_without_a_compiler(tmp_path: Path) -> None:
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}
    r = subprocess.run([PYTHON, "-m", "enforcer.launcher", str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "could not be built" in r.stdout
    with open(tmp_path / "enforcer-runc") as f:
        assert f.readline().startswith("#!") and "enforcer.shim.main" in f.read()
