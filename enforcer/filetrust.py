"""Opening a file a privileged process will obey: policies and Plans.

A policy decides what a workload may do, so whoever can write the policy
file -- or rename another file over it -- decides too. A privileged loader
(root, or any process holding capabilities) therefore refuses a file that
anyone but root or itself could have written, as sudo does for sudoers and
sshd for authorized_keys:

* the file is a regular file owned by root or the loading user, and
  writable by neither its group nor others;
* every directory on its path is owned by root or the loading user, and
  is not writable by group or others -- unless it has the sticky bit
  (/tmp), where others cannot rename or remove an entry they do not own,
  and the next component is checked for ownership anyway.

The check is made on what is actually opened, not on the path: symlinks
are resolved once (resolved_path), then the resolved path is walked one
component at a time from `/` with O_PATH|O_NOFOLLOW, each directory
checked through its file descriptor, and the file is opened relative to
the last checked directory with O_NOFOLLOW and checked with fstat. A
component swapped for a symlink after the resolution makes the open fail
(ELOOP/ENOTDIR) rather than lead elsewhere, so the bytes read are the
bytes of the file that passed the checks (no time-of-check/time-of-use
gap). An unprivileged loader gets the same walk without the ownership
rules: it has no more privilege than whoever wrote the file.

Standard library only: the start path (`enforcer run`, the shim's Plan
cache) uses it.
"""

from __future__ import annotations

import functools
import os
import stat


class UntrustedFile(Exception):
    """A file (or a directory above it) that someone else could have written.

    The message names the path, what is wrong, and what is allowed.
    """


RULE = ("files read by a privileged enforcer must be owned by root (or the user running "
        "enforcer) and writable by no one else, in directories that follow the same rule")


@functools.lru_cache(maxsize=1)
def loader_is_privileged() -> bool:
    """True for root and for any process holding an effective capability.

    If /proc cannot tell, assume privileged: the checks then apply (fail closed).
    """
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16) != 0
    except (OSError, ValueError, IndexError):
        pass
    return True


def trusted_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _owner_problem(st: os.stat_result, owners: frozenset[int]) -> str | None:
    if st.st_uid not in owners:
        return f"owned by uid {st.st_uid}"
    return None


def directory_problem(st: os.stat_result, owners: frozenset[int]) -> str | None:
    """Why a directory on a trusted path is not trustworthy (None if it is)."""
    problem = _owner_problem(st, owners)
    if problem:
        return problem
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        who = "others" if st.st_mode & 0o002 else "its group"
        return f"writable by {who} (mode {_mode(st)}) without the sticky bit"
    return None


def file_problem(st: os.stat_result, owners: frozenset[int]) -> str | None:
    """Why an opened file is not trustworthy (None if it is)."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    problem = _owner_problem(st, owners)
    if problem:
        return problem
    if st.st_mode & 0o022:
        who = "others" if st.st_mode & 0o002 else "its group"
        return f"writable by {who} (mode {_mode(st)})"
    return None


def _refuse(what: str, path: str, where: str, problem: str) -> UntrustedFile:
    about = path if where == path else f"{path}: its directory {where}"
    fix = f"chmod go-w {where}" if "writable" in problem else f"chown root {where}"
    return UntrustedFile(f"{what} {about} is {problem}; refusing to trust it ({RULE}; "
                         f"e.g. {fix})")


_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC


def resolved_path(path: str) -> str:
    """`path` with every symlink resolved (like os.path.realpath).

    Asked of the kernel -- open with O_PATH, read /proc/self/fd/N back: two
    system calls instead of an lstat per component (this runs on every
    start). Falls back to os.path.realpath without /proc.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)  # missing: let the open below report it
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = ""
    finally:
        os.close(fd)
    return real if real.startswith("/") and not real.endswith(" (deleted)") else os.path.realpath(path)


def open_trusted(path: str, what: str = "policy file", *, privileged: bool | None = None) -> int:
    """An O_RDONLY descriptor of the regular file `path`, after the checks above.

    Raises UntrustedFile when a privileged loader must not trust it, and
    OSError (FileNotFoundError, IsADirectoryError, ...) when it cannot be
    opened at all. `what` names the file in messages ("policy file", "Plan").
    """
    real = resolved_path(path)
    if privileged is None:
        privileged = loader_is_privileged()
    if not privileged:
        return _checked_file(os.open(real, _FILE_FLAGS & ~os.O_NOFOLLOW), what, real, None)
    owners = trusted_owners()
    parts = real.split("/")[1:]
    if not parts or not parts[-1]:
        raise IsADirectoryError(21, "is a directory", path)
    dir_fd = os.open("/", _DIR_FLAGS)
    try:
        problem = directory_problem(os.fstat(dir_fd), owners)
        for depth, name in enumerate(parts[:-1]):
            if problem:
                raise _refuse(what, real, "/" + "/".join(parts[:depth]), problem)
            next_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
            problem = directory_problem(os.fstat(dir_fd), owners)
        if problem:
            raise _refuse(what, real, "/" + "/".join(parts[:-1]), problem)
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return _checked_file(fd, what, real, owners)


def _checked_file(fd: int, what: str, real: str, owners: frozenset[int] | None) -> int:
    # O_NONBLOCK only kept a FIFO from blocking the open; a regular file
    # (the only kind accepted) reads the same either way.
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "is a directory", real)
        problem = file_problem(st, owners) if owners is not None else (
            None if stat.S_ISREG(st.st_mode) else "not a regular file")
        if problem:
            raise _refuse(what, real, real, problem)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_trusted(path: str, what: str = "policy file", *, limit: int | None = None,
                 privileged: bool | None = None) -> bytes:
    """The bytes of `path`, opened with open_trusted(). With `limit`, a file
    larger than that raises ValueError ("file is N bytes") before anything
    is read into memory."""
    fd = open_trusted(path, what, privileged=privileged)
    try:
        size = os.fstat(fd).st_size
        if limit is not None and size > limit:
            raise ValueError(f"file is {size} bytes")
        # Never more than limit + 1 bytes, even if the file grows meanwhile.
        budget = limit + 1 if limit is not None else None
        chunks: list[bytes] = []
        total = 0
        while budget is None or total < budget:
            chunk = os.read(fd, max(size + 1, 65536) if budget is None else budget - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
