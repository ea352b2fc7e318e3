"""A policy's writable paths, handed to runc as bind sources it cannot misread.

Under a read-only root, each writable path of the policy becomes a
read-write bind mount of the same directory of the container's rootfs. The
*destination* of that mount runc resolves safely inside the rootfs (it
does so for every mount since CVE-2021-30465). The *source* it does not:
runc takes a bind source to be a host path, chosen by the runtime, and
lets the host kernel resolve it. A source of `bundle/rootfs/var/cache/app`
is a path through the image's files, so an image shipping
`/var/cache/app -> /etc` (or a link climbing out with `..`) had the host's
/etc bound writable into the container.

So the shim never gives runc a path through the rootfs. For each writable
path it

1. opens the directory inside the rootfs with enforcer.inroot (openat2
   RESOLVE_IN_ROOT: symlinks and `..` resolve as they would for a process
   chrooted there, and cannot leave it), and refuses anything that is not a
   directory, or is the container's root itself;
2. bind-mounts *that descriptor* (`/proc/self/fd/N` as the source: the
   kernel takes the directory the descriptor holds, it does not resolve a
   path again) onto a fresh directory of its own, `<runtime_dir>/mounts/
   <container>.<pid>.<nonce>/<n>`, which only root can reach;
3. gives runc that staging directory as the bind source.

Why this has no race: between the check and runc's mount nothing is
looked up by a path the image controls. The descriptor pins the directory
that was checked; the staging mount is made from the descriptor; runc
reads the staging path, whose every component belongs to root and lies
outside the rootfs. Swapping `/var/cache/app` for a symlink after step 1
changes nothing that runc will look at. (Alternatives rejected: giving runc
`/proc/<pid>/fd/N` ties the mount to the lifetime and fd numbers of
whichever process holds the descriptor -- the shim server's worker is gone
by the time runc runs; `--preserve-fds` would leak the descriptor into the
workload.)

The staging mounts are needed only until runc has made the container's
mounts: `create` and `run -d` release them as soon as runc returns; a
foreground `run` (runc keeps the shim's pid) releases them with its
registry record when the run ends (record.remove_record_if_same). Staging
directories whose creating process is gone are swept the next time any
container stages, so a killed shim leaves nothing behind for long.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False  # `typing` costs ms on the start path; only checkers need it
if TYPE_CHECKING:
    from typing import Any, Callable

from enforcer.shim.errors import ShimError

MS_BIND = 4096
MNT_DETACH = 2
STAGING_DIR = "mounts"

_libc: "list[Any]" = []


def _c() -> "Any":
    if not _libc:
        import ctypes

        _libc.append(ctypes.CDLL(None, use_errno=True))
    return _libc[0]


def _mount_bind(source: str, target: str) -> None:
    import ctypes

    if _c().mount(source.encode(), target.encode(), None, ctypes.c_ulong(MS_BIND), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _umount(target: str) -> None:
    import ctypes

    if _c().umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            raise OSError(err, os.strerror(err), target)


class Stager:
    """The staging mounts of one container start (see the module doc).

    `owner` is the pid whose life the staging belongs to (the process that
    becomes runc): the sweep of other starts' leftovers goes by it.
    `before_mount` runs once, before the first staging mount: enforcer-shimd
    hands the request back to the front end there (its unit grants no
    CAP_SYS_ADMIN: the mounts are made with the privileges of the runtime
    that asked, in the Python shim run in the front end's place).
    """

    def __init__(self, runtime_root: str, container_id: str, owner: int,
                 before_mount: "Callable[[], None] | None" = None) -> None:
        if not container_id or "/" in container_id or container_id.startswith("."):
            raise ShimError(f"container id {container_id!r} is not a plain name")
        self.base = os.path.join(runtime_root, STAGING_DIR)
        self.container_id = container_id
        self.owner = owner
        self.dir: str | None = None
        self.mounts: list[str] = []
        self._before_mount = before_mount

    def _ensure_dir(self) -> str:
        if self.dir is None:
            if self._before_mount is not None:
                self._before_mount()
            os.makedirs(self.base, mode=0o700, exist_ok=True)
            sweep(self.base)
            name = f"{self.container_id}.{self.owner}.{os.urandom(4).hex()}"
            self.dir = os.path.join(self.base, name)
            os.mkdir(self.dir, 0o700)
        return self.dir

    def stage(self, rootfs: str, path: str) -> str:
        """The staging source for writable `path` of the container rooted at
        `rootfs`; ShimError when it is not a directory inside that root."""
        from enforcer.inroot import open_in_root, path_in_root

        try:
            root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ShimError(f"container root {rootfs}: {e.strerror}") from None
        try:
            try:
                fd = open_in_root(root_fd, path, directory=True)
            except OSError as e:
                why = "not a directory in the container's root" if e.errno in (
                    errno.ENOTDIR, errno.ENOENT) else e.strerror
                raise ShimError(f"policy writable path {path}: {why} ({e.strerror}); symlinks "
                                "and '..' are resolved inside the container's root") from None
            try:
                if path_in_root(root_fd, fd) == "/":
                    raise ShimError(f"policy writable path {path}: resolves to the container's "
                                    "root directory; refusing to make the whole root writable")
                target = os.path.join(self._ensure_dir(), str(len(self.mounts)))
                os.mkdir(target, 0o700)
                try:
                    _mount_bind(f"/proc/self/fd/{fd}", target)
                except OSError as e:
                    os.rmdir(target)
                    raise ShimError(f"policy writable path {path}: cannot stage its bind "
                                    f"mount at {target}: {e.strerror}") from None
                self.mounts.append(target)
                return target
            finally:
                os.close(fd)
        finally:
            os.close(root_fd)

    def release(self) -> None:
        if self.dir is not None:
            release_dir(self.dir)
            self.dir, self.mounts = None, []


def release_dir(path: str) -> None:
    """Unmount and remove one staging directory (best effort, never raises:
    a leftover is swept later and must not fail the container operation)."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        target = os.path.join(path, name)
        try:
            _umount(target)
            os.rmdir(target)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def sweep(base: str) -> None:
    """Release staging directories whose owning process no longer exists."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name.rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
            release_dir(os.path.join(base, name))
