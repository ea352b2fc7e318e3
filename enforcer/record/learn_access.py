"""From "what the workload touched" to the rest of the learned policy:
Landlock grants, writable paths under a read-only root, limits, the user
and its capabilities, and argument conditions on the syscalls allowed.

docs/record.md says the same rules for users; each is one small function.

Collapsing paths (`collapse`): Landlock grants cover a path and everything
beneath it, and a program that read 400 files of its library directory
needs the directory, not 400 rules; but a grant on /etc would hand out
/etc/shadow. So:

* `/usr` (and what /bin, /sbin, /lib* resolve to under merged /usr) is
  granted whole for reading: the distribution's files, public by design.
* A directory in which 3 or more different entries were granted the same
  right (COLLAPSE_AT) is granted instead of them, bottom up -- except the
  shared system directories of SHARED_DIRS (/, /etc, /var, /var/lib,
  /run, /tmp, /home, /proc, /sys, /dev, ...), whose entries stay apart.
* Writing: a file written in place is granted through its directory
  (logs are rotated, files replaced by rename: a grant on the old inode
  would not cover the new file), unless that directory is a shared one;
  a directory in which names were created or removed is granted itself.
  Device files (/dev/null) are granted as files.
* A grant beneath another grant of the same (or, for reading, a writing)
  right is dropped.
* /proc/PID/..., /proc/self/... are granted as /proc: the directory of a
  process that does not exist yet cannot be named (the pid namespace
  decides which processes /proc shows). Re-opening an open descriptor
  (/proc/self/fd/N, /dev/stdout) needs no grant of its own and is left out.
* Executing: the exact files run (programs, their ELF loader, script
  interpreters), never collapsed: a workload that runs /bin/sh must not get
  every program of /usr/bin.
* Paths are resolved (symlinks) on the recording host, so /lib/x86_64-linux-gnu
  and /usr/lib/x86_64-linux-gnu are one grant. A path that no longer exists
  (made and removed during the recording, and not under a granted
  directory) is written `optional: true`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from enforcer.policy.model import (Action, ActionKind, ArgCondition, ArgOp, Policy, SyscallRule)
from enforcer.record.access import AccessLog, ARG_INDEXES
from enforcer.record.learn import Learned

COLLAPSE_AT = 3
WHOLE_TREES = ("/usr",)
SHARED_DIRS = frozenset({
    "/", "/etc", "/var", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/tmp",
    "/var/run", "/run", "/tmp", "/home", "/root", "/srv", "/opt", "/mnt", "/media", "/dev",
    "/proc", "/sys", "/boot", "/usr/local",
})
_PER_PROCESS = re.compile(r"^/proc/(\d+|self|thread-self)(/|$)")
_REOPENED = re.compile(r"^(/proc/(\d+|self|thread-self)/fd/|/dev/fd/|/dev/std(in|out|err)$)")

# Headroom of the learned limits (docs/record.md, "Limits"): twice the peak,
# and at least this much above it.
MEMORY_FACTOR, MEMORY_MIN_HEADROOM = 2, 64 << 20
PIDS_FACTOR, PIDS_MIN_HEADROOM = 2, 32
MEMORY_ROUND = 16 << 20
# What `restricted` sets for locked memory: mlock beyond it fails.
MEMLOCK_WITHOUT_USE = 64 << 10
MLOCK_CALLS = frozenset({"mlock", "mlock2", "mlockall"})

# Syscalls that only root (a capability) can make do what they are for.
PRIVILEGED_CALLS = {
    "chown": "CAP_CHOWN", "fchown": "CAP_CHOWN", "lchown": "CAP_CHOWN", "fchownat": "CAP_CHOWN",
    "chroot": "CAP_SYS_CHROOT", "setgroups": "CAP_SETGID",
}
SIGNAL_CALLS = frozenset({"kill", "tgkill", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"})
# uid/gid changes: allowed only with the values the recording saw.
ID_CALLS = frozenset({"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
                      "setfsuid", "setfsgid"})
# The model of argument conditions for everything else: the `restricted` policy's.
CONDITIONS_FROM = "restricted"


@dataclass
class Grants:
    read: list[tuple[str, bool]] = field(default_factory=list)  # (path, optional)
    write: list[tuple[str, bool]] = field(default_factory=list)
    execute: list[tuple[str, bool]] = field(default_factory=list)
    bind: list[int] = field(default_factory=list)
    connect: list[int] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)


@dataclass
class LearnedRest:
    """Everything but the syscall list (render.py writes it)."""

    grants: Grants
    writable: list[str]
    memory_max: int | None
    pids_max: int | None
    peaks: dict[str, int]
    memlock: int | None  # the rlimit, when the workload locked no memory
    dynamic_user: bool  # run as a dynamic user (the workload never needed root)
    capabilities: list[str] | None  # keep: these (root workloads); None: the base's
    needs: dict[str, str]  # why root or a capability was needed
    namespaces: list[str] | None = None  # the whole list, when more than the base's
    notes: list[str] = field(default_factory=list)


# -- paths ------------------------------------------------------------------------


def canonical(path: str) -> str | None:
    """The path a grant should name, or None for no grant of its own."""
    if _REOPENED.match(path):
        return None
    if _PER_PROCESS.match(path):
        return "/proc"
    if path.startswith("/dev/pts/") and path[9:].isdigit():
        return "/dev/pts"
    if path.startswith(("/proc/", "/sys/")) or path in ("/proc", "/sys"):
        return path  # procfs and sysfs links name kernel objects; keep the name used
    return os.path.realpath(path)


def under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


def covered(path: str, grants: set[str]) -> bool:
    """Is `path` beneath (or equal to) another grant of the set?"""
    return any(under(path, g) for g in grants if g != path)


def collapse(paths: set[str], whole_trees: tuple[str, ...] = ()) -> set[str]:
    """The collapse rules of the module docstring, for one right."""
    out = {next((t for t in whole_trees if under(p, t)), p) for p in paths}
    while True:
        out = {p for p in out if not covered(p, out)}
        by_parent: dict[str, set[str]] = {}
        for p in out:
            parent = os.path.dirname(p)
            if p != "/" and parent not in SHARED_DIRS:
                by_parent.setdefault(parent, set()).add(p)
        merge = {parent for parent, kids in by_parent.items() if len(kids) >= COLLAPSE_AT}
        if not merge:
            return out
        out = {p for p in out if os.path.dirname(p) not in merge} | merge


def _is_device(path: str) -> bool:
    import stat

    try:
        return stat.S_ISCHR(os.stat(path).st_mode) or stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def write_grants(log: AccessLog) -> set[str]:
    out: set[str] = set()
    for raw in log.writes:
        path = canonical(raw)
        if path is None:
            continue
        parent = os.path.dirname(path)
        if (_is_device(path) or path.startswith(("/proc", "/sys")) or parent in SHARED_DIRS
                or raw in log.created):
            # a device, a kernel file, a file in a shared directory: the file;
            # a file created here: its directory is granted by changed_dirs
            if raw not in log.created:
                out.add(path)
            continue
        out.add(parent)
    for raw in log.changed_dirs:
        path = canonical(raw)
        if path is not None:
            out.add(path)
    # A directory made during the recording is covered by its parent's grant.
    return collapse({p for p in out if not (p in log.created and covered(p, out))})


def read_grants(log: AccessLog, writes: set[str]) -> set[str]:
    paths = {p for p in (canonical(r) for r in log.reads) if p is not None}
    paths = {p for p in paths if not any(under(p, w) for w in writes)}
    return collapse(paths, WHOLE_TREES)


def execute_grants(log: AccessLog) -> set[str]:
    return {p for p in (canonical(r) for r in log.executes) if p is not None}


def with_optional(paths: set[str]) -> list[tuple[str, bool]]:
    return [(p, not os.path.exists(p)) for p in sorted(paths)]


def writable_paths(writes: set[str], base: Policy) -> list[str]:
    """Write grants on real file systems, as `writable_paths` under a
    read-only root: devices, /proc, /sys and the base's own tmpfs mounts
    need none (a device node on a read-only mount is still written to);
    /dev/shm does (the read-only root is remounted recursively)."""
    tmpfs = [t.path for t in base.filesystem.tmpfs]
    out = set()
    for p in writes:
        if under(p, "/proc") or under(p, "/sys") or p in ("/dev", "/dev/pts") or _is_device(p):
            continue
        if any(under(p, t) for t in tmpfs) or not os.path.exists(p):
            continue
        out.add(p)
    return sorted(out)


# -- limits ---------------------------------------------------------------------------


def memory_limit(peak: int) -> int:
    want = max(peak * MEMORY_FACTOR, peak + MEMORY_MIN_HEADROOM)
    return -(-want // MEMORY_ROUND) * MEMORY_ROUND


def pids_limit(peak: int) -> int:
    return max(peak * PIDS_FACTOR, peak + PIDS_MIN_HEADROOM)


# -- user and capabilities -----------------------------------------------------------


def runs_as_root(base: Policy) -> bool:
    user = base.user
    return user is None or (not user.dynamic and user.uid == 0)


def needs(log: AccessLog, counts: dict[str, int]) -> dict[str, str]:
    """Why the workload needed root or a capability (need -> example)."""
    out = dict(log.needs)
    for name, cap in PRIVILEGED_CALLS.items():
        if counts.get(name):
            out.setdefault(cap, f"called {name} ({counts[name]} time(s))")
    changed_ids = any(n in log.args for n in ID_CALLS) or counts.get("setgroups")
    for name in SIGNAL_CALLS:
        if counts.get(name) and changed_ids:
            out.setdefault("CAP_KILL", f"{name} after changing its uid (its processes differ "
                                       "in uid)")
    return out


def base_caps(base: Policy) -> set[str] | None:
    from enforcer.policy import caps

    if base.capabilities.keep is None:
        return None
    return {caps.name_of(c) for c in base.capabilities.keep}


# -- argument conditions ---------------------------------------------------------------


def holds(cond: ArgCondition, value: int) -> bool:
    v, c = value & 0xFFFFFFFFFFFFFFFF, cond.value
    if cond.op is ArgOp.MASKED_EQ:
        return v & (cond.mask or 0) == c
    return {ArgOp.EQ: v == c, ArgOp.NE: v != c, ArgOp.LT: v < c, ArgOp.LE: v <= c,
            ArgOp.GT: v > c, ArgOp.GE: v >= c}[cond.op]


def fits(rule: SyscallRule, seen: tuple[int, ...], indexes: tuple[int, ...]) -> bool:
    values = dict(zip(indexes, seen))
    return all(c.index in values and holds(c, values[c.index]) for c in rule.args)


def narrow_syscalls(learned: Learned, log: AccessLog, model: Policy) -> list[str]:
    """Replace unconditional allows with argument conditions where the
    recording shows every call fits them; returns notes.

    * `model`'s (restricted's) conditional allows -- no set-id bits in
      modes, only its socket families, personality values -- when every
      recorded call satisfies one of them;
    * uid and gid changes: only to the values seen;
    * `model`'s conditional denials of allowed calls (TIOCSTI and
      TIOCLINUX on ioctl) always.
    """
    notes = []
    by_name: dict[str, list[SyscallRule]] = {}
    for rule in model.syscalls.rules:
        if rule.args:
            by_name.setdefault(rule.syscall, []).append(rule)
    for name in sorted(learned.allow):
        count = learned.allow[name]
        seen = log.args.get(name)
        indexes = ARG_INDEXES.get(name, ())
        allows = ([r for r in by_name.get(name, []) if not r.action.blocks]
                  if name in ARG_INDEXES else [])
        if name in log.args_overflow or (seen is None and (allows or name in ID_CALLS)):
            if allows or name in ID_CALLS:
                notes.append(f"{name}: allowed without conditions (its arguments were "
                             f"{'too varied' if seen else 'not recorded'})")
            continue
        if name in ID_CALLS and seen:
            del learned.allow[name]
            for values in sorted(seen):
                conds = tuple(ArgCondition(index=i, op=ArgOp.EQ, value=v)
                              for i, v in zip(indexes, values))
                learned.rules.append((SyscallRule(name, Action(ActionKind.ALLOW), conds), count,
                                      "only the ids the recording saw"))
            continue
        if allows and seen:
            misfits = [s for s in seen if not any(fits(r, s, indexes) for r in allows)]
            if misfits:
                notes.append(f"{name}: allowed without {CONDITIONS_FROM}'s conditions, which "
                             f"{len(misfits)} recorded call(s) do not meet")
            else:
                del learned.allow[name]
                for rule in allows:
                    learned.rules.append((rule, count, f"{CONDITIONS_FROM}'s conditions: every "
                                                       "recorded call meets them"))
    allowed = learned.allowed_names()
    for name, rules in sorted(by_name.items()):
        if name not in allowed:
            continue
        for rule in rules:
            if rule.action.blocks:
                learned.rules.append((rule, learned.allow.get(name, 0),
                                      f"{CONDITIONS_FROM}'s exception to it"))
    return notes


# -- everything ---------------------------------------------------------------------------


# Namespaces a learned policy adds (as `restricted` has them): its own pid
# namespace (it sees and signals only its own processes), IPC and UTS.
ISOLATING_NAMESPACES = ("mount", "pid", "ipc", "uts")
_PROC_PID = re.compile(r"^/proc/(\d+)(/|$)")


def learned_namespaces(log: AccessLog, pids: set[int], base: Policy) -> tuple[list[str] | None, str | None]:
    """The base's namespaces plus ISOLATING_NAMESPACES, unless the workload
    looked at processes other than its own in /proc (a monitoring agent):
    in its own pid namespace it would see none. (namespaces, note)."""
    foreign = sorted({int(m.group(1)) for p in log.reads
                      if (m := _PROC_PID.match(p)) and int(m.group(1)) not in pids})
    wanted = list(base.namespaces) + [n for n in ISOLATING_NAMESPACES if n not in base.namespaces]
    if foreign:
        wanted = list(base.namespaces) + (["mount"] if "mount" not in base.namespaces else [])
        note = (f"no pid namespace added: it read /proc of {len(foreign)} process(es) not its own "
                f"(e.g. {foreign[0]})")
    else:
        note = None
    return (wanted if wanted != list(base.namespaces) else None), note


def learn_rest(log: AccessLog, counts: dict[str, int], peaks: dict[str, int],
               base: Policy, pids: set[int] | None = None) -> LearnedRest:
    writes = write_grants(log)
    reads = read_grants(log, writes)
    execs = execute_grants(log)
    grants = Grants(read=with_optional(reads), write=with_optional(writes),
                    execute=with_optional(execs), bind=sorted(log.binds),
                    connect=sorted(log.connects), scope=["signal", "abstract-unix-socket"])
    why = needs(log, counts)
    notes = []
    dynamic = False
    capabilities: list[str] | None = None
    if not runs_as_root(base):
        # A non-root user holds no capability anyway; an empty bounding set
        # also leaves none for a program with file capabilities.
        if not any(w.startswith("CAP_") for w in why):
            capabilities = []
    else:
        if not why:
            dynamic = True
            capabilities = []
        else:
            wanted = {w for w in why if w.startswith("CAP_")}
            allowed = base_caps(base)
            if allowed is not None and wanted - allowed:
                notes.append(f"the base does not keep {', '.join(sorted(wanted - allowed))}; "
                             "the learned policy does not add it")
                wanted &= allowed
            capabilities = sorted(c[4:] for c in wanted)
    for what, n in log.unresolved.most_common(5):
        notes.append(f"not granted (relative to a directory the recording did not see "
                     f"opened): {what} ({n} time(s))")
    memory = memory_limit(peaks["memory"]) if "memory" in peaks else None
    tasks = pids_limit(peaks["pids"]) if "pids" in peaks else None
    if not peaks:
        notes.append("`enforcer run` reported no cgroup peaks: no limits learned")
    memlock = None if any(counts.get(n) for n in MLOCK_CALLS) else MEMLOCK_WITHOUT_USE
    namespaces, ns_note = learned_namespaces(log, pids or set(), base)
    if ns_note:
        notes.append(ns_note)
    return LearnedRest(grants=grants, writable=writable_paths(writes, base), memory_max=memory,
                       pids_max=tasks, peaks=dict(peaks), memlock=memlock, dynamic_user=dynamic,
                       capabilities=capabilities, needs=why, namespaces=namespaces, notes=notes)


# -- --merge ------------------------------------------------------------------------------


def rest_facts(rest: LearnedRest) -> dict[str, Any]:
    """What `--merge` needs of a recording's rest, for its metadata line."""
    g = rest.grants
    return {"read": [p for p, _ in g.read], "write": [p for p, _ in g.write],
            "execute": [p for p, _ in g.execute], "bind": g.bind, "connect": g.connect,
            "scope": g.scope, "writable": rest.writable, "peaks": rest.peaks,
            "needs": rest.needs, "memlock": rest.memlock is not None,
            "namespaces": rest.namespaces}


def merge_rest(facts: list[dict[str, Any]], base: Policy) -> LearnedRest:
    """The union of several recordings' rests: every grant and port, the
    highest peaks, every need (one recording that needed root keeps root)."""
    def union(key: str) -> set[str]:
        return {str(p) for f in facts for p in f.get(key) or ()}

    writes = collapse(union("write"))
    reads = collapse({p for p in union("read") if not any(under(p, w) for w in writes)},
                     WHOLE_TREES)
    peaks: dict[str, int] = {}
    needs_: dict[str, str] = {}
    for f in facts:
        for k, v in (f.get("peaks") or {}).items():
            peaks[k] = max(peaks.get(k, 0), int(v))
        for k, v in (f.get("needs") or {}).items():
            needs_.setdefault(k, str(v))
    ports = {k: sorted({int(p) for f in facts for p in f.get(k) or ()})
             for k in ("bind", "connect")}
    scope = sorted(set.intersection(*(set(f.get("scope") or ()) for f in facts)))
    grants = Grants(read=with_optional(reads), write=with_optional(writes),
                    execute=with_optional(union("execute")), bind=ports["bind"],
                    connect=ports["connect"], scope=scope)
    log = AccessLog(needs=needs_)
    rest = learn_rest(log, {}, peaks, base)
    rest.grants = grants
    rest.writable = sorted(union("writable"))
    if any(f.get("namespaces") is None for f in facts):
        rest.namespaces = None  # one recording needed the base's (see learned_namespaces)
    if not all(f.get("memlock") for f in facts):
        rest.memlock = None
    return rest
