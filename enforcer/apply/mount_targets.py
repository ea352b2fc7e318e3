"""Where a mount operation lands: its target, opened safely, and made when
the mount needs a mount point that is not there.

A `filesystem.rootfs` belongs to whoever built the tree (an image author):
any component of a target in it may be a symlink, absolute or with `..`.
Resolved by the host, `tmp -> /etc` would put the policy's tmpfs on the
host's /etc and `dev -> /some/host/dir` would create device files there.
So every target below the rootfs is opened with enforcer.inroot (openat2
RESOLVE_IN_ROOT): the way the kernel resolves it for a process whose root
is the rootfs, which is how the workload will see it (runc resolves mount
destinations the same way, CVE-2021-30465). The mount then goes onto that
descriptor (`/proc/self/fd/N`), never onto a path that could be swapped in
between.

Mount points are made only where that touches nothing of the host's:
inside the rootfs (as runc does), or inside a tmpfs the Plan mounted
earlier (a bind target in the policy's /tmp, as bwrap does) -- never
inside a bind's source, which is the host's. Each missing
component is made with mkdirat() in the directory resolved before it; a
component that exists but leads nowhere inside the root (a dangling
symlink) fails closed: nothing is created through it.

Host targets (no rootfs) are resolved the same way, from the host's /:
that changes nothing for the host's own paths, and the mount still goes
onto the very file that was checked.
"""

from __future__ import annotations

import errno
import os
import stat

from enforcer.errors import ApplyError
from enforcer.inroot import open_in_root
from enforcer.plan import MountOp

# The operations that mount something new and may make their mount point.
CREATES_MOUNT_POINT = frozenset({"tmpfs", "bind", "devices", "proc", "sysfs"})


def fd_path(fd: int) -> str:
    """A path the kernel resolves to exactly the file behind `fd`."""
    return f"/proc/self/fd/{fd}"


def _below(path: str, top: str) -> bool:
    return top == "/" or path.startswith(top.rstrip("/") + "/")


class Targets:
    """Resolves the targets of one Plan's mount operations."""

    def __init__(self, ops: tuple[MountOp, ...]) -> None:
        roots = [op.path for op in ops if op.kind == "pivot_root"]
        self.root: str | None = roots[0] if roots else None
        # tmpfs (and private /dev) mount points mounted so far: a mount
        # point may be made below them.
        self.scratch: list[str] = []
        # bind targets mounted so far: below them is the host's source.
        self.binds: list[str] = []

    def in_root(self, path: str) -> bool:
        return self.root is not None and _below(path, self.root)

    def display(self, op: MountOp) -> str:
        if self.root is not None and self.in_root(op.path):
            return f"{op.kind} {op.path[len(self.root.rstrip('/')):]} in the rootfs {self.root}"
        return f"{op.kind} {op.path}"

    def _split(self, path: str) -> tuple[str, str]:
        """(the directory to resolve in, the path inside it)."""
        if self.root is not None and self.in_root(path):
            return self.root, path[len(self.root.rstrip("/")):]
        return "/", path

    def may_create(self, path: str) -> bool:
        # The innermost mount above `path` decides.
        scratch = max((s for s in self.scratch if _below(path, s)), key=len, default="")
        bind = max((b for b in self.binds if _below(path, b)), key=len, default="")
        if bind and len(bind) > len(scratch):
            return False
        return bool(scratch) or self.in_root(path)

    def open(self, op: MountOp, create: str | None = None) -> int | None:
        """An O_PATH descriptor of op's target, or None when it is missing
        and optional. `create` ("dir" or "file"): make a missing mount point
        where that is allowed (see the module doc). Raises ApplyError."""
        top, rel = self._split(op.path)
        try:
            root_fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ApplyError("mounts", self.display(op), e.errno,
                             "the rootfs cannot be opened") from None
        try:
            try:
                return open_in_root(root_fd, rel)
            except FileNotFoundError:
                pass
            if create is None or not self.may_create(op.path):
                if op.optional:
                    return None
                detail = "path does not exist"
                if create is not None:
                    detail += (" (enforcer makes mount points only inside a rootfs or a tmpfs "
                               "of the policy, never in a bind's host source)")
                raise ApplyError("mounts", self.display(op), errno.ENOENT, detail)
            return _make(root_fd, rel, create, self.display(op))
        except ApplyError:
            raise  # its own message (an ApplyError is an OSError too)
        except OSError as e:
            raise ApplyError("mounts", self.display(op), e.errno) from None
        finally:
            os.close(root_fd)


def is_dir(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _make(root_fd: int, rel: str, kind: str, display: str) -> int:
    """Make `rel` (and missing directories above it) inside root_fd's tree,
    one component at a time, each in the directory resolved before it."""
    parts = [p for p in rel.split("/") if p and p != "."]
    parent = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            prefix = "/" + "/".join(parts[:i + 1])
            try:
                fd = open_in_root(root_fd, prefix, directory=not last)
            except FileNotFoundError:
                try:
                    if last and kind == "file":
                        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                         | os.O_CLOEXEC, 0o644, dir_fd=parent))
                    else:
                        os.mkdir(name, 0o755, dir_fd=parent)
                except FileExistsError:
                    # There, but open_in_root found nothing: a symlink that
                    # leads nowhere inside the root (or one swapped in just
                    # now). Making its target would follow it: refuse.
                    raise ApplyError("mounts", display, errno.ENOENT,
                                     "the rootfs's symlink leads nowhere inside it; enforcer "
                                     "creates no mount point through it") from None
                fd = open_in_root(root_fd, prefix, directory=not last)
            os.close(parent)
            parent = fd
        result, parent = parent, -1
        return result
    finally:
        if parent >= 0:
            os.close(parent)
