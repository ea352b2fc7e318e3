"""Exceptions carved out of an unconditional allow (enforcer/policy/carveouts.py),
and restricted's argument rules as the compiled filter decides them.

The decisions are checked in the BPF simulator over boundary values and a
few thousand random ones: what restricted blocks for set-id modes,
terminal ioctls and socket families (holes 10 and 11)."""

from __future__ import annotations

import errno
import os
import platform
import random
import stat
from pathlib import Path

import pytest

from enforcer.errors import PolicyErrors
from enforcer.policy import carveouts, constants
from enforcer.policy.loader import load_policy
from tests.compile_helpers import RET_ALLOW, RET_ERRNO, run_bpf
from tests.policy_helpers import write_policy

U64 = (1 << 64) - 1
TIOCSTI = constants.CONSTANTS["TIOCSTI"]
TIOCLINUX = constants.CONSTANTS["TIOCLINUX"]


def covered(cubes: list[tuple[int, int]], v: int) -> bool:
    return any(v & m == val for m, val in cubes)


@pytest.mark.parametrize("blocked", [
    [(0xFFFFFFFF, TIOCSTI), (0xFFFFFFFF, TIOCLINUX)],
    [(U64, 17)],
    [(0xF0, 0x30), (0x0F, 0x01)],
    [(0x1, 0x1), (0x1, 0x0)],  # everything blocked
])
def test_complement_covers_exactly_what_is_not_blocked(blocked: list[tuple[int, int]]) -> None:
    cubes = carveouts.complement(blocked)
    rng = random.Random(7)
    values = [v for m, val in blocked for v in (val, val | ~m & U64, val ^ 1 << 40)]
    values += [rng.getrandbits(64) for _ in range(5000)] + [rng.getrandbits(16) for _ in range(5000)]
    values += [0, U64, TIOCSTI + 1, TIOCSTI - 1, 1 << 32 | TIOCSTI]
    for v in values:
        is_blocked = any(v & m == val for m, val in blocked)
        assert covered(cubes, v) != is_blocked, hex(v)


def test_two_ioctl_requests_on_32_bits_take_33_rules() -> None:
    assert len(carveouts.complement([(0xFFFFFFFF, TIOCSTI), (0xFFFFFFFF, TIOCLINUX)])) == 33


def test_an_exception_keeps_the_rest_of_an_inherited_allow(tmp_path: Path) -> None:
    """A child's blocking rule is an exception to what it inherits, not a
    replacement of it (before, the whole syscall fell to the default)."""
    write_policy(tmp_path, "base.yaml", "name: base\nsyscalls:\n  default: errno EPERM\n"
                                        "  allow: [ioctl, read]\n")
    child = write_policy(tmp_path, "child.yaml", (
        "name: child\nextends: base.yaml\nsyscalls:\n  rules:\n"
        "    - {syscalls: [ioctl], action: kill-process,\n"
        "       args: [{index: 1, op: masked_eq, mask: 0xffffffff, value: TIOCSTI}]}\n"))
    rules = [r for r in load_policy(str(child)).syscalls.rules if r.syscall == "ioctl"]
    kills = [r for r in rules if r.action.blocks]
    allows = [r for r in rules if not r.action.blocks]
    assert len(kills) == 1 and len(allows) == 32
    assert all(r.origin is not None and r.origin.file.endswith("base.yaml") for r in allows)


def test_exception_beside_the_default_action_is_left_as_written(tmp_path: Path) -> None:
    p = write_policy(tmp_path, "p.yaml", "name: p\nsyscalls:\n  allow: [socket]\n  rules:\n"
                                         "    - {syscalls: [socket], action: errno EPERM, "
                                         "args: [{index: 0, op: eq, value: AF_PACKET}]}\n")
    rules = [r for r in load_policy(str(p)).syscalls.rules if r.syscall == "socket"]
    assert [(bool(r.args), r.action.blocks) for r in rules] == [(False, False), (True, True)]


@pytest.mark.parametrize("args, why", [
    ("[{index: 0, op: gt, value: 10}]", "exactly one eq or masked_eq"),
    ("[{index: 0, op: eq, value: 17}, {index: 1, op: eq, value: 3}]", "exactly one eq or masked_eq"),
])
def test_an_exception_that_cannot_be_compiled_exactly_is_refused(tmp_path: Path, args: str,
                                                                 why: str) -> None:
    p = write_policy(tmp_path, "p.yaml", "name: p\nsyscalls:\n  default: errno EPERM\n"
                                         "  allow: [socket]\n  rules:\n"
                                         f"    - {{syscalls: [socket], action: errno EACCES, args: {args}}}\n")
    with pytest.raises(PolicyErrors) as info:
        load_policy(str(p))
    err = info.value.errors[0]
    assert why in err.message and err.location is not None and err.location.line == 6


# -- restricted, as the compiled filter decides ----------------------------------------


@pytest.fixture(scope="module")
def restricted_bpf() -> bytes:
    if platform.machine() != "x86_64":
        pytest.skip("syscall numbers below are x86_64's")
    from enforcer.compile.seccomp import export_bpf

    return export_bpf(load_policy("restricted"))


NR = {"open": 2, "ioctl": 16, "socket": 41, "socketpair": 53, "chmod": 90, "fchmod": 91,
      "creat": 85, "mkdir": 83, "mknod": 133, "modify_ldt": 154, "openat": 257, "mkdirat": 258,
      "mknodat": 259, "fchmodat": 268, "name_to_handle_at": 303, "open_by_handle_at": 304,
      "openat2": 437, "fchmodat2": 452}
EPERM = RET_ERRNO | errno.EPERM


def decide(bpf: bytes, name: str, *args: int) -> int:
    return run_bpf(bpf, NR[name], args=args)


def test_restricted_ioctl_blocks_exactly_the_two_requests_on_any_upper_bits(restricted_bpf: bytes) -> None:
    rng = random.Random(11)
    for request in (TIOCSTI, TIOCLINUX):
        for high in (0, 1, 0xFFFFFFFF, rng.getrandbits(32)):
            assert decide(restricted_bpf, "ioctl", 0, high << 32 | request) == EPERM, (high, request)
    others = [0x5401, 0x5411, 0x5413, 0x541B, 0x541D, 0x80045430, 0xFFFFFFFF80045430, 0]
    others += [rng.getrandbits(64) for _ in range(3000)]
    for request in others:
        if request & 0xFFFFFFFF in (TIOCSTI, TIOCLINUX):
            continue
        assert decide(restricted_bpf, "ioctl", 0, request) == RET_ALLOW, hex(request)


def test_restricted_socket_families_are_an_allow_list(restricted_bpf: bytes) -> None:
    allowed = {1, 2, 10, 16}
    for family in range(64):
        for name in ("socket", "socketpair"):
            want = RET_ALLOW if family in allowed else EPERM
            assert decide(restricted_bpf, name, family, 1, 0) == want, (name, family)
    # Upper bits are not ignored by the allow-list: they make it fail, not pass.
    assert decide(restricted_bpf, "socket", 1 << 32 | 40, 1, 0) == EPERM


SETID = (stat.S_ISUID, stat.S_ISGID, stat.S_ISUID | stat.S_ISGID)


def test_restricted_refuses_set_id_bits_through_every_mode_setting_call(restricted_bpf: bytes) -> None:
    creat = os.O_CREAT | os.O_WRONLY
    tmpfile = os.O_TMPFILE | os.O_WRONLY
    for bit in SETID:
        mode = 0o755 | bit
        for name, args in (("chmod", (0, mode)), ("fchmod", (3, mode)), ("creat", (0, mode)),
                           ("mkdir", (0, mode)), ("mknod", (0, stat.S_IFREG | mode, 0)),
                           ("fchmodat", (3, 0, mode)), ("fchmodat2", (3, 0, mode, 0)),
                           ("mkdirat", (3, 0, mode)), ("mknodat", (3, 0, stat.S_IFREG | mode, 0)),
                           ("open", (0, creat, mode)), ("open", (0, tmpfile, mode)),
                           ("openat", (3, 0, creat, mode)), ("openat", (3, 0, tmpfile, mode))):
            assert decide(restricted_bpf, name, *args) == EPERM, (name, oct(mode))
        # Without O_CREAT/O_TMPFILE the mode is not read: any value passes.
        assert decide(restricted_bpf, "open", 0, os.O_RDONLY, mode) == RET_ALLOW
        assert decide(restricted_bpf, "openat", 3, 0, os.O_RDWR, mode) == RET_ALLOW
    for name, args in (("chmod", (0, 0o755)), ("creat", (0, 0o644)), ("mkdir", (0, 0o1777)),
                       ("mknodat", (3, 0, stat.S_IFIFO | 0o600, 0)), ("fchmodat2", (3, 0, 0o700, 0)),
                       ("open", (0, creat, 0o644)), ("openat", (3, 0, tmpfile, 0o600))):
        assert decide(restricted_bpf, name, *args) == RET_ALLOW, name


def test_restricted_openat2_ldt_and_handles(restricted_bpf: bytes) -> None:
    assert decide(restricted_bpf, "openat2", 3, 0, 0, 24) == RET_ERRNO | errno.ENOSYS
    for name in ("modify_ldt", "name_to_handle_at", "open_by_handle_at"):
        assert decide(restricted_bpf, name, 0, 0, 0) == EPERM, name


def test_a_policy_extending_restricted_names_another_socket_family(tmp_path: Path) -> None:
    """The family allow-list is extended the way policies/README.md shows."""
    if platform.machine() != "x86_64":
        pytest.skip("syscall numbers below are x86_64's")
    from enforcer.compile.seccomp import export_bpf

    child = write_policy(tmp_path, "dhcp.yaml", (
        "name: dhcp\nextends: restricted\nsyscalls:\n  rules:\n"
        "    - {syscalls: [socket], action: allow, args: [{index: 0, op: eq, value: AF_PACKET}]}\n"))
    bpf = export_bpf(load_policy(str(child)))
    for family, want in ((1, RET_ALLOW), (2, RET_ALLOW), (17, RET_ALLOW), (40, EPERM), (38, EPERM)):
        assert decide(bpf, "socket", family, 3, 0) == want, family
    assert decide(bpf, "socketpair", 17, 3, 0) == EPERM  # only what the child named
