"""What the shipped policies do with the syscalls newer than libseccomp
(issue 17), decided by their compiled filters (x86_64 numbers).

The newer calls joined the groups (tests/unit/test_systable.py): mseal with
@memory, the *xattrat family with @xattr, file_getattr/file_setattr and
fchmodat2 with @file-system, statmount/listmount/open_tree_attr with @mount.
So `default` allows mseal and the xattr family and refuses the mount family;
`restricted` must not let fchmodat2 set the set-user-ID bit that its chmod
rules refuse (fchmodat2 joining @file-system would otherwise allow it).
"""

from __future__ import annotations

from functools import lru_cache

import pytest

from enforcer.compile import seccomp as S
from enforcer.policy import syscall_table
from enforcer.policy.loader import load_policy

from tests.compile_helpers import AUDIT_ARCH_X86_64, RET_ALLOW, RET_ERRNO, run_bpf
from tests.paths import REPO

pytestmark = pytest.mark.skipif(S.native_arch() != "x86_64", reason="x86_64 numbers")

EPERM = RET_ERRNO | 1
S_ISUID, S_ISGID = 0o4000, 0o2000


@lru_cache(maxsize=None)
def _bpf(policy: str) -> bytes:
    return S.export_bpf(load_policy(str(REPO / "policies" / f"{policy}.yaml")))


def _decide(policy: str, name: str, args: tuple[int, ...] = (0,) * 6) -> int:
    nr = syscall_table.number(name, "x86_64")
    assert nr is not None, name
    return run_bpf(_bpf(policy), nr, AUDIT_ARCH_X86_64, args)


ALLOWED_BY_DEFAULT = ("mseal", "map_shadow_stack", "setxattrat", "getxattrat", "listxattrat",
                      "removexattrat", "file_getattr", "file_setattr", "fchmodat2", "cachestat",
                      "futex_wake", "futex_wait", "futex_requeue", "uretprobe", "uprobe")
REFUSED_BY_DEFAULT = ("statmount", "listmount", "open_tree_attr", "lsm_get_self_attr",
                      "lsm_set_self_attr", "lsm_list_modules", "set_mempolicy_home_node",
                      "quotactl_fd")


@pytest.mark.parametrize("policy", ["default", "web-server"])
@pytest.mark.parametrize("name", ALLOWED_BY_DEFAULT)
def test_default_allows_the_newer_everyday_calls(policy: str, name: str) -> None:
    assert _decide(policy, name) == RET_ALLOW


@pytest.mark.parametrize("policy", ["default", "web-server", "restricted", "batch-job"])
@pytest.mark.parametrize("name", REFUSED_BY_DEFAULT)
def test_every_shipped_policy_refuses_the_mount_family_and_lsm_calls(policy: str,
                                                                      name: str) -> None:
    assert _decide(policy, name) == EPERM


@pytest.mark.parametrize("policy", ["restricted", "batch-job"])
def test_restricted_allows_mseal_and_refuses_xattrat_like_xattr(policy: str) -> None:
    for name in ("mseal", "file_getattr", "file_setattr", "futex_wait"):
        assert _decide(policy, name) == RET_ALLOW, name
    for name in ("setxattr", "setxattrat", "getxattrat", "listxattrat", "removexattrat"):
        assert _decide(policy, name) == EPERM, name


@pytest.mark.parametrize("policy", ["restricted", "batch-job"])
@pytest.mark.parametrize("bits", [S_ISUID, S_ISGID, S_ISUID | S_ISGID | 0o755])
def test_restricted_fchmodat2_cannot_set_setid_bits(policy: str, bits: int) -> None:
    """Attack: fchmodat2(AT_FDCWD, "f", 04755, 0) where chmod/fchmodat with
    those bits are refused. Mode is fchmodat2's third argument (index 2)."""
    assert _decide(policy, "fchmodat2", (0, 0, bits, 0, 0, 0)) == EPERM
    assert _decide(policy, "fchmodat2", (0, 0, 0o755, 0, 0, 0)) == RET_ALLOW
