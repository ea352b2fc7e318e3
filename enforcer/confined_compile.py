"""Fill a Plan-cache miss without compiling in the privileged process.

    plan_for_policy_file(path, cache_dir=None, mode=None) -> Plan

The start path (the shim, enforcer-shimd, `enforcer run`) loads Plans; it
never parses YAML or builds BPF itself (DESIGN: "the privileged side only
loads Plans"). When the Plan cache has no entry for a policy file, the
compiler runs in a child process that

- holds no capability at all (effective, permitted, inheritable, ambient
  and, where we may drop it, bounding set), with no_new_privs, so nothing
  it executes can gain one;
- cannot write any file, bind or connect a TCP port, signal or reach an
  abstract socket outside itself (Landlock, where the kernel has it);
- cannot be traced or have its memory read by another process of the same
  uid (it is never made dumpable again: it does not exec, and a capability
  drop leaves it non-dumpable, which we also set explicitly);
- dies with its parent (PR_SET_PDEATHSIG) and keeps no descriptor of the
  parent's but the pipe it answers on.

It writes back the cache entry (the source files with their digests, then
the Plan: enforcer/planstore.py's entry format) and the parent verifies that
Plan (format, field checks, sha256) as it verifies every Plan it loads,
stores it in the cache (root-owned, 0600) and returns it. The next start
finds it there.

A fork rather than a new interpreter: an exec'd child is dumpable again
(a same-uid process could ptrace it between exec and its first line), and
the fork inherits what the parent has imported already. The child imports
the compiler (PyYAML, libseccomp); a parent started without `site` (the
fast launchers of enforcer/launcher.py) lets the child add the
site-packages of the interpreter the launcher names (enforcer.SITE_PYTHON).

Linux only; Landlock is used when the kernel offers it (5.13+), and its
absence is not an error: the child still has no capability.
"""

from __future__ import annotations

import os
import sys

# Defined with the other errors, re-exported (`as`) for this module's callers.
from enforcer.errors import ConfinedCompileError as ConfinedCompileError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from typing import Callable, NoReturn

    from enforcer.plan import Plan

# How long a compile may take before the parent gives up on it.
COMPILE_TIMEOUT = 120.0
_MAX_OUTPUT = 64 << 20

# prctl(2) options and securebits (linux/prctl.h, linux/securebits.h).
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# NOROOT, NO_SETUID_FIXUP, KEEP_CAPS (off), NO_CAP_AMBIENT_RAISE, each locked.
_SECURE_ALL_LOCKED = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
_CAP_SETPCAP = 8
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Landlock (linux/landlock.h); the same syscall numbers on every architecture.
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_RULE_PATH_BENEATH = 1
_ACCESS_FS_WRITE_FILE = 1 << 1
_LANDLOCK_CREATE_RULESET_VERSION = 1
# Every right that changes the file system, by the ABI that introduced it.
_FS_WRITE_RIGHTS = [(1, (1 << 1) | (0x1FF << 4)),  # WRITE_FILE, REMOVE_*, MAKE_*
                    (2, 1 << 13),                   # REFER
                    (3, 1 << 14),                   # TRUNCATE
                    (5, 1 << 15)]                   # IOCTL_DEV
_NET_ALL = 0x3           # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPE_ALL = 0x3         # ABSTRACT_UNIX_SOCKET, SIGNAL (ABI 6)


# -- the parent -------------------------------------------------------------------


def plan_for_policy_file(path: str, *, cache_dir: str | None = None,
                         mode: str | None = None) -> "Plan":
    """The Plan of the policy file `path`: from the Plan cache, else compiled
    in a confined child and then cached. Raises ConfinedCompileError, or
    enforcer.errors.PlanError for a corrupt cache entry."""
    from enforcer.planstore import entry_path, lookup, parse_entry, store

    found, plan = lookup(path, mode=mode, cache_dir=cache_dir)
    if plan is not None:
        return plan
    data = run_confined(lambda: _compile_entry(path, mode))
    from enforcer.errors import PlanError

    try:
        sources, plan = parse_entry(data, f"the compiler's output for {path}")
    except PlanError as e:
        raise ConfinedCompileError(str(e)) from None
    entry = found.path or entry_path(path, mode, cache_dir)
    if entry:
        store(entry, sources, plan, top=path, mode=mode)
    return plan


def run_confined(work: "Callable[[], bytes]", timeout: float = COMPILE_TIMEOUT) -> bytes:
    """Run `work` in a forked, confined child (see the module docstring) and
    return what it returned. Raises ConfinedCompileError with the child's
    one-line reason, or why it could not finish."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; what it sends is checked below
        _child(work, write_end, parent)
    os.close(write_end)
    try:
        data = _read_all(read_end, timeout)
    except BaseException:
        import signal

        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if data.startswith(b"E\n"):
        raise ConfinedCompileError.from_wire(data[2:])
    if not data.startswith(b"P\n") or status != 0:
        raise ConfinedCompileError("the confined compiler ended with status "
                                   f"{os.waitstatus_to_exitcode(status)} and no answer")
    return data[2:]


def _read_all(fd: int, timeout: float) -> bytes:
    import select
    import time

    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            raise ConfinedCompileError(f"the compiler took more than {timeout:.0f} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > _MAX_OUTPUT:
            raise ConfinedCompileError("the compiler's output is too large")
        chunks.append(chunk)


# -- the child ----------------------------------------------------------------------


def _child(work: "Callable[[], bytes]", out_fd: int, parent: int) -> "NoReturn":
    code = 1
    try:
        out = _keep_only(out_fd)
        try:
            _confine(parent)
            data = b"P\n" + work()
            code = 0
        except ConfinedCompileError as e:
            data = b"E\n" + e.wire()
        except Exception as e:  # a bug: say what kind, not what it read
            data = b"E\n" + ConfinedCompileError(
                f"internal error in the policy compiler ({type(e).__name__})").wire()
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]
    except BaseException:
        code = 2
    finally:
        os._exit(code)


def _keep_only(out_fd: int) -> int:
    """stdin and stdout on /dev/null, stderr kept (the parent's log), the
    answer pipe on fd 3, every other descriptor closed."""
    os.dup2(out_fd, 3, inheritable=False)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.closerange(4, os.sysconf("SC_OPEN_MAX"))
    return 3


def _confine(parent: int) -> None:
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(option: int, arg: int, arg3: int = 0) -> int:
        return int(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(0), ctypes.c_ulong(0)))

    def check(ok: bool, step: str) -> None:
        if not ok:
            raise ConfinedCompileError(f"cannot confine the policy compiler: {step}: "
                                       f"{os.strerror(ctypes.get_errno())}")

    # Dies with its parent; and if the parent is gone already, stop here.
    check(prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0, "PR_SET_PDEATHSIG")
    if os.getppid() != parent:
        os._exit(1)
    check(prctl(_PR_SET_DUMPABLE, 0) == 0, "PR_SET_DUMPABLE")
    check(prctl(_PR_SET_NO_NEW_PRIVS, 1) == 0, "PR_SET_NO_NEW_PRIVS")
    if _effective() & (1 << _CAP_SETPCAP):
        # Root stays powerless even across exec (the compiler may run
        # ldconfig to find libseccomp); without CAP_SETPCAP the bounding
        # set cannot be dropped, and no_new_privs does that job.
        check(prctl(_PR_SET_SECUREBITS, _SECURE_ALL_LOCKED) == 0, "PR_SET_SECUREBITS")
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        for cap in range(last + 1):
            check(prctl(_PR_CAPBSET_DROP, cap) == 0, f"dropping capability {cap}")
    check(prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL) == 0, "clearing ambient capabilities")

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header, data = Header(_LINUX_CAPABILITY_VERSION_3, 0), (Data * 2)()
    check(libc.capset(ctypes.byref(header), data) == 0, "capset")
    _landlock_no_writes(libc)
    status = _status()
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        if int(status.get(field, "1"), 16) != 0:
            raise ConfinedCompileError(f"cannot confine the policy compiler: {field} is "
                                       f"{status.get(field)}")
    if status.get("NoNewPrivs") != "1":
        raise ConfinedCompileError("cannot confine the policy compiler: no_new_privs is off")


def _status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def _effective() -> int:
    return int(_status().get("CapEff", "0"), 16)


def _landlock_no_writes(libc: "ctypes.CDLL") -> None:
    """No file-system change, TCP port, outside signal or abstract socket:
    every right this kernel's Landlock knows of in those groups is handled,
    and none is granted but writing to /dev/null (subprocess opens it for a
    child's stdio: ctypes.util.find_library runs ldconfig that way). Skipped
    where the kernel has no Landlock."""
    import ctypes

    abi = int(libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                           ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION)))
    if abi < 1:
        return  # ENOSYS / EOPNOTSUPP: no Landlock here
    fs = sum(rights for since, rights in _FS_WRITE_RIGHTS if abi >= since)
    attr = (ctypes.c_uint64 * 3)(fs, _NET_ALL if abi >= 4 else 0, _SCOPE_ALL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = int(libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), attr,
                               ctypes.c_size_t(size), ctypes.c_uint32(0)))
    if ruleset < 0:
        raise ConfinedCompileError("cannot confine the policy compiler: "
                                   f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    try:
        null = os.open(os.devnull, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = PathBeneath(_ACCESS_FS_WRITE_FILE, null)
            if libc.syscall(ctypes.c_long(_SYS_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset),
                            ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                            ctypes.c_uint32(0)) != 0:
                raise ConfinedCompileError("cannot confine the policy compiler: "
                                           f"landlock_add_rule: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(null)
        if libc.syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset),
                        ctypes.c_uint32(0)) != 0:
            raise ConfinedCompileError("cannot confine the policy compiler: "
                                       "landlock_restrict_self: "
                                       f"{os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)


# -- what the child does --------------------------------------------------------------


def _compile_entry(path: str, mode: str | None) -> bytes:
    _make_compiler_importable()
    from enforcer.compile.cache import compile_with_sources
    from enforcer.planstore import entry_bytes
    from enforcer.errors import EnforcerError, PolicyErrors

    try:
        top, sources, plan = compile_with_sources(path, mode=mode)
    except PolicyErrors as e:
        raise ConfinedCompileError([str(err) for err in e.errors], "policy") from None
    except EnforcerError as e:
        raise ConfinedCompileError(str(e).strip()) from None
    return entry_bytes(sources, plan, top=top, mode=mode)


def _make_compiler_importable() -> None:
    """PyYAML and libseccomp live in site-packages, which a fast launcher
    (-S) left off sys.path: add this interpreter's, and those of the
    interpreter the launcher names, before importing the compiler."""
    try:
        import pyseccomp  # noqa: F401
        import yaml  # noqa: F401
        return
    except ImportError:
        pass
    import site

    import enforcer

    if sys.flags.no_site:
        site.main()
    site_python = getattr(enforcer, "SITE_PYTHON", None)
    if site_python:
        prefix = os.path.dirname(os.path.dirname(site_python))
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        if os.path.isfile(os.path.join(prefix, "pyvenv.cfg")):
            # A venv's own layout (a distribution's site module may name
            # dist-packages directories instead).
            for lib in dict.fromkeys((sys.platlibdir, "lib")):
                directory = os.path.join(prefix, lib, version, "site-packages")
                if os.path.isdir(directory):
                    site.addsitedir(directory)
    try:
        import pyseccomp  # noqa: F401, F811
        import yaml  # noqa: F401, F811
    except ImportError as e:
        raise ConfinedCompileError(f"the policy compiler is not available ({e}); install "
                                   "enforcer with PyYAML and pyseccomp, or precompile the "
                                   "policy with `enforcer compile`") from None
