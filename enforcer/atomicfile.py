"""Replace a file atomically: readers see the old content or the new, never half.

Used for the workload registry (run and shim) and the Plan cache, and by
every command that writes a result to a path the user names (`-o PATH`,
through `write_result`). Stdlib only and without `tempfile` (4 ms to
import): this is on the start path.
"""

from __future__ import annotations

import os
import stat


def write_atomic(path: str, data: bytes, *, mode: int = 0o644, fsync: bool = False,
                 tag: str = "") -> None:
    """Write `data` to a temp file beside `path`, then rename it over `path`.

    The temp name is unique without `tempfile`: `tag` (e.g. a workload id)
    plus our pid separate concurrent writers; O_EXCL refuses a leftover or a
    planted file, O_NOFOLLOW a planted symlink. `fsync` for state that must
    survive a crash (the Plan cache); runtime state under /run is stale after
    a reboot whatever it holds, so it skips the flush.
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".tmp-{tag}{'.' if tag else ''}{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:
        # Left by a writer that died with our pid; the directory is ours.
        os.unlink(tmp)
        fd = os.open(tmp, flags, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # whatever the umask
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_private(path: str, limit: int) -> bytes | None:
    """The contents of a cache file only this user could have written:
    owned by us, not group/other-writable, not a symlink, at most `limit`
    bytes. None when it is missing or fails any of that (then recompute:
    a cache is never a reason to trust what someone else put there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > limit:
            return None
        return os.read(fd, limit + 1)[:limit]
    finally:
        os.close(fd)


class OutputRefused(OSError):
    """`write_result` will not write to this kind of file (a directory, a
    socket, a block device); the message says what it is."""


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return word
    return "not a regular file"


def write_result(path: str, data: bytes, *, mode: int = 0o644) -> None:
    """Write a command's result to `path`, the way the user means it,
    without destroying what is there.

    * nothing there, or a regular file: replaced atomically (write_atomic);
    * a character device or a FIFO (`/dev/null`, `/dev/stdout` on a
      terminal, a named pipe), directly or through a symlink: written in
      place, as a shell's `>` does. Renaming a temporary file over it would
      replace the device node with a regular file -- as root, `-o /dev/null`
      used to break /dev/null for the whole host;
    * a symlink to a regular file: written in place through the link (the
      link stays a link);
    * anything else (a directory, a socket, a block device): refused with
      OutputRefused; never written, never replaced.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        write_atomic(path, data, mode=mode, tag="out")
        return
    if stat.S_ISREG(st.st_mode):
        write_atomic(path, data, mode=mode, tag="out")
        return
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise OutputRefused(f"{path} is a dangling symlink") from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise OutputRefused(f"{path} is {_kind(st.st_mode)}")
    # No O_CREAT: what we checked is what must be there (a file swapped in
    # meanwhile makes the open fail or is checked again below). O_TRUNC
    # only for a regular file behind a symlink; devices and FIFOs ignore it.
    flags = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags | (os.O_TRUNC if stat.S_ISREG(st.st_mode) else 0))
    try:
        now = os.fstat(fd)
        if stat.S_IFMT(now.st_mode) != stat.S_IFMT(st.st_mode):
            raise OutputRefused(f"{path} changed while it was opened (now {_kind(now.st_mode)})")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
