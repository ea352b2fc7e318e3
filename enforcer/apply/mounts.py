"""The Plan's mount operations, applied in order inside a private mount namespace.

Every operation here changes only the mount namespace the child created in
the previous step (sequence.enter_namespaces always creates one when the
Plan has mounts), so nothing is visible on the host.
"""

from __future__ import annotations

import errno
import os

from enforcer.apply import _sys
from enforcer.errors import ApplyError
from enforcer.plan import MountOp

_TMPFS_FLAGS = {
    "ro": _sys.MS_RDONLY, "nosuid": _sys.MS_NOSUID, "nodev": _sys.MS_NODEV,
    "noexec": _sys.MS_NOEXEC, "noatime": _sys.MS_NOATIME, "nodiratime": _sys.MS_NODIRATIME,
    "relatime": _sys.MS_RELATIME, "strictatime": _sys.MS_STRICTATIME,
}
# Per-mount flags that must be kept on a bind remount: in a user namespace
# the kernel refuses a remount that would clear a flag the owner locked.
_KEEP_FLAGS = {"nosuid": _sys.MS_NOSUID, "nodev": _sys.MS_NODEV, "noexec": _sys.MS_NOEXEC,
               "noatime": _sys.MS_NOATIME, "nodiratime": _sys.MS_NODIRATIME,
               "relatime": _sys.MS_RELATIME}


def _mountinfo() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) for every mount in this namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            out.append((point, set(fields[5].split(","))))
    return out


def _under(point: str, path: str) -> bool:
    return path == "/" or point == path or point.startswith(path.rstrip("/") + "/")


def _remount_walk(path: str, readonly: bool, recursive: bool) -> None:
    """Fallback for kernels without mount_setattr (before 5.12): remount each
    mount under `path` one by one, keeping its locked flags."""
    for point, opts in sorted(_mountinfo(), key=lambda m: len(m[0])):
        if point != path and not (recursive and _under(point, path)):
            continue
        flags = _sys.MS_BIND | _sys.MS_REMOUNT
        for name, bit in _KEEP_FLAGS.items():
            if name in opts:
                flags |= bit
        if readonly:
            flags |= _sys.MS_RDONLY
        try:
            _sys.mount(None, point, None, flags)
        except ApplyError as e:
            # A mount hidden under another one cannot be reached by path;
            # whatever covers it is handled in its own turn.
            if e.errno not in (errno.ENOENT, errno.EACCES):
                raise


def set_readonly(path: str, readonly: bool, recursive: bool) -> None:
    flags = _sys.AT_RECURSIVE if recursive else 0
    try:
        if readonly:
            _sys.mount_setattr(path, flags, _sys.MOUNT_ATTR_RDONLY, 0)
        else:
            _sys.mount_setattr(path, flags, 0, _sys.MOUNT_ATTR_RDONLY)
    except ApplyError as e:
        if e.errno != errno.ENOSYS:
            raise
        _remount_walk(path, readonly, recursive)


def _exists(op: MountOp) -> bool:
    if os.path.lexists(op.path):
        return True
    if op.optional:
        return False
    raise ApplyError("mounts", f"{op.kind} {op.path}", errno.ENOENT, "path does not exist")


def make_private(op: MountOp) -> None:
    # First, so that nothing we mount propagates back to the host (and
    # nothing the host mounts later appears under our read-only view).
    _sys.mount(None, op.path, None, _sys.MS_REC | _sys.MS_PRIVATE)


def bind(op: MountOp) -> None:
    if op.source is None:
        raise ApplyError("mounts", f"bind {op.path}", errno.EINVAL, "bind without a source")
    if not os.path.lexists(op.source):
        if op.optional:
            return
        raise ApplyError("mounts", f"bind {op.source}", errno.ENOENT, "source does not exist")
    if _exists(op):
        _sys.mount(op.source, op.path, None, _sys.MS_BIND | _sys.MS_REC)
        if "ro" in op.options:
            set_readonly(op.path, True, recursive=True)


def readonly(op: MountOp) -> None:
    if not _exists(op):
        return
    if op.path != "/":
        # A bind of the path onto itself makes it a mount point we can flag.
        # (For / this is not needed: / is always a mount point, and a bind
        # over our own root would not be seen by path lookups from it.)
        _sys.mount(op.path, op.path, None, _sys.MS_BIND | _sys.MS_REC)
    # Recursive: every submount (/proc, /sys, /dev, ...) too, or a writable
    # submount would be a hole in a "read-only root".
    set_readonly(op.path, True, recursive=True)


def writable(op: MountOp) -> None:
    if not _exists(op):
        return
    _sys.mount(op.path, op.path, None, _sys.MS_BIND | _sys.MS_REC)
    # Only the top mount: submounts that were read-only stay read-only.
    set_readonly(op.path, False, recursive=False)


def tmpfs(op: MountOp) -> None:
    if not _exists(op):
        return
    flags = 0
    data = []
    for opt in op.options:
        if opt in _TMPFS_FLAGS:
            flags |= _TMPFS_FLAGS[opt]
        else:
            data.append(opt)
    if op.mode is not None:
        data.append(f"mode={op.mode:o}")
    if op.size is not None:
        data.append(f"size={op.size}")
    _sys.mount("tmpfs", op.path, "tmpfs", flags, ",".join(data) or None)


def mask(op: MountOp) -> None:
    if not _exists(op):
        return
    if os.path.isdir(op.path):
        _sys.mount("tmpfs", op.path, "tmpfs",
                   _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC,
                   "size=0,mode=555")
    else:
        _sys.mount("/dev/null", op.path, None, _sys.MS_BIND)
        set_readonly(op.path, True, recursive=False)


class _Inaccessible:
    """A detached, empty tmpfs holding a mode-000 file, to hide files with.

    Built with the new mount API (fsopen/fsmount), so it never appears in
    any directory tree and needs no writable place on the host.
    """

    fd: int | None = None

    @classmethod
    def file_tree(cls) -> int:
        if cls.fd is None:
            fs = _sys.syscall("mounts", "fsopen tmpfs", "fsopen", b"tmpfs", 0)
            _sys.syscall("mounts", "fsconfig tmpfs", "fsconfig", fs, _sys.FSCONFIG_SET_STRING,
                         b"mode", b"0", 0)
            _sys.syscall("mounts", "fsconfig tmpfs", "fsconfig", fs, _sys.FSCONFIG_CMD_CREATE,
                         None, None, 0)
            cls.fd = _sys.syscall("mounts", "fsmount tmpfs", "fsmount", fs, 0, 0)
            os.close(fs)
            os.close(os.open("file", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0, dir_fd=cls.fd))
        return _sys.syscall("mounts", "open_tree inaccessible file", "open_tree", cls.fd,
                            b"file", _sys.OPEN_TREE_CLONE | os.O_CLOEXEC)


def hide(op: MountOp) -> None:
    if not _exists(op):
        return
    if os.path.isdir(op.path):
        _sys.mount("tmpfs", op.path, "tmpfs",
                   _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC,
                   "size=0,mode=000")
        return
    tree = _Inaccessible.file_tree()
    try:
        _sys.syscall("mounts", f"move_mount {op.path}", "move_mount", tree, b"",
                     _sys.AT_FDCWD, os.fsencode(op.path), _sys.MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(tree)
    set_readonly(op.path, True, recursive=False)


# The devices of a private /dev, bound in from the host's: the pseudo-devices
# every program may expect (the set runc and bubblewrap's --dev give).
PSEUDO_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Links every /dev has; they point into the workload's own /proc.
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
             ("ptmx", "pts/ptmx"))


def _clone_tree(path: str) -> int:
    """A detached copy of the mount at `path` (here: one device node)."""
    return _sys.syscall("mounts", f"devices: open_tree {path}", "open_tree",
                        _sys.AT_FDCWD, os.fsencode(path),
                        _sys.OPEN_TREE_CLONE | os.O_CLOEXEC)


def devices(op: MountOp) -> None:
    """A /dev of its own (systemd's PrivateDevices=): a small tmpfs with only
    the pseudo-devices, a new devpts instance for terminals and the usual
    links; then read-only. Root keeps owner access to every node of the
    host's /dev (disks are root's, mode 0660): without this, a root
    workload without capabilities could still write a disk.

    The nodes are cloned (open_tree) before the tmpfs covers the host's
    /dev and moved onto empty files in it: the same code works in an
    unprivileged user namespace, where mknod would not."""
    if not _exists(op):
        return
    trees: list[tuple[str, int]] = []
    try:
        for name in PSEUDO_DEVICES:
            trees.append((name, _clone_tree(f"/dev/{name}")))
        _sys.mount("tmpfs", op.path, "tmpfs", _sys.MS_NOSUID | _sys.MS_NOEXEC,
                   "mode=755,size=64k")
        for name, tree in trees:
            target = f"{op.path}/{name}"
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            _sys.syscall("mounts", f"devices: move_mount {target}", "move_mount", tree, b"",
                         _sys.AT_FDCWD, os.fsencode(target), _sys.MOVE_MOUNT_F_EMPTY_PATH)
        for name in ("pts", "shm", "mqueue"):
            os.mkdir(f"{op.path}/{name}", 0o755)  # mount points
        # A new devpts instance: the workload's own ptys, none of the host's
        # terminals (its inherited stdin/stdout keep working through their fds).
        _sys.mount("devpts", f"{op.path}/pts", "devpts", _sys.MS_NOSUID | _sys.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=620")
        for name, target in DEV_LINKS:
            os.symlink(target, f"{op.path}/{name}")
    except OSError as e:
        raise ApplyError("mounts", f"devices {e.filename or op.path}", e.errno) from None
    finally:
        for _name, tree in trees:
            os.close(tree)
    # Only the tmpfs itself: the device binds and devpts stay as they are.
    set_readonly(op.path, True, recursive=False)


def pivot_root(op: MountOp) -> None:
    if not os.path.isdir(op.path):
        raise ApplyError("mounts", f"pivot_root {op.path}", errno.ENOENT,
                         "the policy's rootfs is not a directory")
    # pivot_root needs the new root to be a mount point.
    _sys.mount(op.path, op.path, None, _sys.MS_BIND | _sys.MS_REC)
    os.chdir(op.path)
    _sys.syscall("mounts", f"pivot_root {op.path}", "pivot_root", b".", b".")
    # The old root is now stacked under "."; detach it so the workload can
    # never reach the host's tree again (chroot alone would be escapable).
    _sys.umount2(".", _sys.MNT_DETACH)
    os.chdir("/")


_APPLY = {
    "make_private": make_private, "bind": bind, "readonly": readonly, "writable": writable,
    "tmpfs": tmpfs, "mask": mask, "hide": hide, "devices": devices, "pivot_root": pivot_root,
}


def apply_mounts(ops: tuple[MountOp, ...]) -> None:
    for op in ops:
        _APPLY[op.kind](op)
