"""The audit record parser, the netlink framing, actions and syscall names."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.monitor.sources.audit import (AUDIT_SECCOMP, MalformedRecord, action_name,
                                            decode_untrusted, iter_netlink_messages,
                                            parse_seccomp_record, serial_of)
from enforcer.monitor.syscalls import ARCH_NAMES, SyscallNames, arch_name

SAMPLE = (b'audit(1700000000.123:456): auid=1000 uid=0 gid=0 ses=3 subj=unconfined pid=1234 '
          b'comm="x y" exe="/usr/bin/x" sig=0 arch=c000003e syscall=101 compat=0 '
          b'ip=0x7f0012345678 code=0x50000')


def test_parses_every_field() -> None:
    r = parse_seccomp_record(SAMPLE.replace(b'comm="x y"', b'comm="xy"'))
    assert (r.time, r.serial, r.pid, r.uid, r.auid, r.ses) == (1700000000.123, 456, 1234, 0, 1000, 3)
    assert (r.comm, r.exe, r.sig, r.arch, r.syscall, r.compat) == ("xy", "/usr/bin/x", 0, 0xC000003E, 101, 0)
    assert r.ip == 0x7F0012345678
    assert r.action == "errno"


def test_hex_encoded_comm_and_exe_are_decoded() -> None:
    # The kernel writes a value with a space as bare hex.
    text = SAMPLE.replace(b'comm="x y"', b"comm=" + b"my prog".hex().upper().encode())
    text = text.replace(b'exe="/usr/bin/x"', b"exe=" + "/tmp/a b/é".encode().hex().encode())
    r = parse_seccomp_record(text)
    assert r.comm == "my prog"
    assert r.exe == "/tmp/a b/é"


def test_apparmor_subj_with_a_space_is_skipped() -> None:
    text = SAMPLE.replace(b"subj=unconfined", b"subj=/usr/bin/foo (enforce)").replace(b'"x y"', b'"x"')
    assert parse_seccomp_record(text).pid == 1234


def test_null_comm() -> None:
    r = parse_seccomp_record(SAMPLE.replace(b'comm="x y"', b"comm=(null)"))
    assert r.comm is None


@pytest.mark.parametrize("code,name", [
    (0x80000000, "kill-process"), (0, "kill-thread"), (0x30000, "trap"), (0x50000, "errno"),
    (0x7FC00000, "user-notif"), (0x7FF00000, "trace"), (0x7FFC0000, "log"),
    (0x7FFF0000, "allow"), (0x12340000, "unknown")])
def test_action_names(code: int, name: str) -> None:
    assert action_name(code) == name


@pytest.mark.parametrize("mutation", [
    lambda t: t.replace(b"pid=1234 ", b""),
    lambda t: t.replace(b"arch=c000003e", b"arch=zz"),
    lambda t: t.replace(b"syscall=101", b"syscall="),
    lambda t: t.replace(b"code=0x50000", b""),
    lambda t: t.replace(b"audit(", b"audit["),
    lambda t: t.replace(b":456)", b")"),
    lambda t: t.replace(b"1700000000.123", b"x"),
    lambda t: t.replace(b'comm="x y"', b"comm=nothex"),
    lambda t: t[:20],
    lambda t: b"",
])
def test_malformed_records_raise_malformed(mutation) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MalformedRecord):
        parse_seccomp_record(mutation(SAMPLE))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_only_raise_malformed(data: bytes) -> None:
    try:
        parse_seccomp_record(data)
    except MalformedRecord:
        pass


_field = st.sampled_from([b"pid", b"arch", b"syscall", b"code", b"comm", b"exe", b"uid", b"ses",
                          b"auid", b"sig", b"compat", b"ip", b"subj", b"junk"])
_value = st.one_of(st.binary(max_size=12).filter(lambda b: b" " not in b and b"\n" not in b),
                   st.integers(-5, 2**40).map(lambda i: str(i).encode()),
                   st.integers(0, 2**40).map(lambda i: b"%x" % i))


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(_field, _value), max_size=16))
def test_fuzz_structured_records_only_raise_malformed(pairs: list[tuple[bytes, bytes]]) -> None:
    text = b"audit(1.5:7): " + b" ".join(k + b"=" + v for k, v in pairs)
    try:
        r = parse_seccomp_record(text)
    except MalformedRecord:
        return
    assert r.serial == 7 and isinstance(r.pid, int)


def test_decode_untrusted_rejects_garbage() -> None:
    with pytest.raises(MalformedRecord):
        decode_untrusted(b"xyz")
    assert decode_untrusted(b'"a"') == "a"
    assert decode_untrusted(b"ff") == "\\xff"


def _nlmsg(mtype: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, 0, 0, 0) + payload


def test_netlink_framing_multiple_and_padding() -> None:
    a, b = _nlmsg(AUDIT_SECCOMP, b"abc"), _nlmsg(1300, b"defgh")
    data = a + b"\0" * (-len(a) % 4) + b
    assert list(iter_netlink_messages(data)) == [(AUDIT_SECCOMP, b"abc"), (1300, b"defgh")]


def test_netlink_framing_rejects_a_lying_length() -> None:
    with pytest.raises(MalformedRecord):
        list(iter_netlink_messages(struct.pack("=IHHII", 9999, 1326, 0, 0, 0) + b"x" * 10))
    with pytest.raises(MalformedRecord):
        list(iter_netlink_messages(_nlmsg(1326, b"abcd") + struct.pack("=IHHII", 999, 1326, 0, 0, 0)))


def test_serial_of() -> None:
    assert serial_of(SAMPLE) == 456
    assert serial_of(b"nope") is None
    assert serial_of(b"audit(1.0:x): ") is None


def test_arch_table_matches_libseccomp() -> None:
    import pyseccomp

    resolve = pyseccomp._libseccomp.seccomp_arch_resolve_name  # noqa: SLF001
    checked = 0
    for value, name in ARCH_NAMES.items():
        token = resolve(name.encode()) & 0xFFFFFFFF
        if token == 0:  # newer than this libseccomp (loongarch64 came in 2.5.5)
            continue
        assert token == value, name
        checked += 1
    assert checked >= 15 and ARCH_NAMES[0xC000003E] == "x86_64"
    assert arch_name(0x1234) == "0x00001234"


def test_syscall_names_resolve_and_cache() -> None:
    names = SyscallNames()
    assert names.name(0xC000003E, 110) == "getppid"
    assert names.name(0x40000003, 20) == "getpid"  # i386
    assert names.name(0xC00000B7, 172) == "getpid"  # aarch64
    assert names.name(0xC000003E, 0x40000000 | 39) == "getpid"  # x32 bit
    # Newer than libseccomp 2.5.4: named from enforcer's syscall table.
    assert names.name(0xC000003E, 462) == "mseal"
    assert names.name(0x40000003, 463) == "setxattrat"  # i386
    assert names.name(0xC000003E, 0x40000000 | 458) == "listmount"  # x32
    assert names.name(0x40000028, 0x0F0002) == "cacheflush"  # ARM private: libseccomp's
    assert names.name(0xC000003E, 99999) is None
    assert names.name(0xC000003E, -1) is None
    assert (0xC000003E, 110) in names._cache  # noqa: SLF001
