"""Replace a file atomically: readers see the old content or the new, never half.

Used for the workload registry (run and shim) and the Plan cache. Stdlib
only and without `tempfile` (4 ms to import): this is on the start path.
"""

from __future__ import annotations

import os


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
