"""A refusal is also written to runc's --log file, as runc writes its errors.

containerd reads that file (json, `--log-format json`) and reports the last
entry of level "error"; Docker shows it (tests/e2e/test_shim_docker.py runs
a real dockerd). Here both front ends, and both formats.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.shim_helpers import FIXTURE_CONFIG, fake_runc, run_shim

pytestmark = pytest.mark.usefixtures("shim_front_end")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
    (tmp_path / "plans").mkdir()
    runc = fake_runc(str(tmp_path / "runc"), str(tmp_path / "runc-args"))
    (tmp_path / "shim.json").write_text(json.dumps({"plans_dir": str(tmp_path / "plans"),
                                                    "runc": runc}))
    return {"ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
            "ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
            "ENFORCER_CACHE_DIR": str(tmp_path / "cache")}


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_refusal_is_appended_to_runcs_log(env: dict[str, str], tmp_path: Path,
                                           fmt: str) -> None:
    log = tmp_path / "log.json"
    log.write_text('{"level":"info","msg":"earlier","time":"2024-01-01T00:00:00Z"}\n')
    r = run_shim(["--policy", "nosuch", "--root", str(tmp_path / "root"), "--log", str(log),
                  "--log-format", fmt, "create", "--bundle", str(tmp_path / "bundle"), "c1"],
                 env=env)
    assert r.returncode == 125
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("enforcer-runc: policy 'nosuch' is not installed"), line
    earlier, entry = log.read_text().splitlines()
    if fmt == "json":
        record = json.loads(entry)
        assert (record["level"], record["msg"]) == ("error", line)
        # Go's time.Time must parse it (RFC 3339), or containerd reads nothing.
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"])
    else:
        assert re.fullmatch(r'time="[0-9T:Z-]+" level=error msg="(.*)"', entry)
        assert line.replace('"', '\\"') in entry
    assert not (tmp_path / "runc-args").exists()


def test_no_log_flag_no_file(env: dict[str, str], tmp_path: Path) -> None:
    r = run_shim(["--policy", "nosuch", "create", "--bundle", str(tmp_path / "bundle"), "c1"],
                 env=env)
    assert r.returncode == 125
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "plans", "runc",
                                                          "shim.json"]
