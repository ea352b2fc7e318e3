"""What `enforcer record` learns besides syscalls, from audit events built
here the way the kernel writes them (no root needed): files, ports,
arguments, root needs, the collapse rules, limits, and the audit rule
format the recording adds."""

from __future__ import annotations

import pytest

from enforcer.monitor.sources import audit_control
from enforcer.monitor.sources.audit_control import (AUDIT_ARCH, AUDIT_FILTERKEY, AUDIT_SESSIONID,
                                                    AuditRule)
from enforcer.policy.loader import load_policy
from enforcer.record import learn_access
from enforcer.record.access import (AUDIT_CWD, AUDIT_EOE, AUDIT_PATH, AUDIT_SOCKADDR,
                                    AUDIT_SYSCALL, AccessLog, EventAssembler)
from enforcer.record.auditrules import AUDITED_SYSCALLS, KEY_PREFIX, rules_for, syscall_numbers
from enforcer.record.learn import Learned

KEY = "enforcer-record:1234:77"
NR = {v: k for k, v in syscall_numbers("x86_64").items()}
WORKLOAD, RUNTIME = 500, 400


class Stream:
    """Feeds events to an assembler as the kernel writes them."""

    def __init__(self) -> None:
        self.log = AccessLog()
        self.asm = EventAssembler(KEY, self.log, lambda pid: pid == WORKLOAD or pid == 501,
                                  self._name)
        self.serial = 100

    @staticmethod
    def _name(arch: int, nr: int) -> str | None:
        return syscall_numbers("x86_64").get(nr) if arch == 0xC000003E else None

    def event(self, syscall: str, args: tuple[int, ...] = (0, 0, 0, 0), *, pid: int = WORKLOAD,
              ppid: int = 1, success: bool = True, exit: int = 0, fsuid: int = 0, fsgid: int = 0,
              cwd: str = "/srv", paths: tuple[tuple[str, str, str, int, int], ...] = (),
              saddr: str | None = None, key: str = KEY) -> None:
        self.serial += 1
        s = self.serial
        a = " ".join(f"a{i}={v:x}" for i, v in enumerate((*args, 0, 0, 0, 0)[:4]))
        self.asm.feed(AUDIT_SYSCALL, (
            f"audit(1.0:{s}): arch=c000003e syscall={NR[syscall]} success={'yes' if success else 'no'} "
            f"exit={exit} {a} items={len(paths)} ppid={ppid} pid={pid} auid=0 uid={fsuid} gid=0 "
            f"euid={fsuid} suid=0 fsuid={fsuid} egid=0 sgid=0 fsgid={fsgid} tty=(none) ses=77 "
            f'comm="x" exe="/usr/bin/x" key="{key}"').encode())
        self.asm.feed(AUDIT_CWD, f'audit(1.0:{s}): cwd="{cwd}"'.encode())
        for i, (name, nametype, mode, ouid, ogid) in enumerate(paths):
            self.asm.feed(AUDIT_PATH, (
                f'audit(1.0:{s}): item={i} name="{name}" inode=1 dev=fe:01 mode={mode} '
                f"ouid={ouid} ogid={ogid} rdev=00:00 nametype={nametype} cap_fp=0").encode())
        if saddr is not None:
            self.asm.feed(AUDIT_SOCKADDR, f"audit(1.0:{s}): saddr={saddr}".encode())
        self.asm.feed(AUDIT_EOE, f"audit(1.0:{s}): ".encode())


AT_FDCWD = 0xFFFFFF9C
O_DIRECTORY = 0o200000
FILE, DIR = "0100644", "040755"


def test_opens_are_reads_writes_and_created_names_resolved_against_cwd_and_dirfds() -> None:
    s = Stream()
    s.event("openat", (AT_FDCWD, 0, 0, 0), cwd="/etc", paths=(("app.conf", "NORMAL", FILE, 0, 0),))
    s.event("openat", (AT_FDCWD, 0, O_DIRECTORY, 0), exit=5,
            paths=(("/var/lib/app", "NORMAL", "040777", 0, 0),))
    # relative to fd 5 (the directory just opened), created, written
    s.event("openat", (5, 0, 0o101, 0o644), exit=6,
            paths=(("/var/lib/app", "PARENT", "040777", 0, 0), ("db", "CREATE", FILE, 0, 0)))
    # a child (ppid 500) using the descriptor it inherited
    s.event("unlinkat", (5, 0, 0, 0), pid=501, ppid=WORKLOAD,
            paths=(("/var/lib/app", "PARENT", "040777", 0, 0), ("old", "DELETE", FILE, 0, 0)))
    # an unknown dirfd: counted, never guessed
    s.event("openat", (9, 0, 0, 0), paths=(("x", "NORMAL", FILE, 0, 0),))
    # a failed open asks Landlock nothing
    s.event("openat", (AT_FDCWD, 0, 0, 0), success=False, exit=-2,
            paths=(("/nonexistent", "UNKNOWN", FILE, 0, 0),))
    log = s.log
    assert set(log.reads) == {"/etc/app.conf", "/var/lib/app"}
    assert set(log.writes) == {"/var/lib/app/db"}
    assert "/var/lib/app/db" in log.created
    assert set(log.changed_dirs) == {"/var/lib/app"}
    assert list(log.unresolved) == ["openat: x"]
    assert log.args["openat"] == {(0, 0), (O_DIRECTORY, 0), (0o101, 0o644)}


def test_only_the_workload_counts_not_the_runtime_before_its_filter() -> None:
    s = Stream()
    s.event("openat", (AT_FDCWD, 0, 0, 0), pid=RUNTIME, paths=(("/venv/x.py", "NORMAL", FILE, 0, 0),))
    s.event("openat", (AT_FDCWD, 0, 0, 0), key="enforcer-record:1:2",
            paths=(("/other", "NORMAL", FILE, 0, 0),))
    assert not s.log.reads and s.asm.skipped == 1 and s.log.events == 0


def test_exec_ports_and_socket_types() -> None:
    s = Stream()
    s.event("execve", paths=(("/usr/bin/python3", "NORMAL", "0100755", 0, 0),
                             ("/lib64/ld-linux-x86-64.so.2", "NORMAL", "0100755", 0, 0)))
    s.event("socket", (2, 0x80001, 6), exit=3)  # AF_INET, SOCK_STREAM|SOCK_CLOEXEC, TCP
    s.event("bind", (3,), saddr="02001F90" + "7F000001" + "00" * 8)  # 127.0.0.1:8080
    s.event("socket", (2, 2, 0), exit=4)  # UDP: Landlock does not restrict it
    s.event("connect", (4,), saddr="02000035" + "7F000001" + "00" * 8)  # :53
    s.event("socket", (10, 1, 0), exit=7)  # AF_INET6 TCP
    s.event("connect", (7,), success=False, exit=-115,  # EINPROGRESS: the attempt counts
            saddr="0A001538" + "00" * 24)  # [::]:5432
    s.event("bind", (3,), saddr="0100" + "2F72756E2F782E736F636B00")  # AF_UNIX /run/x.sock
    log = s.log
    assert set(log.executes) == {"/usr/bin/python3", "/lib64/ld-linux-x86-64.so.2"}
    assert dict(log.binds) == {8080: 1} and dict(log.connects) == {5432: 1}
    assert "/run" in log.changed_dirs and "/run/x.sock" in log.created


def test_what_needed_root() -> None:
    s = Stream()
    # root reading a file only its owner (root) may read: needs root, no capability
    s.event("openat", (AT_FDCWD, 0, 0, 0), paths=(("/etc/secret", "NORMAL", "0100600", 0, 0),))
    # root writing another user's file: CAP_DAC_OVERRIDE
    s.event("openat", (AT_FDCWD, 0, 1, 0), paths=(("/var/log/x.log", "NORMAL", "0100640", 33, 4),))
    s.event("setuid", (33,))
    s.event("socket", (17, 3, 0), exit=3)  # AF_PACKET
    needs = s.log.needs
    assert needs.keys() == {"root", "CAP_DAC_OVERRIDE", "CAP_SETUID", "CAP_NET_RAW"}
    # a non-root process using world-readable files needs nothing
    t = Stream()
    t.event("openat", (AT_FDCWD, 0, 0, 0), fsuid=1000, paths=(("/etc/passwd", "NORMAL", FILE, 0, 0),))
    assert not t.log.needs


@pytest.mark.parametrize("paths, expected", [
    # /usr whole for reading; 3 entries of one directory collapse into it
    ({"/usr/lib/x/a.so", "/usr/share/y", "/srv/app/a", "/srv/app/b", "/srv/app/c"},
     {"/usr", "/srv/app"}),
    # never into a shared directory: /etc stays file by file
    ({"/etc/a", "/etc/b", "/etc/c", "/etc/ssl/x"}, {"/etc/a", "/etc/b", "/etc/c", "/etc/ssl/x"}),
    # bottom up: two levels
    ({"/srv/d/1/a", "/srv/d/1/b", "/srv/d/1/c", "/srv/d/2", "/srv/d/3"}, {"/srv/d"}),
    # a grant under another is dropped
    ({"/srv/app", "/srv/app/x"}, {"/srv/app"}),
])
def test_collapse(paths: set[str], expected: set[str]) -> None:
    assert learn_access.collapse(paths, learn_access.WHOLE_TREES) == expected


def test_canonical_names() -> None:
    assert learn_access.canonical("/proc/1234/status") == "/proc"
    assert learn_access.canonical("/proc/self/maps") == "/proc"
    assert learn_access.canonical("/proc/sys/kernel/ngroups_max") == "/proc/sys/kernel/ngroups_max"
    assert learn_access.canonical("/proc/self/fd/3") is None
    assert learn_access.canonical("/dev/stdout") is None
    assert learn_access.canonical("/dev/pts/7") == "/dev/pts"


def test_limits_have_the_documented_headroom() -> None:
    assert learn_access.memory_limit(10 << 20) == 80 << 20  # +64 MiB, rounded up to 16 MiB
    assert learn_access.memory_limit(300 << 20) == 608 << 20  # twice
    assert learn_access.pids_limit(5) == 37 and learn_access.pids_limit(100) == 200


def test_arguments_narrow_the_allowed_syscalls() -> None:
    restricted = load_policy("restricted")
    learned = Learned(allow={"openat": 10, "setuid": 2, "socket": 3, "ioctl": 4, "read": 5})
    log = AccessLog()
    log.args = {"openat": {(0, 0), (0o101, 0o644)}, "setuid": {(33,)},
                "socket": {(2, 1, 0), (17, 3, 0)}}
    notes = learn_access.narrow_syscalls(learned, log, restricted)
    rules = {(r.syscall, r.action.blocks) for r, _, _ in learned.rules}
    # openat: restricted's set-id conditions hold for every call
    assert "openat" not in learned.allow and ("openat", False) in rules
    # setuid: only to 33
    setuid = [r for r, _, _ in learned.rules if r.syscall == "setuid"]
    assert [(c.index, c.value) for r in setuid for c in r.args] == [(0, 33)]
    # socket: AF_PACKET does not fit restricted's families: unconditional, said
    assert "socket" in learned.allow and any("socket" in n for n in notes)
    # ioctl: restricted's TIOCSTI/TIOCLINUX exceptions come along
    assert ("ioctl", True) in rules and "ioctl" in learned.allow
    assert "read" in learned.allow


def test_audit_rule_round_trip_and_recording_rules() -> None:
    rule = AuditRule(syscalls=frozenset({2, 257, 1999}),
                     fields=((AUDIT_ARCH, 0xC000003E), (AUDIT_SESSIONID, 77),
                             (AUDIT_FILTERKEY, KEY)))
    back = AuditRule.unpack(rule.pack())
    assert back.syscalls == rule.syscalls and back.fields == rule.fields and back.key() == KEY
    with pytest.raises(ValueError):
        AuditRule(syscalls=frozenset({4096}), fields=()).pack()
    with pytest.raises(ValueError):
        AuditRule.unpack(rule.pack()[:100])
    (made,) = rules_for(77, ("x86_64",), KEY)
    assert dict(made.fields)[AUDIT_SESSIONID] == 77 and made.key().startswith(KEY_PREFIX)
    assert {syscall_numbers("x86_64")[n] for n in made.syscalls} == set(AUDITED_SYSCALLS)
    assert audit_control.AUDIT_ADD_RULE == 1011


def test_merging_rests_adds_grants_and_keeps_root_if_any_needed_it() -> None:
    base = load_policy("default")
    a = {"read": ["/etc/a.conf", "/usr"], "write": ["/srv/d/x"], "execute": ["/usr/bin/a"],
         "bind": [8080], "connect": [], "scope": ["signal", "abstract-unix-socket"],
         "writable": ["/srv/d/x"], "peaks": {"memory": 10 << 20, "pids": 3}, "needs": {},
         "memlock": True}
    b = {"read": ["/etc/b.conf"], "write": ["/srv/d/y", "/srv/d/z"], "execute": ["/usr/bin/b"],
         "bind": [], "connect": [5432], "scope": ["signal"], "writable": ["/srv/d/y"],
         "peaks": {"memory": 300 << 20, "pids": 2}, "needs": {"CAP_CHOWN": "called chown"},
         "memlock": True}
    rest = learn_access.merge_rest([a, b], base)
    g = rest.grants
    assert [p for p, _ in g.write] == ["/srv/d"]  # three entries of /srv/d: collapsed
    assert {p for p, _ in g.read} == {"/etc/a.conf", "/etc/b.conf", "/usr"}
    assert g.bind == [8080] and g.connect == [5432] and g.scope == ["signal"]
    assert rest.memory_max == learn_access.memory_limit(300 << 20)
    assert rest.pids_max == learn_access.pids_limit(3)
    assert not rest.dynamic_user and rest.capabilities == ["CHOWN"]
    assert learn_access.merge_rest([a, a], base).dynamic_user


def test_namespaces_are_added_unless_it_watched_other_processes() -> None:
    base = load_policy("default")  # namespaces: [mount]
    own = AccessLog()
    own.reads.update({"/proc/500/status": 1, "/proc/self/maps": 1})
    ns, note = learn_access.learned_namespaces(own, {500}, base)
    assert ns == ["mount", "pid", "ipc", "uts"] and note is None
    agent = AccessLog()
    agent.reads.update({"/proc/1/cmdline": 1})  # a process that is not its own
    ns, note = learn_access.learned_namespaces(agent, {500}, base)
    assert ns is None and note is not None and "not its own" in note
