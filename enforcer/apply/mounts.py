"""The Plan's mount operations, applied in order inside a private mount namespace.

Every operation here changes only the mount namespace the child created in
the previous step (sequence.enter_namespaces always creates one when the
Plan has mounts), so nothing is visible on the host. Targets are opened
(and mount points made) by enforcer/apply/mount_targets.py: inside a
rootfs, resolved within it; each mount goes onto the descriptor opened.
"""

from __future__ import annotations

import errno
import os

from enforcer.apply import _sys
from enforcer.apply.mount_targets import CREATES_MOUNT_POINT, Targets, fd_path, is_dir
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
        _remount_walk(os.path.realpath(path), readonly, recursive)


def _set_readonly_at(t: Targets, op: MountOp, readonly: bool, recursive: bool) -> None:
    """set_readonly on the mount now on top at op's target: opened again,
    since a descriptor taken before the mount names the one beneath."""
    fd = t.open(op)
    if fd is None:
        return
    try:
        set_readonly(fd_path(fd), readonly, recursive)
    finally:
        os.close(fd)


def make_private(op: MountOp, t: Targets) -> None:
    # First, so that nothing we mount propagates back to the host (and
    # nothing the host mounts later appears under our read-only view).
    _sys.mount(None, op.path, None, _sys.MS_REC | _sys.MS_PRIVATE)


def bind_rootfs(op: MountOp) -> None:
    """The rootfs bound onto itself: pivot_root needs a mount point. The
    rootfs is the administrator's path (not resolved in itself). nodev: a
    device node in an image would give its root the host's disk; the
    workload's /dev is a mount of its own (`devices`)."""
    if not os.path.isdir(op.path):
        raise ApplyError("mounts", f"bind {op.path}", errno.ENOENT,
                         "the policy's rootfs is not a directory")
    _sys.mount(op.path, op.path, None, _sys.MS_BIND | _sys.MS_REC)
    try:
        _sys.mount_setattr(op.path, _sys.AT_RECURSIVE, _sys.MOUNT_ATTR_NODEV, 0)
    except ApplyError as e:
        if e.errno != errno.ENOSYS:
            raise
        _sys.mount(None, op.path, None, _sys.MS_BIND | _sys.MS_REMOUNT | _sys.MS_NODEV)


def clone_source(op: MountOp, display: str) -> int | None:
    """A detached copy (open_tree) of a bind's source, as the host has it,
    taken before any mount of the Plan: a source below a tmpfs of the
    policy (/tmp/app beneath the policy's /tmp) is still the host's. Made
    read-only here when the policy says so, before anyone can see it."""
    try:
        tree = _sys.syscall("mounts", f"{display}: open_tree {op.source}", "open_tree",
                            _sys.AT_FDCWD, os.fsencode(op.source or ""),
                            _sys.OPEN_TREE_CLONE | _sys.AT_RECURSIVE | os.O_CLOEXEC)
    except ApplyError as e:
        if e.errno == errno.ENOENT and op.optional:
            return None
        if e.errno == errno.ENOENT:
            raise ApplyError("mounts", f"{display}: source {op.source}", errno.ENOENT,
                             "source does not exist on the host") from None
        raise
    if "ro" in op.options:
        _sys.mount_setattr_fd(tree, _sys.AT_RECURSIVE, _sys.MOUNT_ATTR_RDONLY, 0)
    return tree


def move_onto(tree: int, fd: int, display: str) -> None:
    """Attach the detached mount `tree` on the file `fd` is (no path)."""
    _sys.syscall("mounts", f"{display}: move_mount", "move_mount", tree, b"", fd, b"",
                 _sys.MOVE_MOUNT_F_EMPTY_PATH | _sys.MOVE_MOUNT_T_EMPTY_PATH)


def bind(op: MountOp, t: Targets, tree: int | None = None) -> None:
    if op.source is None:
        raise ApplyError("mounts", t.display(op), errno.EINVAL, "bind without a source")
    if op.source == op.path and (t.root is None or op.path == t.root):
        bind_rootfs(op)
        return
    own = tree is None
    if tree is None:
        tree = clone_source(op, t.display(op))
        if tree is None:
            return
    try:
        fd = t.open(op, create="dir" if is_dir(tree) else "file")
        if fd is None:
            return
        try:
            move_onto(tree, fd, t.display(op))
        finally:
            os.close(fd)
        t.binds.append(op.path)
    finally:
        if own:
            os.close(tree)


def _self_bind(op: MountOp, t: Targets) -> bool:
    """Bind op's target onto itself, making it a mount point we can flag.
    False when it is missing and optional."""
    fd = t.open(op)
    if fd is None:
        return False
    try:
        _sys.mount(fd_path(fd), fd_path(fd), None, _sys.MS_BIND | _sys.MS_REC)
    finally:
        os.close(fd)
    return True


def readonly(op: MountOp, t: Targets) -> None:
    if op.path == "/":
        # / is always a mount point, and a bind over our own root would
        # not be seen by path lookups from it.
        set_readonly("/", True, recursive=True)
        return
    if not _self_bind(op, t):
        return
    # Recursive: every submount (/proc, /sys, /dev, ...) too, or a writable
    # submount would be a hole in a "read-only root".
    _set_readonly_at(t, op, True, recursive=True)


def writable(op: MountOp, t: Targets) -> None:
    if not _self_bind(op, t):
        return
    # Only the top mount: submounts that were read-only stay read-only.
    _set_readonly_at(t, op, False, recursive=False)


def tmpfs(op: MountOp, t: Targets) -> None:
    fd = t.open(op, create="dir")
    if fd is None:
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
    try:
        _sys.mount("tmpfs", fd_path(fd), "tmpfs", flags, ",".join(data) or None)
    finally:
        os.close(fd)
    t.scratch.append(op.path)


def _empty_dir_over(fd: int, mode: str) -> None:
    _sys.mount("tmpfs", fd_path(fd), "tmpfs",
               _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC,
               f"size=0,mode={mode}")


def mask(op: MountOp, t: Targets) -> None:
    fd = t.open(op)
    if fd is None:
        return
    try:
        if is_dir(fd):
            _empty_dir_over(fd, "555")
            return
        _sys.mount("/dev/null", fd_path(fd), None, _sys.MS_BIND)
    finally:
        os.close(fd)
    _set_readonly_at(t, op, True, recursive=False)


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


def hide(op: MountOp, t: Targets) -> None:
    fd = t.open(op)
    if fd is None:
        return
    try:
        if is_dir(fd):
            _empty_dir_over(fd, "000")
            return
        tree = _Inaccessible.file_tree()
        try:
            move_onto(tree, fd, t.display(op))
        finally:
            os.close(tree)
    finally:
        os.close(fd)
    _set_readonly_at(t, op, True, recursive=False)


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


def devices(op: MountOp, t: Targets) -> None:
    """A /dev of its own (systemd's PrivateDevices=, and every rootfs's):
    a small tmpfs with only the pseudo-devices, a new devpts instance for
    terminals and the usual links; then read-only. Root keeps owner access
    to every node of the host's /dev (disks are root's, mode 0660): without
    this, a root workload without capabilities could still write a disk.

    The nodes are cloned (open_tree) from the host's /dev before the tmpfs
    covers anything and moved onto empty files in it: the same code works
    in an unprivileged user namespace, where mknod would not. Everything
    inside is made relative to the new tmpfs's own descriptor."""
    fd = t.open(op, create="dir")
    if fd is None:
        return
    trees: list[tuple[str, int]] = []
    dev: int | None = None
    try:
        for name in PSEUDO_DEVICES:
            trees.append((name, _clone_tree(f"/dev/{name}")))
        _sys.mount("tmpfs", fd_path(fd), "tmpfs", _sys.MS_NOSUID | _sys.MS_NOEXEC,
                   "mode=755,size=64k")
        dev = t.open(op)  # the new tmpfs, now on top
        if dev is None:
            raise ApplyError("mounts", t.display(op), errno.ENOENT, "the new /dev vanished")
        for name, tree in trees:
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=dev))
            _sys.syscall("mounts", f"devices: move_mount {op.path}/{name}", "move_mount", tree,
                         b"", dev, os.fsencode(name), _sys.MOVE_MOUNT_F_EMPTY_PATH)
        for name in ("pts", "shm", "mqueue"):
            os.mkdir(name, 0o755, dir_fd=dev)  # mount points
        # A new devpts instance: the workload's own ptys, none of the host's
        # terminals (its inherited stdin/stdout keep working through their fds).
        _sys.mount("devpts", f"{fd_path(dev)}/pts", "devpts", _sys.MS_NOSUID | _sys.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=620")
        for name, target in DEV_LINKS:
            os.symlink(target, name, dir_fd=dev)
    except ApplyError:
        raise  # a mount step's own message (ApplyError is an OSError too)
    except OSError as e:
        raise ApplyError("mounts", f"devices {e.filename or op.path}", e.errno) from None
    finally:
        for _name, tree in trees:
            os.close(tree)
        os.close(fd)
        if dev is not None:
            os.close(dev)
    t.scratch.append(op.path)
    # Only the tmpfs itself: the device binds and devpts stay as they are.
    _set_readonly_at(t, op, True, recursive=False)


def proc(op: MountOp, t: Targets) -> None:
    """A /proc for a rootfs: of the workload's pid namespace (the child is
    in it already), so with `pid` under namespaces it lists only the
    workload's processes, and without, the host's -- what the same policy
    shows on the host's root. Where the kernel refuses a new proc (a user
    namespace that does not own the pid namespace), the host's /proc is
    bound instead: the same view."""
    fd = t.open(op, create="dir")
    if fd is None:
        return
    try:
        try:
            _sys.mount("proc", fd_path(fd), "proc", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC)
        except ApplyError as e:
            if e.errno != errno.EPERM:
                raise
            _sys.mount("/proc", fd_path(fd), None, _sys.MS_BIND | _sys.MS_REC)
    finally:
        os.close(fd)


def sysfs(op: MountOp, t: Targets) -> None:
    """A read-only /sys for a rootfs (as runc gives a container). Where a
    new sysfs is refused (a user namespace without its own network
    namespace), the host's /sys is bound instead, read-only."""
    fd = t.open(op, create="dir")
    if fd is None:
        return
    try:
        try:
            _sys.mount("sysfs", fd_path(fd), "sysfs", _sys.MS_RDONLY | _sys.MS_NOSUID
                       | _sys.MS_NODEV | _sys.MS_NOEXEC)
            return
        except ApplyError as e:
            if e.errno != errno.EPERM:
                raise
            _sys.mount("/sys", fd_path(fd), None, _sys.MS_BIND | _sys.MS_REC)
    finally:
        os.close(fd)
    _set_readonly_at(t, op, True, recursive=True)


def pivot_root(op: MountOp, t: Targets) -> None:
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
    "make_private": make_private, "readonly": readonly, "writable": writable,
    "tmpfs": tmpfs, "mask": mask, "hide": hide, "devices": devices, "proc": proc,
    "sysfs": sysfs, "pivot_root": pivot_root,
}


def make_rootfs_mount_points(ops: tuple[MountOp, ...], t: Targets) -> None:
    """Mount points inside a rootfs, made before anything is mounted: a
    read-only root (`read_only_root`) comes before the mounts that need
    them. Those below another new mount of the Plan (a tmpfs, the rootfs's
    /dev) are made when their turn comes, inside it."""
    made: list[str] = []
    binds: list[str] = []  # below these is the host's source: nothing is made there
    for op in ops:
        if op.kind not in CREATES_MOUNT_POINT or not t.in_root(op.path) or op.path == t.root:
            continue
        if not any(op.path.startswith(m.rstrip("/") + "/") for m in made + binds):
            kind = "dir"
            if op.kind == "bind" and op.source and not os.path.isdir(op.source):
                kind = "file"
            fd = t.open(op, create=kind)
            if fd is not None:
                os.close(fd)
        (binds if op.kind == "bind" else made).append(op.path)


def apply_mounts(ops: tuple[MountOp, ...]) -> None:
    t = Targets(ops)
    # Bind sources as the host has them, before anything covers them.
    trees: dict[int, int | None] = {}
    try:
        for i, op in enumerate(ops):
            if i == 0 and op.kind == "make_private":
                make_private(op, t)
                continue
            if op.kind == "bind" and not (op.source == op.path):
                trees[i] = clone_source(op, t.display(op))
        if t.root is not None:
            make_rootfs_mount_points(ops, t)
        for i, op in enumerate(ops):
            if i == 0 and op.kind == "make_private":
                continue
            if op.kind == "bind":
                if i in trees and trees[i] is None:
                    continue  # an optional source that is not there
                bind(op, t, trees.get(i))
            else:
                _APPLY[op.kind](op, t)
    finally:
        for tree in trees.values():
            if tree is not None:
                os.close(tree)
