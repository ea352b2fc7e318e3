"""Dynamic users: a uid/gid of its own for each workload, like systemd's DynamicUser=.

Two workloads that run as the same uid can read each other's
/proc/PID/environ and /proc/PID/mem and signal each other: the kernel's
ptrace and kill checks let a uid reach its own processes. A policy with
`user: {dynamic: true}` therefore gets a uid (and the gid of the same
number) that no other workload on the host has while it runs. The
supervisor picks it after the Plan is loaded, holds it for the workload's
whole life and gives it back after the workload's cgroup is gone.

The range. systemd allocates its dynamic users from 61184-65519 and Debian
reserves 60000-64999 for its own static system users, so enforcer stays
out of both: by default it uses 65536-99999, above the 16-bit ids (which
`adduser` never hands out) and below 100000, where shadow's `useradd`
starts the subordinate id ranges (/etc/subuid) that rootless containers
map. ENFORCER_DYNAMIC_UIDS=FIRST-LAST changes it (root sets it; it is
read by the supervisor only). An id that has an entry in /etc/passwd or
/etc/group is skipped.

Allocation is race-free across concurrent `enforcer run`s: one lock file
per id in LOCK_DIR, taken with flock(LOCK_EX|LOCK_NB) on an fd the
supervisor keeps open. The kernel drops the lock when its holder dies,
however it dies, so a dead holder never keeps an id. The file names its
holder's workload and cgroups; an id whose file is unlocked is free once
none of those cgroups holds a process any more (a child a workload left
behind would otherwise share the id with the next one). So giving an id
back is only closing the fd -- after the supervisor removed the cgroup --
and a supervisor killed with SIGKILL gives it back the same way; the files
stay (one per id used, a few dozen bytes each).

Stdlib only, start path: no `re`, `json` or `random`.
"""

from __future__ import annotations

import errno
import fcntl
import os

from enforcer.errors import ApplyError

# Host-wide, whatever ENFORCER_RUNTIME_DIR says: uids are host-wide, and two
# enforcer installations with different runtime directories must not hand
# out the same one.
LOCK_DIR = "/run/enforcer/uids"
DEFAULT_RANGE = (65536, 99999)
RANGE_ENV = "ENFORCER_DYNAMIC_UIDS"


class DynamicId:
    """A uid/gid held by this process until `release()`."""

    def __init__(self, uid: int, fd: int, path: str) -> None:
        self.uid = uid
        self.fd = fd
        self.path = path

    def release(self) -> None:
        """Give the id back (only after the workload's cgroup is gone: see
        the module doc): closing the fd drops the lock."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def id_range(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(first, last) from ENFORCER_DYNAMIC_UIDS, or the default. Refuses a
    range that reaches root, the system ids, nobody or the 32-bit top."""
    text = (environ if environ is not None else os.environ).get(RANGE_ENV)
    if not text:
        return DEFAULT_RANGE
    first_s, sep, last_s = text.partition("-")
    if not (sep and first_s.isdigit() and last_s.isdigit()):
        raise ApplyError("user", f"{RANGE_ENV}={text}", errno.EINVAL,
                         "write FIRST-LAST, e.g. 65536-99999")
    first, last = int(first_s), int(last_s)
    if not 1000 <= first <= last < 0x7FFFFFFF or first <= 65535 and last >= 65534:
        raise ApplyError("user", f"{RANGE_ENV}={text}", errno.EINVAL,
                         "the range must lie within 1000-2147483646 and leave out 65534 "
                         "(nobody) and 65535 (the 16-bit -1)")
    return first, last


def _open_lock_dir(directory: str) -> int:
    """The lock directory, made if missing; refused unless it is a real
    directory of root's that nobody else may write (it decides who gets
    which uid)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(directory, flags)
        except FileNotFoundError:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(directory, flags)
    except OSError as e:
        raise ApplyError("user", directory, e.errno, "dynamic user lock directory") from None
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        os.close(fd)
        raise ApplyError("user", directory, errno.EPERM,
                         "the dynamic user lock directory must be root's and not writable "
                         "by group or others")
    return fd


def _ids_in_files(paths: tuple[str, ...]) -> set[int]:
    """Ids that /etc/passwd and /etc/group give to someone."""
    taken: set[int] = set()
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.split(":")
                    if len(fields) > 2 and fields[2].isdigit():
                        taken.add(int(fields[2]))
        except OSError:
            pass
    return taken


def _leftovers(content: bytes) -> bool:
    """Whether a stale lock's workload still has processes in its cgroups
    (the lines after the first name cgroup.procs files)."""
    for line in content.decode(errors="replace").splitlines()[1:]:
        if not line.endswith("/cgroup.procs"):
            continue
        try:
            with open(line) as f:
                if f.read().strip():
                    return True
        except OSError:
            pass  # gone: nothing left there
    return False


def _try_take(dir_fd: int, uid: int, label: bytes) -> int | None:
    """The locked fd of `uid`'s lock file, or None if the id is in use."""
    fd = os.open(str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None  # a live holder
    last = os.pread(fd, 4096, 0)
    if last and _leftovers(last):
        os.close(fd)  # the last holder's workload left processes that still run
        return None
    os.pwrite(fd, label, 0)
    os.ftruncate(fd, len(label))
    return fd


def allocate(workload_id: str, cgroup_procs: list[str], *, directory: str = LOCK_DIR,
             environ: dict[str, str] | None = None,
             passwd_files: tuple[str, ...] = ("/etc/passwd", "/etc/group")) -> DynamicId:
    """Take a free id for `workload_id` (whose cgroups' cgroup.procs files
    are listed, for a later stale check). Raises ApplyError when the range
    is used up."""
    first, last = id_range(environ)
    size = last - first + 1
    dir_fd = _open_lock_dir(directory)
    try:
        taken = _ids_in_files(passwd_files)
        label = "\n".join([workload_id, *cgroup_procs]).encode() + b"\n"
        # Start at a random place: successive workloads get different ids,
        # so files one left in a writable path are not at once the next
        # one's (see docs/run.md), and concurrent starts rarely collide.
        start = int.from_bytes(os.urandom(4), "little") % size
        for i in range(size):
            uid = first + (start + i) % size
            if uid in taken:
                continue
            fd = _try_take(dir_fd, uid, label)
            if fd is not None:
                return DynamicId(uid, fd, os.path.join(directory, str(uid)))
    except OSError as e:
        raise ApplyError("user", e.filename or directory, e.errno,
                         "allocating a dynamic user") from None
    finally:
        os.close(dir_fd)
    raise ApplyError("user", f"dynamic uids {first}-{last}", errno.EAGAIN,
                     "every id of the range is in use")
