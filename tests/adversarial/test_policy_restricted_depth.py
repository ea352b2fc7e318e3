"""Hole 11: defence in depth under `restricted`.

The attacker is a workload under `restricted`. Each probe in
tests/probes/probe.c tries one opening for real and is harmless if it gets
through: terminal injection (TIOCSTI, also with bits above 32 that the
kernel ignores but a careless filter compares) and console ioctls
(TIOCLINUX) only on a pty the probe opened itself; socket families outside
unix/inet/inet6/netlink (created and closed); the x86 LDT call (read
only); memory locking beyond the policy's memlock limit (a small buffer,
unlocked at once); and handle-based file access in both directions.

Run against the code before the fix (commit cd0cd9d): every probe below
except open_by_handle_at reported `allowed` under restricted (TIOCSTI
injected a byte, AF_VSOCK sockets were created, modify_ldt read the LDT,
128 KiB were locked, name_to_handle_at returned a handle).
"""

from __future__ import annotations

import pytest

from run_helpers import run_probes

from probe_fixtures import probe  # noqa: F401  (fixture)

pytestmark = [pytest.mark.root]

DEPTH_PROBES = ("tiocsti", "tiocsti_high_bits", "tioclinux", "socket_families", "modify_ldt",
                "mlock_beyond_limit", "mlock2_beyond_limit", "mlockall_beyond_limit",
                "mmap_locked_beyond_limit", "name_to_handle_at", "open_by_handle_at")


@pytest.mark.parametrize("policy", ["restricted", "batch-job"])
def test_restricted_blocks_every_defence_in_depth_probe(probe: tuple[str, str], policy: str) -> None:
    exe, cache = probe
    got = run_probes(exe, cache, policy, DEPTH_PROBES)
    assert set(got) == set(DEPTH_PROBES), got
    through = {name: detail for name, (verdict, detail) in got.items() if verdict != "blocked"}
    assert not through, f"got through under {policy}: {through}"


def test_ordinary_networking_still_works(probe: tuple[str, str]) -> None:
    """The family allow-list keeps AF_INET: the bind probe gets its socket and
    is refused only by the missing capability (EACCES), not by socket()."""
    exe, cache = probe
    got = run_probes(exe, cache, "restricted", ["bind_port_80"])
    assert got["bind_port_80"][1].endswith("EACCES"), got
