"""What a recorded workload touched: files, TCP ports, the arguments of the
calls the learned policy narrows, and what needed root -- from the audit
events of the recording's rules (enforcer/record/auditrules.py).

One audited syscall is one audit *event*: records of the same serial, a
SYSCALL record (type 1300: the call, its arguments a0..a3, success, exit,
the caller's pid, ppid and fsuid/fsgid, the rule's key) first, then CWD
(1307), PATH (1302, one per name the call looked up: the name as passed,
with the inode's mode and owner) and SOCKADDR (1306), and an EOE (1320)
last. `EventAssembler` collects them by serial and hands each complete
event to `AccessLog.event`.

Only the workload counts, not the runtime that starts it: `enforcer run`
opens files in the same audit session before it loads the seccomp filter.
Every process of the workload runs under the recording's log-everything
filter, which writes a seccomp record at the *entry* of each syscall --
before that syscall's exit record. So an event counts when its process
has been seen in a seccomp record of the session before: the first
execve of the workload (after the filter) and everything after it do,
the runtime's own opens before it do not.

A name is what the program passed: relative names are resolved against
the CWD record, or against the directory a dirfd was opened on (tracked
per process from the exit value of successful opens, falling back to the
parent process's table for inherited descriptors). What cannot be resolved
is counted and reported, never guessed.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from enforcer.monitor.sources.audit import MalformedRecord, decode_untrusted, split_record

AUDIT_SYSCALL = 1300
AUDIT_PATH = 1302
AUDIT_SOCKADDR = 1306
AUDIT_CWD = 1307
AUDIT_EOE = 1320
RECORD_TYPES = frozenset({AUDIT_SYSCALL, AUDIT_PATH, AUDIT_SOCKADDR, AUDIT_CWD, AUDIT_EOE})

AT_FDCWD = -100
O_ACCMODE = 0o3
O_WRONLY, O_RDWR = 0o1, 0o2
O_CREAT, O_TRUNC = 0o100, 0o1000
O_PATH = 0o10000000
S_IFMT, S_IFDIR, S_IFCHR, S_IFBLK = 0o170000, 0o040000, 0o020000, 0o060000
AF_UNIX, AF_INET, AF_INET6, AF_PACKET = 1, 2, 10, 17
SOCK_STREAM, SOCK_RAW = 1, 3
IPPROTO_TCP = 6

# Where the name(s) a call looks up are relative to: the argument holding
# the dirfd, for the names created (CREATE), removed (DELETE) or used as
# they are (NORMAL). Calls without an *at form resolve against the cwd.
DIRFD_ARG = {
    "openat": 0, "openat2": 0, "execveat": 0, "mkdirat": 0, "mknodat": 0, "unlinkat": 0,
    "fchmodat": 0, "fchmodat2": 0, "symlinkat": 1,
}
# (dirfd argument of the old name, of the new name)
DIRFD_PAIR = {"renameat": (0, 2), "renameat2": (0, 2), "linkat": (0, 2)}
OPEN_FLAGS_ARG = {"open": 1, "openat": 2}
# The arguments kept per call for the learned argument rules: set-id bits
# in modes, clone flags, socket families and types, personality, uids.
ARG_INDEXES: dict[str, tuple[int, ...]] = {
    "open": (1, 2), "openat": (2, 3), "creat": (1,), "mkdir": (1,), "mkdirat": (2,),
    "mknod": (1,), "mknodat": (2,), "chmod": (1,), "fchmod": (1,), "fchmodat": (2,),
    "fchmodat2": (2,), "clone": (0,), "personality": (0,), "socket": (0, 1, 2),
    "socketpair": (0, 1, 2),
    "setuid": (0,), "setgid": (0,), "setfsuid": (0,), "setfsgid": (0,),
    "setreuid": (0, 1), "setregid": (0, 1), "setresuid": (0, 1, 2), "setresgid": (0, 1, 2),
}
MAX_ARG_TUPLES = 4096  # distinct argument tuples kept per syscall
MAX_PENDING = 4096  # events waiting for their EOE
MAX_FDS = 1 << 16  # tracked (pid, fd) entries


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass
class PathItem:
    name: str | None
    nametype: str
    mode: int | None
    ouid: int | None
    ogid: int | None


@dataclass
class Event:
    """One audited syscall, assembled from its records."""

    serial: int
    syscall: str
    success: bool
    exit: int
    args: tuple[int, int, int, int]
    pid: int
    ppid: int
    fsuid: int
    fsgid: int
    cwd: str | None = None
    paths: list[PathItem] = field(default_factory=list)
    sockaddr: bytes | None = None


@dataclass
class AccessLog:
    """Everything the workload was seen to touch (counts, for the review)."""

    reads: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)  # files written in place
    changed_dirs: Counter[str] = field(default_factory=Counter)  # created/removed inside
    created: set[str] = field(default_factory=set)  # objects made during the recording
    executes: Counter[str] = field(default_factory=Counter)
    binds: Counter[int] = field(default_factory=Counter)
    connects: Counter[int] = field(default_factory=Counter)
    unix_binds: Counter[str] = field(default_factory=Counter)
    socket_kinds: Counter[tuple[int, int]] = field(default_factory=Counter)  # (family, type)
    args: dict[str, set[tuple[int, ...]]] = field(default_factory=dict)
    args_overflow: set[str] = field(default_factory=set)
    # Why the workload needed root or a capability: need -> first example.
    needs: dict[str, str] = field(default_factory=dict)
    unresolved: Counter[str] = field(default_factory=Counter)
    events: int = 0
    _dirs: dict[tuple[int, int], str] = field(default_factory=dict)  # (pid, fd) -> directory
    _socks: dict[tuple[int, int], tuple[int, int, int]] = field(default_factory=dict)

    # -- one event ------------------------------------------------------------

    def event(self, ev: Event) -> None:
        self.events += 1
        self._keep_args(ev)
        handler = _HANDLERS.get(ev.syscall)
        if handler is not None:
            handler(self, ev)

    def _keep_args(self, ev: Event) -> None:
        indexes = ARG_INDEXES.get(ev.syscall)
        if indexes is None:
            return
        seen = self.args.setdefault(ev.syscall, set())
        if len(seen) >= MAX_ARG_TUPLES:
            self.args_overflow.add(ev.syscall)
            return
        seen.add(tuple(ev.args[i] for i in indexes))

    def need(self, what: str, why: str) -> None:
        self.needs.setdefault(what, why)

    # -- resolving names ------------------------------------------------------

    def resolve(self, ev: Event, name: str | None, dirfd_arg: int | None) -> str | None:
        if not name:
            return None
        if name.startswith("/"):
            return os.path.normpath(name)
        base: str | None
        dirfd = AT_FDCWD if dirfd_arg is None else _signed32(ev.args[dirfd_arg])
        if dirfd == AT_FDCWD:
            base = ev.cwd
        else:
            base = self._dirs.get((ev.pid, dirfd)) or self._dirs.get((ev.ppid, dirfd))
        if base is None:
            self.unresolved[f"{ev.syscall}: {name}"] += 1
            return None
        return os.path.normpath(os.path.join(base, name))

    def _remember_dir(self, ev: Event, path: str) -> None:
        if len(self._dirs) >= MAX_FDS:
            self._dirs.clear()  # forget, rather than grow without bound: resolved as unknown
        self._dirs[(ev.pid, ev.exit)] = path

    # -- the calls ------------------------------------------------------------

    def _open(self, ev: Event) -> None:
        if not ev.success:
            return  # nothing was opened or created: Landlock would not be asked either
        if ev.syscall == "creat":
            flags = O_CREAT | O_WRONLY | O_TRUNC
        elif ev.syscall == "openat2":
            flags = O_RDWR  # its flags are in a struct the record does not show
        else:
            flags = ev.args[OPEN_FLAGS_ARG[ev.syscall]]
        if flags & O_PATH:
            return  # an O_PATH descriptor reads and writes nothing
        item = _object(ev)
        if item is None:
            return
        path = self.resolve(ev, item.name, DIRFD_ARG.get(ev.syscall))
        if path is None:
            return
        is_dir = item.mode is not None and item.mode & S_IFMT == S_IFDIR
        if is_dir:
            self._remember_dir(ev, path)
        acc = flags & O_ACCMODE
        if item.nametype == "CREATE":
            self._changed(ev, path, _parent_item(ev))
            self.created.add(path)
        if acc in (O_WRONLY, O_RDWR) or flags & O_TRUNC:
            self.writes[path] += 1
            self._check(ev, item, 2, path, "write")
        if acc in (0, O_RDWR):
            self.reads[path] += 1
            if item.nametype != "CREATE":
                self._check(ev, item, 4, path, "read")

    def _exec(self, ev: Event) -> None:
        if not ev.success:
            return
        dirfd = DIRFD_ARG.get(ev.syscall)
        for item in ev.paths:
            if item.nametype != "NORMAL":
                continue
            path = self.resolve(ev, item.name, dirfd)
            if path is not None:
                self.executes[path] += 1
                self._check(ev, item, 1, path, "execute")
            dirfd = None  # an interpreter's name is absolute, or relative to the cwd

    def _namespace_change(self, ev: Event) -> None:
        """mkdir, mknod, unlink, rmdir, rename, link, symlink and their *at
        forms: the directories where names were made or removed."""
        if not ev.success:
            return
        pair = DIRFD_PAIR.get(ev.syscall)
        for item in ev.paths:
            if item.nametype not in ("CREATE", "DELETE"):
                continue
            if pair is not None:
                dirfd: int | None = pair[1] if item.nametype == "CREATE" else pair[0]
            else:
                dirfd = DIRFD_ARG.get(ev.syscall)
            path = self.resolve(ev, item.name, dirfd)
            if path is None:
                continue
            self._changed(ev, path, _parent_item(ev))
            if item.nametype == "CREATE":
                self.created.add(path)
        if ev.syscall in ("mknod", "mknodat"):
            mode = ev.args[1 if ev.syscall == "mknod" else 2]
            if mode & S_IFMT in (S_IFCHR, S_IFBLK):
                self.need("CAP_MKNOD", f"{ev.syscall} of a device node")

    def _changed(self, ev: Event, path: str, parent: PathItem | None) -> None:
        directory = os.path.dirname(path) or "/"
        self.changed_dirs[directory] += 1
        if parent is not None:
            self._check(ev, parent, 3, directory, "create or remove names in")

    def _truncate(self, ev: Event) -> None:
        item = _object(ev)
        if ev.success and item is not None:
            path = self.resolve(ev, item.name, None)
            if path is not None:
                self.writes[path] += 1
                self._check(ev, item, 2, path, "truncate")

    def _chmod(self, ev: Event) -> None:
        item = _object(ev)
        if ev.success and item is not None and item.ouid is not None and ev.fsuid != item.ouid:
            self.need("CAP_FOWNER", f"{ev.syscall} of a file owned by uid {item.ouid}")
        if ev.syscall == "fchmod" and ev.success and ev.fsuid == 0:
            self.need("CAP_FOWNER", "fchmod as root (the file's owner is not recorded)")

    def _socket(self, ev: Event) -> None:
        family, stype, proto = ev.args[0] & 0xFFFF, ev.args[1] & 0xF, ev.args[2] & 0xFFFF
        self.socket_kinds[(family, stype)] += 1
        if stype == SOCK_RAW and family in (AF_INET, AF_INET6) or family == AF_PACKET:
            self.need("CAP_NET_RAW", f"socket(family {family}, type {stype})")
        if ev.success and ev.syscall == "socket":
            if len(self._socks) >= MAX_FDS:
                self._socks.clear()
            self._socks[(ev.pid, ev.exit)] = (family, stype, proto)

    def _bind_connect(self, ev: Event) -> None:
        addr = ev.sockaddr
        if addr is None or len(addr) < 2:
            return
        family = int.from_bytes(addr[:2], "little")
        if family == AF_UNIX:
            self._unix_bind(ev, addr)
            return
        if family not in (AF_INET, AF_INET6) or len(addr) < 4:
            return
        fd = _signed32(ev.args[0])
        sock = self._socks.get((ev.pid, fd)) or self._socks.get((ev.ppid, fd))
        # Landlock restricts TCP only. A socket whose creation was not seen
        # (inherited from outside) is counted as TCP: the grant is kept
        # rather than a port the workload uses refused.
        if sock is not None and not (sock[1] == SOCK_STREAM and sock[2] in (0, IPPROTO_TCP)):
            return
        port = int.from_bytes(addr[2:4], "big")
        if ev.syscall == "bind":
            self.binds[port] += 1
            if 0 < port < unprivileged_port_start() and ev.fsuid == 0:
                self.need("CAP_NET_BIND_SERVICE", f"bind to port {port}")
        else:
            self.connects[port] += 1

    def _unix_bind(self, ev: Event, addr: bytes) -> None:
        raw = addr[2:].split(b"\0", 1)[0]
        if ev.syscall != "bind" or not raw or addr[2:3] == b"\0":
            return  # connect, or an abstract name: no file
        path = self.resolve(ev, raw.decode("utf-8", "backslashreplace"), None)
        if path is not None and ev.success:
            self.unix_binds[path] += 1
            self.changed_dirs[os.path.dirname(path) or "/"] += 1
            self.created.add(path)

    def _id_change(self, ev: Event) -> None:
        # The record is written at the call's exit, with the ids it set: a
        # successful change from root shows the new uid. Any successful
        # change counts (a process changing to its own ids is rare).
        if ev.success:
            cap = "CAP_SETUID" if "uid" in ev.syscall else "CAP_SETGID"
            args = ", ".join(str(_signed32(ev.args[i])) for i in ARG_INDEXES[ev.syscall])
            self.need(cap, f"{ev.syscall}({args})")

    # -- who may do it --------------------------------------------------------

    def _check(self, ev: Event, item: PathItem, want: int, path: str, what: str) -> None:
        """Would the caller have been allowed without privilege? If the
        object's owner or group bits were what let it through and the owner
        is root, the workload needed root; if no bits did, a capability.
        What the workload made itself it owns under any user: not counted."""
        if item.mode is None or item.ouid is None or item.ogid is None or path in self.created:
            return
        mode = item.mode
        if ev.fsuid == item.ouid:
            bits = mode >> 6 & 7
        elif ev.fsgid == item.ogid:
            bits = mode >> 3 & 7
        else:
            bits = mode & 7
        if bits & want != want:
            cap = "CAP_DAC_READ_SEARCH" if want == 4 else "CAP_DAC_OVERRIDE"
            self.need(cap, f"{what} {path} (uid {item.ouid}, gid {item.ogid}, mode "
                           f"{mode & 0o7777:04o}) as uid {ev.fsuid}")
        elif ev.fsuid == 0 and mode & 7 & want != want:
            self.need("root", f"{what} {path}: only its owner {item.ouid}/group {item.ogid} may "
                              f"(mode {mode & 0o7777:04o})")


def _object(ev: Event) -> PathItem | None:
    """The item a call acted on (not the parent directory it looked up)."""
    for item in ev.paths:
        if item.nametype != "PARENT":
            return item
    return None


def _parent_item(ev: Event) -> PathItem | None:
    return next((i for i in ev.paths if i.nametype == "PARENT"), None)


_HANDLERS: dict[str, Callable[[AccessLog, Event], None]] = {
    **{n: AccessLog._open for n in ("open", "openat", "openat2", "creat")},
    **{n: AccessLog._exec for n in ("execve", "execveat")},
    **{n: AccessLog._namespace_change for n in (
        "mkdir", "mkdirat", "mknod", "mknodat", "unlink", "unlinkat", "rmdir", "rename",
        "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat")},
    "truncate": AccessLog._truncate,
    **{n: AccessLog._chmod for n in ("chmod", "fchmod", "fchmodat", "fchmodat2")},
    **{n: AccessLog._socket for n in ("socket", "socketpair")},
    "bind": AccessLog._bind_connect, "connect": AccessLog._bind_connect,
    **{n: AccessLog._id_change for n in (
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
        "setfsgid")},
}


def unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


class EventAssembler:
    """Collects the records of the recording's audited syscalls by serial
    and passes each complete event to `log`.

    `counts(pid)` says whether a process belongs to the workload (seen in a
    seccomp record of the session before); `names(arch, nr)` names a
    syscall.
    """

    def __init__(self, key: str, log: AccessLog, counts: Callable[[int], bool],
                 names: Callable[[int, int], str | None]) -> None:
        self.key = key.encode()
        self.quoted_key = b'"' + self.key + b'"'
        self.log = log
        self.counts = counts
        self.names = names
        self.pending: dict[int, Event] = {}
        self.malformed = 0
        self.overflow = 0  # events dropped because too many were pending
        self.skipped = 0  # events of the runtime, before the workload's filter

    def feed(self, mtype: int, payload: bytes) -> None:
        try:
            _, serial, f = split_record(payload)
            if mtype == AUDIT_SYSCALL:
                self._syscall(serial, f)
                return
            ev = self.pending.get(serial)
            if ev is None:
                return
            if mtype == AUDIT_EOE:
                del self.pending[serial]
                self.log.event(ev)
            elif mtype == AUDIT_PATH:
                ev.paths.append(PathItem(
                    name=decode_untrusted(f[b"name"]) if b"name" in f else None,
                    nametype=f.get(b"nametype", b"UNKNOWN").decode("ascii", "replace"),
                    mode=_num(f.get(b"mode"), 8), ouid=_num(f.get(b"ouid")),
                    ogid=_num(f.get(b"ogid"))))
            elif mtype == AUDIT_CWD:
                ev.cwd = decode_untrusted(f[b"cwd"]) if b"cwd" in f else None
            elif mtype == AUDIT_SOCKADDR and b"saddr" in f:
                ev.sockaddr = bytes.fromhex(f[b"saddr"].decode("ascii"))
        except (MalformedRecord, KeyError, ValueError, UnicodeDecodeError):
            self.malformed += 1

    def _syscall(self, serial: int, f: dict[bytes, bytes]) -> None:
        if f.get(b"key") not in (self.quoted_key, self.key):
            return
        pid = int(f[b"pid"])
        if not self.counts(pid):
            self.skipped += 1
            return
        name = self.names(int(f[b"arch"], 16), int(f[b"syscall"]))
        if name is None:
            self.malformed += 1
            return
        if len(self.pending) >= MAX_PENDING:
            self.overflow += 1
            return
        self.pending[serial] = Event(
            serial=serial, syscall=name, success=f.get(b"success") == b"yes",
            exit=int(f.get(b"exit", b"0")),
            args=tuple(int(f.get(b"a%d" % i, b"0"), 16) for i in range(4)),  # type: ignore[arg-type]
            pid=pid, ppid=int(f.get(b"ppid", b"0")), fsuid=int(f.get(b"fsuid", b"0")),
            fsgid=int(f.get(b"fsgid", b"0")))


def _num(value: bytes | None, base: int = 10) -> int | None:
    if value is None:
        return None
    try:
        return int(value, base)
    except ValueError:
        return None
