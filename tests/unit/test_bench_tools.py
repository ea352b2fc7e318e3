"""bench/ analysis tools: the BPF replayer, Docker's profile compiler, the
report's pass rules. The replayer is checked against the real kernel."""

from __future__ import annotations

import errno
import json
import os

import pytest

from tests.bench_helpers import DOCKER_PROFILE, run_under_filter

import bpf_tools as bt  # noqa: E402  (bench/ is put on sys.path by bench_helpers)
import docker_profile as dp  # noqa: E402
import microbench as mb  # noqa: E402
import report  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(DOCKER_PROFILE),
                                reason="Docker's profile fixture is not beside the repo")

NR = {"getppid": 110, "personality": 135, "clone3": 435, "acct": 163, "socket": 41}
ALLOW = 0x7FFF0000


@pytest.fixture(scope="module")
def docker_bpf() -> list[bt.Insn]:
    return bt.parse(dp.compile_docker_profile(DOCKER_PROFILE))


@pytest.fixture(scope="module")
def oci() -> dict:
    with open(DOCKER_PROFILE) as f:
        return dp.docker_to_oci(json.load(f), machine="x86_64", kernel="6.1.0")


def test_oci_conversion_follows_docker_caps_and_arches(oci: dict) -> None:
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert oci["defaultErrnoRet"] == 1
    names = {n: c for c in oci["syscalls"] for n in c["names"]}
    # CAP_SYS_ADMIN is not a Docker default cap: its block is dropped, the
    # clone arg rule and clone3 -> ENOSYS (excludes CAP_SYS_ADMIN) are kept.
    assert "mount" not in names and "bpf" not in names
    assert names["clone3"]["errnoRet"] == errno.ENOSYS
    assert names["clone"]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    # s390-only and arm-only entries do not apply on amd64.
    assert all(a["index"] == 0 for a in names["clone"]["args"])
    assert "arm_fadvise64_64" not in names
    # CAP_SYS_CHROOT is a Docker default: chroot comes in.
    assert "chroot" in names


def test_oci_conversion_with_sys_admin_keeps_the_admin_block() -> None:
    with open(DOCKER_PROFILE) as f:
        oci = dp.docker_to_oci(json.load(f), machine="x86_64", kernel="6.1.0",
                               caps=dp.DOCKER_DEFAULT_CAPS | {"CAP_SYS_ADMIN"})
    names = {n for c in oci["syscalls"] for n in c["names"]}
    assert {"mount", "bpf", "clone3"} <= names


def test_docker_filter_decisions(docker_bpf: list[bt.Insn]) -> None:
    def act(nr: int, *args: int, arch: str = "x86_64") -> int:
        return bt.run(docker_bpf, arch, nr, args)[0]

    assert act(NR["getppid"]) == ALLOW
    assert act(NR["personality"], 0xFFFFFFFF) == ALLOW
    assert act(NR["personality"], 1) == 0x00050000 | errno.EPERM
    assert act(NR["clone3"]) == 0x00050000 | errno.ENOSYS
    # runc's stub: numbers above the profile's largest syscall get ENOSYS.
    assert act(1000) == 0x00050000 | errno.ENOSYS
    # i386 getppid (64) is allowed too: Docker admits x86.
    assert act(64, arch="x86") == ALLOW
    # x86-only names (waitpid = 7, socketcall = 102) resolve to pseudo numbers
    # on x86_64; runc passes them on and libseccomp adds them for x86.
    assert act(7, arch="x86") == ALLOW and act(102, arch="x86") == ALLOW


def test_action_cache_emulation(docker_bpf: list[bt.Insn]) -> None:
    assert bt.kernel_cache_allows(docker_bpf, "x86_64", NR["getppid"])
    # Argument-checked or denied syscalls are never cached.
    assert not bt.kernel_cache_allows(docker_bpf, "x86_64", NR["personality"])
    assert not bt.kernel_cache_allows(docker_bpf, "x86_64", NR["acct"])
    allow_all = bt.parse(mb.allow_all_filter())
    assert bt.cached_count(allow_all) == 512
    floor = bt.parse(mb.one_rule_filter())
    assert bt.kernel_cache_allows(floor, "x86_64", NR["getppid"])
    assert not bt.kernel_cache_allows(floor, "x86_64", NR["acct"])
    # An argument load anywhere on the path defeats the cache.
    arg_load = bt.parse(mb.sock_filter((0x20, 0, 0, 16), (0x06, 0, 0, ALLOW)))
    assert not bt.kernel_cache_allows(arg_load, "x86_64", NR["getppid"])


def test_replayer_agrees_with_the_kernel(docker_bpf: list[bt.Insn]) -> None:
    raw = dp.compile_docker_profile(DOCKER_PROFILE)
    calls = [(NR["getppid"], ()), (NR["personality"], (0xFFFFFFFF,)),
             (NR["personality"], (1,)), (NR["acct"], (0,)), (NR["clone3"], (0, 0)), (1000, ())]
    expected = []
    for nr, args in calls:
        ret = bt.run(docker_bpf, "x86_64", nr, args)[0]
        expected.append(0 if ret == ALLOW else ret & 0xFFFF)
    got = run_under_filter(raw, calls)
    # getppid and personality(query) run; the kernel's own answer is 0 there.
    assert got == expected
    assert got[2] == errno.EPERM and got[4] == errno.ENOSYS and got[5] == errno.ENOSYS


def test_disassembly_names_fields(docker_bpf: list[bt.Insn]) -> None:
    text = bt.disassemble(docker_bpf[:40])
    assert "ld  arch" in text and "ld  nr" in text and "ret ERRNO(38)" in text


def test_parse_rejects_partial_instructions() -> None:
    with pytest.raises(ValueError):
        bt.parse(b"\x00" * 12)


def _series(*xs: float) -> mb.Series:
    return mb.Series(list(xs))


def test_argpos_rule_can_fail_and_pass() -> None:
    same, _ = report.same_within_noise(_series(100, 101, 102, 103, 104),
                                       _series(101, 102, 103, 104, 105))
    assert same
    diff, _ = report.same_within_noise(_series(100, 100.5, 101, 101.5, 102),
                                       _series(120, 120.5, 121, 121.5, 122))
    assert not diff


def test_acceptance_flags_a_slow_default() -> None:
    allowed = mb.ProbeResult("allowed", True)
    names = mb.ARG_FREE + mb.ARG_CHECKED
    probes = {k: {n: allowed for n in names} for k in ("floor", "default", "docker")}
    micro = {"floor": {n: _series(100, 100, 100) for n in names},
             "docker": {n: _series(110, 110, 110) for n in names},
             "default": {n: _series(105, 105, 105) for n in names}}
    micro["default"]["getppid"] = _series(115, 115, 115)
    rows = report.acceptance(micro, probes, {})
    assert rows[0][2] == "FAIL" and "getppid" in rows[0][1]
    assert rows[1][2] == "FAIL" and "getppid" in rows[1][1]
    micro["default"]["getppid"] = _series(104, 104, 104)
    rows = report.acceptance(micro, probes, {})
    assert rows[0][2] == "PASS" and rows[1][2] == "PASS"
    assert rows[2][2] == "NOT RUN"


def _ext(stdout: str, status: str = "ok", stderr: str = "") -> object:
    import harness

    return harness.External("x", "X", "bench/x.py", status, 1.0, stdout, stderr)


def test_external_json_rows_become_tables_per_kind() -> None:
    out = json.dumps({"summary": "fast enough", "rows": [
        {"kind": "compile", "policy": "default", "median_ms": 3.7},
        {"kind": "load", "policy": "default", "warm_ms": 0.5}]})
    headline, body = report._external_section(_ext(out))
    assert headline == "fast enough"
    text = "\n".join(body)
    assert "**compile**" in text and "| policy | median_ms |" in text
    assert "**load**" in text and "| policy | warm_ms |" in text


def test_external_markdown_is_kept_and_failures_show_stderr() -> None:
    md = ("Benchmark 1: progress noise\n# Title\n\nsome words\n\n| a | b |\n| --- | --- |\n"
          "| 1 | 2 |\n\n- x: 3 ms\n- enforcer run: 5 ms\n")
    headline, body = report._external_section(_ext(md, "failed (exit 1)", "Traceback\nBoom"))
    assert headline == "enforcer run: 5 ms"
    assert "### Title" in body and "| 1 | 2 |" in body
    assert not any("progress noise" in line for line in body)
    assert "**failed (exit 1)**; last lines of stderr:" in body and "Boom" in body
    assert report._external_section(_ext("", "not present")) == ("not present", [])
    _, body = report._external_section(_ext("plain words\n", "failed (exit 1)"))
    assert body[0] == "```" and "nothing on stderr" in body[-1]


def test_filtercost_programs_differ_in_one_thing() -> None:
    import filtercost

    progs = {k: bt.parse(data) for k, (_, data) in filtercost.programs().items()}
    assert bt.kernel_cache_allows(progs["hit"], "x86_64", 110)
    for key, steps in (("miss", 4), ("miss+arch", 7), ("miss+lin100", 104)):
        assert not bt.kernel_cache_allows(progs[key], "x86_64", 110), key
        assert bt.run(progs[key], "x86_64", 110) == (ALLOW, steps), key
    assert bt.run(progs["hit"], "x86_64", 110) == (ALLOW, 4)
    # Everything else the benchmark process needs is allowed and cached.
    for prog in progs.values():
        assert bt.kernel_cache_allows(prog, "x86_64", 1)  # write


def test_argpos_filters_keep_the_checked_rule_and_the_reference_is_sensitive() -> None:
    import argpos

    first, last = (bt.parse(b) for b in argpos.linear_argpos_filters())
    f_act, f_steps = bt.run(first, "x86_64", NR["personality"], (0xFFFFFFFF,))
    l_act, l_steps = bt.run(last, "x86_64", NR["personality"], (0xFFFFFFFF,))
    assert f_act == l_act == ALLOW
    assert l_steps - f_steps == len(argpos.FILLER)  # one skipped test per rule
    assert bt.run(first, "x86_64", NR["personality"], (1,))[0] == 0x00050000 | errno.EPERM


def test_headline_from_a_table_row_about_enforcer() -> None:
    md = ("## run\n\nCommand: `x`\n\n| command | median ms |\n| --- | ---: |\n"
          "| bare | 1.0 |\n| enforcer run --policy p | 25.5 |\n")
    headline, _ = report._external_section(_ext(md))
    assert headline == "enforcer run --policy p: median ms 25.5"
