"""The tables the policy language keeps: checked against the kernel, libc
and libseccomp, so a typo cannot grant or drop the wrong thing."""

from __future__ import annotations

import errno
import mmap
import os
import re
import socket
import stat
import termios
from pathlib import Path

import pytest

from enforcer.kernel import capabilities as caps
from enforcer.policy import constants, groups, syscalls

HEADER = Path("/usr/include/linux/capability.h")


@pytest.mark.skipif(not HEADER.exists(), reason="linux-libc-dev headers not installed")
def test_capabilities_match_kernel_header() -> None:
    found = dict(re.findall(r"^#define\s+(CAP_[A-Z_]+)\s+(\d+)\s*$", HEADER.read_text(), re.M))
    header = {k: int(v) for k, v in found.items() if k != "CAP_LAST_CAP"}
    assert header == caps.CAPABILITIES
    assert max(caps.CAPABILITIES.values()) == caps.CAP_LAST_CAP == 40


def test_capability_names_any_case() -> None:
    assert caps.from_name("net_bind_service") == 10
    assert caps.from_name("CAP_NET_BIND_SERVICE") == 10
    assert caps.from_name("Cap_Sys_Admin") == 21
    with pytest.raises(KeyError):
        caps.from_name("SYS_ADMINN")


def test_capability_bounding_set_size_matches_running_kernel() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert int(f.read()) >= caps.CAP_LAST_CAP


def _python_value(name: str) -> int | None:
    for module in (socket, os, mmap, termios, stat):
        value = getattr(module, name, None)
        if isinstance(value, int):
            return value
    return None


def test_constants_match_python_where_python_has_them() -> None:
    checked = 0
    for name, value in constants.CONSTANTS.items():
        expected = _python_value(name)
        if expected is not None:
            assert value == expected, name
            checked += 1
    # socket AF_/SOCK_, os O_, mmap PROT_/MAP_, termios TIOC*: most of the table.
    assert checked >= 50, checked


def test_tmpfile_bit_is_o_tmpfile_without_o_directory() -> None:
    assert constants.CONSTANTS["__O_TMPFILE"] == os.O_TMPFILE & ~os.O_DIRECTORY


def test_clone_flags_against_kernel_header() -> None:
    header = Path("/usr/include/linux/sched.h")
    if not header.exists():
        pytest.skip("linux-libc-dev headers not installed")
    found = {k: int(v, 16) for k, v in re.findall(r"#define\s+(CLONE_[A-Z_]+)\s+0x([0-9a-fA-F]+)", header.read_text())}
    for name, value in constants.CONSTANTS.items():
        if name.startswith("CLONE_"):
            assert found[name] == value, name


def test_personality_constants_against_header() -> None:
    header = Path("/usr/include/linux/personality.h")
    if not header.exists():
        pytest.skip("linux-libc-dev headers not installed")
    text = header.read_text()
    for name in ("UNAME26", "ADDR_NO_RANDOMIZE", "READ_IMPLIES_EXEC"):
        m = re.search(rf"\b{name}\s*=\s*0x([0-9a-fA-F]+)", text)
        assert m and int(m.group(1), 16) == constants.CONSTANTS[name], name
    m = re.search(r"\bPER_LINUX32\s*=\s*0x([0-9a-fA-F]+)", text)
    assert m and int(m.group(1), 16) == constants.CONSTANTS["PER_LINUX32"]


def test_parse_value() -> None:
    assert constants.parse_value("CLONE_NEWUSER|CLONE_NEWNS") == 0x10000000 | 0x20000
    assert constants.parse_value("AF_INET") == socket.AF_INET
    assert constants.parse_value("0x10 | map_fixed") == 0x10
    assert constants.parse_value("42") == 42
    for bad in ("", "AF_INTE", "CLONE_NEWNS||", "0x1" + "0" * 17):
        with pytest.raises(ValueError):
            constants.parse_value(bad)


def test_errno_names() -> None:
    assert constants.errno_number("EPERM") == errno.EPERM
    assert constants.errno_number("enosys") == errno.ENOSYS
    assert constants.errno_number("EPREM") is None
    assert constants.errno_number("errorcode") is None


def test_rlimit_names_exist_in_resource_module() -> None:
    import resource

    checked = 0
    for name, number in constants.RLIMIT_NUMBERS.items():
        value = getattr(resource, "RLIMIT_" + name, None)  # Python lacks RLIMIT_LOCKS
        if value is not None:
            assert value == number, name
            checked += 1
    assert checked >= 14


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_group_member_resolves(arch: str) -> None:
    """Every member is a syscall enforcer knows (its table or libseccomp);
    each really exists on at least one architecture (32-bit-only names like
    `stat64` exist on x86 and arm, and are left out of a filter for an arch
    without them)."""
    for name, group in groups.GROUPS.items():
        for member in groups.expand(name):
            assert syscalls.known(member), f"@{name}: {member!r} is no syscall enforcer knows"
            assert syscalls.arches_with(member), f"@{name}: {member!r} exists on no architecture"


def test_one_arch_only_names_are_reported_as_such() -> None:
    # open has no aarch64 number; arch_prctl exists only on x86 flavours.
    assert syscalls.exists_on("open", "x86_64") and not syscalls.exists_on("open", "aarch64")
    assert syscalls.exists_on("openat", "aarch64")
    assert "x86_64" in syscalls.arches_with("arch_prctl")
    assert "aarch64" not in syscalls.arches_with("arch_prctl")
    assert syscalls.exists_on("socket", "x86")  # multiplexed through socketcall still counts
    assert not syscalls.known("wirte")


def test_group_table_is_well_formed() -> None:
    for name, group in groups.GROUPS.items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name)
        assert group.help and "\n" not in group.help
        assert len(group.members) == len(set(group.members)), f"@{name} lists a member twice"
        for member in group.members:
            if member.startswith("@"):
                assert member[1:] in groups.GROUPS, f"@{name} includes unknown {member}"
        groups.expand(name)  # no cycles


def test_group_expansion_nests() -> None:
    members = groups.expand("system-service")
    assert "read" in members and "socket" in members and "clone" in members
    assert "mount" not in members and "ptrace" not in members and "bpf" not in members
    assert set(groups.expand("mount")) <= set(groups.expand("privileged"))


def test_native_arch_and_version() -> None:
    assert syscalls.native_arch() in syscalls.ARCHITECTURES
    assert re.fullmatch(r"\d+\.\d+\.\d+", syscalls.libseccomp_version())
    assert syscalls.syscall_number("read", "x86_64") == 0
    assert syscalls.syscall_number("read", "aarch64") == 63
