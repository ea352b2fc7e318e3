"""Open a path inside a directory tree as if that tree were `/`.

An image's root filesystem belongs to the image's author: any component of
a path in it may be a symlink, absolute (`/var/cache/app -> /etc`) or
climbing out with `..`. Resolved by the host, such a path leaves the tree
and names a host file. `open_in_root(root_fd, path)` resolves the way the
kernel resolves paths for a process chrooted at the tree, which is how
runc resolves mount destinations (CVE-2021-30465): absolute symlinks
restart at the tree's top, `..` never climbs above it, and /proc-style
"magic" links are refused outright.

It returns an O_PATH descriptor: the file itself, not a name for it. Use
that descriptor (fstat, `/proc/self/fd/N` as a mount source, openat with
it as dir_fd), never the path again: a path checked and then used is a
race the image (or a container sharing the tree) can win by swapping a
component in between.

The kernel does it (openat2 with RESOLVE_IN_ROOT, Linux >= 5.6); where
openat2 is missing (ENOSYS, or a seccomp profile that refuses it) the
same resolution is done one component at a time with O_NOFOLLOW, reading
each symlink and resolving its text inside the tree. Stdlib only (ctypes,
loaded on first use): the shim's start path may import it.

Used by the OCI shim for a policy's writable paths (enforcer/shim/
staging.py); meant for `enforcer run`'s new-rootfs mounts too.
"""

from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False  # `typing` costs ms on the start path; only checkers need it
if TYPE_CHECKING:
    from typing import Any

# openat2(2): include/uapi/linux/openat2.h. 437 on every architecture that
# uses the common syscall table (x86_64, aarch64, riscv64, s390x, ppc64...).
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
MAX_SYMLINKS = 40  # the kernel's limit too (MAXSYMLINKS)
EAGAIN_RETRIES = 16  # openat2 says EAGAIN when a rename raced a `..` lookup

_openat2: "list[Any]" = []  # [callable] once loaded; [None] when the kernel has none


def _load_openat2() -> "Any":
    if not _openat2:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)

        class OpenHow(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                        ("resolve", ctypes.c_uint64)]

        syscall = libc.syscall
        syscall.restype = ctypes.c_long

        def openat2(dirfd: int, path: bytes, flags: int, resolve: int) -> int:
            how = OpenHow(flags, 0, resolve)
            fd = syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(path),
                         ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
            if fd < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            return int(fd)

        _openat2.append(openat2)
    return _openat2[0]


def open_in_root(root_fd: int, path: str, directory: bool = False) -> int:
    """An O_PATH|O_CLOEXEC descriptor of `path` resolved inside `root_fd`.

    `path` may be absolute or relative: either way it starts at the top of
    the tree. With `directory`, anything but a directory is ENOTDIR.
    Raises OSError (ENOENT, ENOTDIR, ELOOP, ...) with `path` as filename.
    """
    flags = os.O_PATH | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0)
    openat2 = _load_openat2()
    if openat2 is not None:
        for _ in range(EAGAIN_RETRIES):
            try:
                return int(openat2(root_fd, os.fsencode(path or "."), flags,
                                   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS))
            except OSError as e:
                if e.errno in (errno.ENOSYS, errno.EPERM):
                    # No openat2 here (or a filter refusing it): walk instead.
                    # The walk is as safe, only slower, so falling back on an
                    # unexpected EPERM costs nothing but time.
                    _openat2[0] = None
                    break
                if e.errno != errno.EAGAIN:
                    raise OSError(e.errno, e.strerror, path) from None
        else:
            raise OSError(errno.EAGAIN, "resolution kept racing with renames", path)
    return _walk(root_fd, path, directory)


def _components(path: str) -> list[str]:
    """Path components, last first (a stack to pop from)."""
    return [c for c in reversed(path.split("/")) if c and c != "."]


def _walk(root_fd: int, path: str, directory: bool) -> int:
    """openat2's RESOLVE_IN_ROOT done by hand, one component at a time.

    Every component is opened with O_NOFOLLOW relative to the descriptor of
    its parent, so nothing is looked up by a path the tree could change
    under us; a symlink's text is pushed back onto the components to
    resolve (an absolute one from the top of the tree) and `..` pops to the
    parent's descriptor, never above the top.
    """
    top = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    stack = [top]  # descriptors from the top of the tree to the current directory
    todo = _components(path)
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                try:
                    target = os.readlink("", dir_fd=fd)  # readlinkat(fd, ""): this link
                finally:
                    os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo.extend(_components(target))
                continue
            if todo and not stat.S_ISDIR(mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            stack.append(fd)
        if directory and not stat.S_ISDIR(os.fstat(stack[-1]).st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        result = stack.pop() if len(stack) > 1 else os.dup(top)
        return result
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    finally:
        for fd in stack:
            os.close(fd)


def path_in_root(root_fd: int, fd: int) -> str:
    """Where `fd` (from open_in_root) sits inside the tree, as an absolute
    path: for messages only, never to open anything by."""
    root = os.readlink(f"/proc/self/fd/{root_fd}")
    here = os.readlink(f"/proc/self/fd/{fd}")
    if here == root:
        return "/"
    if here.startswith(root.rstrip("/") + "/"):
        return here[len(root.rstrip("/")):]
    return here
