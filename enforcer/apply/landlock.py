"""Apply a Plan's Landlock ruleset to this process (the `enforcer run` child).

Two steps, because they must sit at two places of the apply sequence
(enforcer/apply/sequence.py says why):

  prepare(plan)   ask the kernel its ABI, fit the Plan to it (best effort or
                  refusal), create the ruleset and add one rule per path and
                  port; every path is opened here (O_PATH), so it names what
                  this process sees now. Returns the ruleset fd and flags.
  restrict(fd, flags)  landlock_restrict_self: from here on this process and
                  everything it executes is confined. Needs no_new_privs (or
                  CAP_SYS_ADMIN).

Raw syscalls through ctypes (no libc wrapper exists); numbers from
_sys.nr(), per architecture. Every failure is an ApplyError("landlock", ...)
naming the path or syscall, so the parent prints one precise line.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from enforcer import landlock as ll
from enforcer.apply import _sys
from enforcer.errors import ApplyError

TYPE_CHECKING = False  # no `typing` on the start path
if TYPE_CHECKING:
    from typing import Callable

    from enforcer.plan import LandlockPlan


class _RulesetAttr(ctypes.Structure):
    # struct landlock_ruleset_attr: it grew with the ABI (net in 4, scoped
    # in 6); the kernel accepts the full size from older callers as long as
    # the fields it does not know are zero, which effective() guarantees.
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # packed in the kernel's header: no trailing padding
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def kernel_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has no Landlock (not
    built in, or disabled at boot)."""
    ret = int(_sys.libc().syscall(ctypes.c_long(_sys.nr("landlock_create_ruleset")), None,
                                  ctypes.c_size_t(0), ctypes.c_uint32(ll.CREATE_RULESET_VERSION)))
    if ret >= 0:
        return ret
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EOPNOTSUPP):
        return 0
    raise ApplyError("landlock", "landlock_create_ruleset(LANDLOCK_CREATE_RULESET_VERSION)", err)


def prepare(plan: LandlockPlan, report: Callable[[str], None]) -> tuple[int, int] | None:
    """Build the ruleset; returns (its fd, the landlock_restrict_self flags),
    or None when the kernel has no Landlock and the policy accepts that (no
    `landlock.abi`).

    `report` gets the best-effort line (what this kernel cannot enforce)."""
    abi = kernel_abi()
    try:
        eff = ll.effective(plan, abi)
    except ll.AbiTooOld as e:
        have = f"this kernel has ABI {e.kernel}" if e.kernel else "this kernel has no Landlock"
        raise ApplyError("landlock", f"the policy requires Landlock ABI {e.required} "
                                     "(landlock.abi)", None, have) from None
    line = ll.best_effort_line(eff)
    if line is not None:
        report(line)
    if eff.abi == 0:
        return None
    attr = _RulesetAttr(eff.handled_fs, eff.handled_net, eff.scoped)
    fd = _sys.syscall("landlock", "landlock_create_ruleset", "landlock_create_ruleset",
                      ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    try:
        add_rule = _add_rule_function()
        root = os.stat("/")
        for access, path, optional in eff.rules:
            add_path_rule(add_rule, fd, access, path, optional, root)
        port_rule = _NetPortAttr()
        for right, port in eff.ports:
            port_rule.allowed_access, port_rule.port = right, port
            if add_rule(fd, ll.RULE_NET_PORT, ctypes.byref(port_rule), 0) != 0:
                raise ApplyError("landlock", f"landlock_add_rule(port {port}, "
                                             f"{ll.NET_NAMES[right]})", ctypes.get_errno())
    except BaseException:
        os.close(fd)
        raise
    return fd, eff.restrict_flags


def _add_rule_function() -> Callable[..., int]:
    """syscall(landlock_add_rule, ...) with its argument types declared once:
    one rule is then one plain call (this runs per path on every start)."""
    nr = _sys.nr("landlock_add_rule")
    syscall = _sys.libc()["syscall"]  # a fresh function object: its own argtypes
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                        ctypes.c_uint32]

    def add_rule(ruleset: int, rule_type: int, attr: object, flags: int) -> int:
        return int(syscall(nr, ruleset, rule_type, attr, flags))

    return add_rule


def add_path_rule(add_rule: Callable[..., int], ruleset: int, access: int, path: str,
                  optional: bool, root: os.stat_result) -> None:
    """Allow `access` beneath `path`, opened (following symlinks, as the
    workload would) where this process stands now."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        if optional:
            return
        raise ApplyError("landlock", path, errno.ENOENT,
                         "path does not exist (write {path: ..., optional: true} if it may be "
                         "missing)") from None
    except OSError as e:
        raise ApplyError("landlock", path, e.errno) from None
    try:
        st = os.fstat(fd)
        if path != "/" and st.st_ino == root.st_ino and st.st_dev == root.st_dev:
            # A symlink (e.g. planted by an image) must not turn a grant for
            # one directory into a grant for the whole tree.
            raise ApplyError("landlock", path, None,
                             "resolves to / (through a symlink); write / if the whole tree "
                             "is meant")
        if not stat.S_ISDIR(st.st_mode):
            access &= ll.FS_FILE_RIGHTS  # the kernel refuses directory rights on a file
        if access and add_rule(ruleset, ll.RULE_PATH_BENEATH,
                               ctypes.byref(_PathBeneathAttr(access, fd)), 0) != 0:
            raise ApplyError("landlock", f"landlock_add_rule({path}, {ll.describe_fs(access)})",
                             ctypes.get_errno())
    finally:
        os.close(fd)


def restrict(ruleset: int, flags: int) -> None:
    """Enforce the ruleset on this process (and what it executes)."""
    try:
        _sys.syscall("landlock", "landlock_restrict_self", "landlock_restrict_self",
                     ctypes.c_int(ruleset), ctypes.c_uint32(flags))
    finally:
        os.close(ruleset)
