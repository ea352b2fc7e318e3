"""deploy/generate.py: the per-policy files follow policies/*.yaml, the
ConfigMap holds each file byte for byte, and bad names are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import DEPLOY, run, temp_dir  # noqa: E402

GENERATE = DEPLOY / "generate.py"


def generate(policies: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(GENERATE), "--policies", str(policies), "--out", str(out), *extra])


def test_shipped_files_are_in_sync() -> None:
    r = run([sys.executable, str(GENERATE), "--check"])
    assert r.returncode == 0, r.stderr


def test_configmap_round_trips_awkward_files() -> None:
    awkward = {
        "alpha": "name: alpha\n# trailing spaces   \n\ttabbed: x\n",
        "beta": "  name: beta\nno-final-newline: true",
        "gamma": "name: gamma\n\n\n",
        "delta": "name: 'delta'\nquote: \"x: y\"\nunicode: é ✓\n",
    }
    with temp_dir("deploy-gen-") as d:
        pol, out = d / "policies", d / "deploy"
        pol.mkdir()
        for name, text in awkward.items():
            (pol / f"{name}.yaml").write_text(text)
        r = generate(pol, out)
        assert r.returncode == 0, r.stderr
        cm = yaml.safe_load((out / "kubernetes" / "policies-configmap.yaml").read_text())
        assert cm["data"] == {f"{n}.yaml": t for n, t in awkward.items()}
        assert generate(pol, out, "--check").returncode == 0


def test_check_reports_drift_and_a_stale_wrapper() -> None:
    with temp_dir("deploy-gen-") as d:
        pol, out = d / "policies", d / "deploy"
        pol.mkdir()
        for name in ("one", "two"):
            (pol / f"{name}.yaml").write_text(f"name: {name}\n")
        assert generate(pol, out).returncode == 0
        (pol / "two.yaml").unlink()
        (pol / "three.yaml").write_text("name: three\n")
        r = generate(pol, out, "--check")
        assert r.returncode == 1
        assert "enforcer-runc-two: no such shipped policy" in r.stderr
        assert "runtimeclasses.yaml: out of date" in r.stderr
        assert generate(pol, out).returncode == 0
        assert not (out / "containerd" / "bin" / "enforcer-runc-two").exists()
        assert (out / "containerd" / "bin" / "enforcer-runc-three").exists()
        assert generate(pol, out, "--check").returncode == 0


def test_names_kubernetes_would_refuse_are_refused() -> None:
    with temp_dir("deploy-gen-") as d:
        pol = d / "policies"
        pol.mkdir()
        (pol / "web_server.yaml").write_text("name: web_server\n")
        r = generate(pol, d / "deploy")
        assert r.returncode != 0
        assert "'enforcer-web_server' is not a DNS label" in r.stderr
        assert not (d / "deploy").exists()


def test_no_policies_is_an_error() -> None:
    with temp_dir("deploy-gen-") as d:
        r = generate(d, d / "deploy")
        assert r.returncode != 0 and "no *.yaml policies found" in r.stderr
