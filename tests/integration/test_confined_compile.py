"""enforcer/confined_compile.py: the child that fills a Plan-cache miss.

Run as root with every capability (as enforcer-shimd started by hand is),
the child must hold none, have no_new_privs, be non-dumpable, be unable to
change any file, and still read what the compiler reads; what it sends
back is verified, and a policy error comes back as one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from enforcer.confined_compile import ConfinedCompileError, plan_for_policy_file, run_confined

pytestmark = pytest.mark.root


def _inside(tmp_path: Path) -> dict[str, object]:
    """Run a probe in the confined child and return what it saw."""
    target = tmp_path / "written-by-the-child"
    readable = tmp_path / "readable"
    readable.write_text("ok")

    def probe() -> bytes:
        status = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.strip()
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        dumpable = libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        try:
            with open(target, "w") as f:
                f.write("x")
            wrote = "yes"
        except OSError as e:
            wrote = e.strerror or "error"
        return json.dumps({"status": status, "dumpable": dumpable, "wrote": wrote,
                           "read": readable.read_text(), "ppid_alive": os.getppid() > 1}
                          ).encode()

    seen = json.loads(run_confined(probe))
    seen["target_exists"] = target.exists()
    return seen


def test_the_child_holds_nothing_and_changes_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    seen = _inside(tmp_path)
    status = seen["status"]
    assert isinstance(status, dict)
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert int(status["CapBnd"], 16) == 0  # root with CAP_SETPCAP drops the bounding set too
    assert status["NoNewPrivs"] == "1"
    assert seen["dumpable"] == 0
    assert seen["wrote"] != "yes" and not seen["target_exists"]
    assert seen["read"] == "ok"


def test_a_policy_error_comes_back_as_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nname: bad\nsyscalls:\n  default: frobnicate\n"
                      "  allow: [no_such_call, another_bad]\n")
    with pytest.raises(ConfinedCompileError) as err:
        plan_for_policy_file(str(policy), cache_dir=str(tmp_path / "cache"))
    assert "\n" not in str(err.value) and "bad.yaml" in str(err.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_a_compiled_plan_is_cached_and_loaded_from_the_cache(tmp_path: Path) -> None:
    policy = tmp_path / "ok.yaml"
    policy.write_text("version: 1\nname: ok\nmode: enforce\nsyscalls:\n  default: allow\n")
    cache = tmp_path / "cache"
    first = plan_for_policy_file(str(policy), cache_dir=str(cache))
    (entry,) = cache.iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600
    assert first.policy_name == "ok"
    mtime = entry.stat().st_mtime_ns
    second = plan_for_policy_file(str(policy), cache_dir=str(cache))
    assert second.policy_hash == first.policy_hash
    assert entry.stat().st_mtime_ns == mtime  # a hit: not compiled again


def test_a_child_that_dies_is_an_error_not_a_plan() -> None:
    def die() -> bytes:
        os._exit(3)

    with pytest.raises(ConfinedCompileError, match="status 3"):
        run_confined(die)
