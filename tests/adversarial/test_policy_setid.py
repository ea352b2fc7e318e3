"""Hole 10: `restricted`'s "no set-id bits" covered only chmod.

The attacker is a workload under `restricted` that wants a set-user-id
file (which would run with its uid for whoever executes it, on any mount
without nosuid). chmod u+s was refused, but every other call that sets a
mode was not: open/openat/creat with O_CREAT or O_TMPFILE and mode 04755,
openat2 (its mode sits in a struct the filter cannot read), mknod/mknodat
of a regular file with 04755, mkdir/mkdirat with S_ISGID, fchmodat2.
Each is tried for real by tests/probes/probe.c in a fresh scratch
directory on the workload's own /tmp.

Run against the code before the fix (commit cd0cd9d): every set-id probe
below except fchmodat2 reported `allowed` under restricted (a set-id file
existed), so test_restricted_creates_no_set_id_file failed.
"""

from __future__ import annotations

import pytest

from run_helpers import run_probes

from probe_fixtures import probe  # noqa: F401  (fixture)

pytestmark = [pytest.mark.root]

SETID_PROBES = ("chmod_suid", "open_creat_suid", "openat_creat_suid", "creat_suid",
                "open_tmpfile_suid", "openat2_creat_suid", "mknod_suid", "mknodat_suid",
                "mkdir_sgid", "mkdirat_sgid", "fchmodat2_suid")


def test_restricted_creates_no_set_id_file(probe: tuple[str, str]) -> None:
    exe, cache = probe
    got = run_probes(exe, cache, "restricted", SETID_PROBES)
    assert set(got) == set(SETID_PROBES), got
    through = {name: detail for name, (verdict, detail) in got.items() if verdict != "blocked"}
    assert not through, f"set-id requests got through under restricted: {through}"


def test_openat2_gets_enosys_so_libc_falls_back(probe: tuple[str, str]) -> None:
    """openat2 carries its mode in memory the filter cannot read: ENOSYS, the
    answer of a kernel without it, makes callers fall back to openat."""
    exe, cache = probe
    verdict, detail = run_probes(exe, cache, "restricted", ["openat2_creat_suid"])["openat2_creat_suid"]
    assert verdict == "blocked" and detail.endswith("ENOSYS"), detail


def test_restricted_still_creates_ordinary_files(probe: tuple[str, str]) -> None:
    """The rules refuse set-id bits, not files: the probe's own scratch files
    (open with O_CREAT, mode 0755) and plain chmod keep working -- a probe
    that could not make them reports setup-error."""
    exe, cache = probe
    got = run_probes(exe, cache, "restricted", SETID_PROBES)
    assert not [n for n, (v, _) in got.items() if v == "setup-error"], got
