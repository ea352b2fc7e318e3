"""The C microbenchmark really loads the filter it is given, and bench/run
(quick mode) writes a complete report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.bench_helpers import BENCH_DIR

import microbench as mb  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

EPERM_GETPPID = mb.sock_filter(
    (0x20, 0, 0, 0),  # ld nr
    (0x15, 0, 1, 110),  # jeq getppid
    (0x06, 0, 0, 0x00050000 | 1),  # ret ERRNO(EPERM)
    (0x06, 0, 0, 0x7FFF0000),  # ret ALLOW
)


def _run(binary: str, *args: str) -> dict[str, list[str]]:
    out = subprocess.run([binary, *args], capture_output=True, text=True, check=True).stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines()}


def test_the_program_loads_the_given_filter(tmp_path) -> None:
    binary = mb.build_c()
    plain = _run(binary, "--only", "getppid,fstat", "--scale", "0.01", "--repeats", "1")
    assert plain["getppid"][2] == "0" and int(plain["getppid"][1]) > 0
    bpf = tmp_path / "deny-getppid.bpf"
    bpf.write_bytes(EPERM_GETPPID)
    filtered = _run(binary, "--filter", str(bpf), "--only", "getppid,fstat",
                    "--scale", "0.01", "--repeats", "1")
    assert filtered["getppid"][2] == "1"  # EPERM came from our filter
    assert filtered["fstat"][2] == "0"
    assert float(filtered["fstat"][0]) > 0


def test_a_broken_filter_file_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.bpf"
    bad.write_bytes(b"\x06\x00\x00")
    r = subprocess.run([mb.build_c(), "--filter", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "not a whole BPF program" in r.stderr


def test_probe_tells_deny_from_kill(tmp_path) -> None:
    binary = mb.build_c()
    kill_getppid = tmp_path / "kill.bpf"
    kill_getppid.write_bytes(EPERM_GETPPID[:16] + mb.sock_filter((0x06, 0, 0, 0x80000000),
                                                                  (0x06, 0, 0, 0x7FFF0000)))
    deny = tmp_path / "deny.bpf"
    deny.write_bytes(EPERM_GETPPID)
    k = mb.probe(binary, mb.Variant("k", "k", str(kill_getppid)), ("getppid", "fstat"))
    d = mb.probe(binary, mb.Variant("d", "d", str(deny)), ("getppid",))
    assert not k["getppid"].measurable and "SIGSYS" in k["getppid"].status
    assert k["fstat"].status == "allowed"
    assert d["getppid"].measurable and d["getppid"].status == "denied: EPERM"


@pytest.mark.slow
def test_bench_run_quick_writes_the_report(tmp_path) -> None:
    out = tmp_path / "results"
    r = subprocess.run([os.path.join(BENCH_DIR, "run"), "--quick", "--skip-others",
                        "--rounds", "2", "--argpos-rounds", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, BENCH_NO_INSTALL="1"))
    assert r.returncode == 0, r.stderr
    readme = (out / "README.md").read_text()
    assert "## Acceptance (issue 8)" in readme and "| `getppid` |" in readme
    raw = json.loads((out / "results.json").read_text())
    assert len(raw["ns_per_call"]["none"]["getppid"]) == 2
    assert raw["probes"]["docker"]["personality"] == "allowed"


@pytest.mark.root
@pytest.mark.runc
def test_docker_filter_matches_what_runc_loads() -> None:
    import runc_check
    from tests.bench_helpers import DOCKER_PROFILE

    why = runc_check.available()
    if why or not os.path.exists(DOCKER_PROFILE):
        pytest.skip(why or "Docker profile fixture missing")
    ok, text = runc_check.check(DOCKER_PROFILE)
    assert ok, text
    assert "PTRACE_SECCOMP_GET_FILTER" in text


def test_a_variant_that_does_not_get_its_filter_is_refused() -> None:
    # Claims to run under an inherited filter (as `enforcer run` gives) but
    # does not: the harness must not report such figures.
    v = mb.Variant("fake-run", "fake", None, inherited_filters=1)
    with pytest.raises(RuntimeError, match="found 0 seccomp filters"):
        mb.run_once(mb.build_c(), v, ("getppid",), scale=0.01, repeats=1)
