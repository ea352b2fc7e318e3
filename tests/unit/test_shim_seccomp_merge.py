"""The parts of the seccomp intersection that libseccomp does not decide:
merging two comparisons on one argument, flags, what is refused, the cache.
(Decisions are proved against libseccomp in tests/integration/
test_shim_seccomp_merge_property.py and tests/adversarial/
test_shim_seccomp_tightens.py.)"""

from __future__ import annotations

import os

import pytest

from enforcer.shim import seccomp_merge
from enforcer.shim.errors import ShimError
from enforcer.shim.seccomp_merge import MASKED, U64, _and, intersect, intersect_cached

NATIVE = "SCMP_ARCH_X86_64"
ALLOW_ALL = {"defaultAction": "SCMP_ACT_ALLOW"}


def cond(op: str, value: int, two: int = 0) -> tuple[str, int, int]:
    return ("SCMP_CMP_" + op, value, two)


@pytest.mark.parametrize("a, b, both", [
    (cond("EQ", 5), cond("LT", 10), cond("EQ", 5)),
    (cond("EQ", 5), cond("GT", 10), False),
    (cond("LT", 38), cond("EQ", 39), False),
    (cond("LT", 38), cond("LE", 10), cond("LE", 10)),
    (cond("GT", 3), cond("GE", 10), cond("GE", 10)),
    (cond("GT", 3), cond("LT", 10), None),                     # 4..9: two comparisons
    (cond("GE", 3), cond("LE", 3), cond("EQ", 3)),
    (cond("MASKED_EQ", 0xF0, 0x10), cond("MASKED_EQ", 0x0F, 0x01),
     (MASKED, 0xFF, 0x11)),
    (cond("MASKED_EQ", 0xF0, 0x10), cond("MASKED_EQ", 0x30, 0x20), False),
    (cond("MASKED_EQ", 0xFFFFFFFF00000000, 0), cond("MASKED_EQ", 0xFFFFFFFF, 7),
     cond("EQ", 7)),
    (cond("NE", 5), cond("NE", 5), cond("NE", 5)),
    (cond("NE", 5), cond("NE", 6), None),
    (cond("NE", 5), cond("GT", 9), cond("GT", 9)),
    (cond("NE", 10), cond("GE", 10), cond("GE", 11)),
    (cond("NE", 7), cond("MASKED_EQ", 0x1, 0), cond("MASKED_EQ", 0x1, 0)),  # 7 is odd anyway
    (cond("MASKED_EQ", 0xF0, 0x10), cond("LE", 0x1F), None),  # 0x10.. and all low bits
    (cond("MASKED_EQ", U64 ^ 0xF, 0x10), cond("LE", 0x1F), cond("MASKED_EQ", U64 ^ 0xF, 0x10)),
    (cond("MASKED_EQ", 0xF0, 0x10), cond("GT", U64 - 1), False),
])
def test_two_comparisons_on_one_argument(a, b, both) -> None:
    assert _and(a, b, narrow=False) == both
    assert _and(b, a, narrow=False) == both


def test_on_a_32_bit_architecture_only_32_bit_reasoning_is_trusted() -> None:
    # On 32 bits libseccomp compares the low word: GE 0x100000000 would be GE 0.
    assert _and(cond("GT", 0xFFFFFFFF), cond("GE", 3), narrow=False) == cond("GE", 1 << 32)
    assert _and(cond("GT", 0xFFFFFFFF), cond("GE", 3), narrow=True) is None
    assert _and(cond("EQ", 1 << 40), cond("GT", 3), narrow=True) is None
    assert _and(cond("EQ", 5), cond("LT", 10), narrow=True) == cond("EQ", 5)


def _profile(**kw: object) -> dict:
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": [NATIVE], **kw}


def test_flags_log_more_from_either_side_and_spec_allow_only_from_both() -> None:
    merged, _ = intersect(_profile(flags=["SECCOMP_FILTER_FLAG_LOG",
                                          "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]),
                          _profile(flags=["SECCOMP_FILTER_FLAG_TSYNC"]), NATIVE)
    assert merged["flags"] == ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]
    both = ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
    merged, _ = intersect(_profile(flags=both), _profile(flags=both), NATIVE)
    assert merged["flags"] == both


@pytest.mark.parametrize("config, policy, message", [
    (_profile(flags=["SECCOMP_FILTER_FLAG_NEW"]), _profile(), "unknown filter flag"),
    (_profile(comment="x"), _profile(), "unknown field"),
    (_profile(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {}}]),
     _profile(), "unknown field"),
    (_profile(syscalls=[{"names": ["read"], "action": "SCMP_ACT_MAYBE"}]), _profile(),
     "unknown seccomp action"),
    (_profile(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]), _profile(),
     "is not 0..5"),
    (_profile(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]), _profile(),
     "64-bit"),
    (_profile(), _profile(listenerPath="/run/x.sock"), "listener"),
    ({"architectures": [NATIVE]}, _profile(), "unknown seccomp action None"),
])
def test_what_cannot_be_read_is_refused(config, policy, message) -> None:
    with pytest.raises(ShimError, match=message):
        intersect(config, policy, NATIVE)


def test_the_containers_listener_is_kept() -> None:
    config = _profile(listenerPath="/run/agent.sock", listenerMetadata="m",
                      syscalls=[{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}])
    merged, _ = intersect(config, ALLOW_ALL, NATIVE)
    assert (merged["listenerPath"], merged["listenerMetadata"]) == ("/run/agent.sock", "m")
    assert {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"} in merged["syscalls"]


def test_a_kill_default_lists_every_name_for_runcs_enosys_stub() -> None:
    """runc answers ENOSYS above the highest syscall a profile names: with a
    default stricter than ERRNO, every name of both is listed (with the
    default action, which runc skips for libseccomp) so that stays true."""
    config = _profile(syscalls=[{"names": ["cachestat"], "action": "SCMP_ACT_ALLOW"}])
    policy = {"defaultAction": "SCMP_ACT_KILL_PROCESS",
              "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    merged, _ = intersect(config, policy, NATIVE)
    assert merged["defaultAction"] == "SCMP_ACT_KILL_PROCESS"
    assert {"names": ["cachestat"], "action": "SCMP_ACT_KILL_PROCESS"} in merged["syscalls"]


def test_the_intersection_is_cached_per_profile_pair(tmp_path, monkeypatch) -> None:
    config = _profile(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW"}])
    first = intersect_cached(config, ALLOW_ALL, "plan-1", str(tmp_path))
    files = os.listdir(tmp_path / "seccomp")
    assert len(files) == 1
    assert oct(os.stat(tmp_path / "seccomp" / files[0]).st_mode & 0o777) == "0o600"

    def not_again(*_a: object, **_k: object) -> None:
        raise AssertionError("computed again despite the cache")

    monkeypatch.setattr(seccomp_merge, "intersect", not_again)
    assert intersect_cached(config, ALLOW_ALL, "plan-1", str(tmp_path)) == first
    # Another Plan, or another container profile: another entry.
    for key, doc in (("plan-2", config), ("plan-1", _profile())):
        with pytest.raises(AssertionError, match="computed again"):
            intersect_cached(doc, ALLOW_ALL, key, str(tmp_path))
    # An entry someone else could have written is not trusted.
    os.chmod(tmp_path / "seccomp" / files[0], 0o666)
    with pytest.raises(AssertionError, match="computed again"):
        intersect_cached(config, ALLOW_ALL, "plan-1", str(tmp_path))
