"""Mounts: the filesystem policy as an ordered list of MountOps.

Built the way systemd's namespace setup does it: first a flat table of
(path, kind) entries, then sorted so that a parent directory is handled
before anything below it, then de-duplicated, with two different kinds on
one path reported as a conflict instead of letting the later one silently
win. The order that results:

  make_private /          stop mount events leaking to or from the host
  bind rootfs onto itself (only with rootfs: pivot_root needs a mount point)
  readonly /              recursive, when read_only_root
  ... then by path depth (shallow first), and for one depth by kind:
  readonly, writable, new mounts (tmpfs, bind, devices, proc, sysfs), mask, hide
  pivot_root              last, when rootfs is set

Depth order is what makes "the more specific path wins" true: a writable
exception at /var/lib/app is remounted after the read-only /var above it,
a tmpfs at /tmp is mounted after the root became read-only, and a bind
target inside a tmpfs of the policy (/tmp/app) is mounted after the tmpfs,
so it stays visible (as with bwrap's --tmpfs /tmp --bind ... /tmp/app).

With a rootfs, every path is applied under the rootfs (before pivot_root),
so each op's path is the rootfs joined with the policy's path; the apply
side resolves it inside the rootfs (enforcer/apply/mount_targets.py). A
rootfs also gets what a container runtime gives a container's root: a
minimal /dev of its own, a /proc and a read-only /sys -- unless the policy
mounts something of its own there.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from enforcer.errors import CompileError
from enforcer.plan import MountOp
from enforcer.policy import validate as _validate
from enforcer.policy.model import FilesystemPolicy

# `masked_paths: default` (the loader expands the word into this list; one
# list, kept with the validator). Several do not exist on every kernel --
# /proc/sched_debug moved to debugfs in 5.13, /proc/timer_stats went in 4.11,
# /proc/kcore needs CONFIG_PROC_KCORE, /proc/latency_stats CONFIG_LATENCYTOP;
# half of them are absent on the machine this was written on -- so every
# masked path of this set is optional: a missing one is skipped and
# reported, not an error. Other paths a user lists are required.
DEFAULT_MASKED_PATHS: tuple[str, ...] = _validate.DEFAULT_MASKED_PATHS


# Order of kinds at one depth: a read-only parent, then its writable
# exceptions, then new mounts, then what covers paths up.
_KIND_ORDER = {"readonly": 0, "writable": 1, "devices": 2, "tmpfs": 2, "bind": 2, "proc": 2,
               "sysfs": 2, "mask": 3, "hide": 4}

# What a rootfs gets unless the policy mounts something of its own there
# (runc and `bwrap --dev --proc` give the same): the kind for each path.
ROOTFS_MOUNTS = (("/dev", "devices"), ("/proc", "proc"), ("/sys", "sysfs"))


@dataclass(frozen=True)
class _Entry:
    path: str
    kind: str
    op: MountOp
    source: str  # which policy field asked for it, for conflict messages


def _norm(path: str, field: str) -> str:
    if not path.startswith("/"):
        raise CompileError(f"filesystem.{field}: {path!r} is not an absolute path")
    out = posixpath.normpath(path)
    return "/" if out == "//" else out


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def expand_masked(paths: tuple[str, ...]) -> list[tuple[str, bool]]:
    """(path, optional) pairs; the word `default` expands to the default set,
    and every path of the default set is optional (see DEFAULT_MASKED_PATHS)."""
    out: list[tuple[str, bool]] = []
    for p in paths:
        if p == "default":
            out.extend((d, True) for d in DEFAULT_MASKED_PATHS)
        else:
            out.append((p, posixpath.normpath(p) in DEFAULT_MASKED_PATHS))
    return out


def _entries(fs: FilesystemPolicy) -> list[_Entry]:
    entries: list[_Entry] = []

    def add(kind: str, path: str, field: str, **kw: object) -> None:
        p = _norm(path, field)
        entries.append(_Entry(p, kind, MountOp(kind=kind, path=p, **kw), field))  # type: ignore[arg-type]

    if fs.read_only_root:
        add("readonly", "/", "read_only_root")
    for p in fs.read_only_paths:
        add("readonly", p, "read_only_paths")
    for p in fs.writable_paths:
        add("writable", p, "writable_paths")
    for t in fs.tmpfs:
        add("tmpfs", t.path, "tmpfs", size=t.size, mode=t.mode, options=tuple(t.options))
    for p, optional in expand_masked(fs.masked_paths):
        add("mask", p, "masked_paths", optional=optional)
    for p in fs.hidden_paths:
        add("hide", p, "hidden_paths")
    for b in fs.bind:
        add("bind", b.target, "bind", source=_norm(b.source, "bind"),
            options=("ro",) if b.read_only else ())
    if fs.private_devices:
        # A depth-1 mount like /tmp: after the read-only root, before
        # anything below it (a tmpfs on /dev/shm lands on the new /dev).
        add("devices", "/dev", "private_devices")
    if fs.rootfs is not None:
        taken = {e.path for e in entries}
        for path, kind in ROOTFS_MOUNTS:
            if path not in taken:
                add(kind, path, "rootfs")
    return entries


def _dedupe(entries: list[_Entry]) -> list[_Entry]:
    by_path: dict[str, _Entry] = {}
    for e in entries:
        seen = by_path.get(e.path)
        if seen is None:
            by_path[e.path] = e
        elif seen.kind == e.kind:
            if seen.op != e.op:
                # e.g. the same mask path from the default set (optional) and
                # from the user's list (required): the stricter one wins.
                if seen.kind == "mask":
                    by_path[e.path] = seen if not seen.op.optional else e
                else:
                    raise CompileError(
                        f"filesystem: {e.path} is given twice with different settings "
                        f"({seen.source} and {e.source})")
        else:
            raise CompileError(
                f"filesystem: {e.path} is both {seen.kind} ({seen.source}) and {e.kind} "
                f"({e.source}); choose one")
    return list(by_path.values())


def _under(root: str, path: str) -> str:
    return root if path == "/" else root.rstrip("/") + path


def compile_mounts(fs: FilesystemPolicy) -> list[MountOp]:
    entries = _dedupe(_entries(fs))
    if not entries and fs.rootfs is None:
        return []
    entries.sort(key=lambda e: (_depth(e.path), _KIND_ORDER[e.kind], e.path))
    ops = [MountOp(kind="make_private", path="/")]
    root = _norm(fs.rootfs, "rootfs") if fs.rootfs else None
    if root is not None:
        if root == "/":
            raise CompileError("filesystem.rootfs: / is already the root; leave rootfs unset")
        ops.append(MountOp(kind="bind", path=root, source=root))
    for e in entries:
        op = e.op
        if root is not None:
            op = MountOp(kind=op.kind, path=_under(root, op.path), source=op.source,
                         size=op.size, mode=op.mode, options=op.options, optional=op.optional)
        ops.append(op)
    if root is not None:
        ops.append(MountOp(kind="pivot_root", path=root))
    return ops
