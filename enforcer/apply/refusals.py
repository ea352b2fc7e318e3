"""What the policy's seccomp filter refused the workload, counted per syscall.

The supervisor reads the kernel audit stream (enforcer/apply/audit.py) for
as long as the workload runs and hands every seccomp record here. A record
is the workload's when it carries the workload's audit session (`ses=`,
started by the child before anything of the policy was applied, and
inherited by every process it forks) -- or, where no session could be
started, when its pid is one the supervisor knows. Filters are loaded with
SECCOMP_FILTER_FLAG_LOG (a policy's `log_denials`, on by default), so a
syscall refused with an errno is recorded as well as a kill.

At exit (and with `enforcer run --summary` every few seconds) the counts
become one line per syscall, the most refused first:

    enforcer run: refused by policy 'redis': fsync ×1 (killed, pid 4242)
    enforcer run: refused by policy 'redis': wait4 ×20 (EPERM, pid 4241)

The kernel's record names the action, not the errno returned: that is
read from the Plan's own filter (enforcer/kernel/bpfsim.py runs it for
the syscall), where it does not depend on the arguments ("errno" where it
does). A syscall answered ENOSYS -- the policy's way of making a program
fall back to an older call (clone3 -> clone) -- is routine, so it is only
listed after a failure.

Standard library only: the supervisor is on the start path.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from enforcer.apply.audit import SeccompRecord

# The action in a seccomp record's `code=` (SECCOMP_RET_ACTION_FULL).
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
ACTION_MASK = 0xFFFF0000

AUDIT_ARCH_NATIVE = (0xC000003E, 0xC00000B7)  # x86_64, aarch64
MAX_LINES = 20  # more syscalls than this: one line says how many are left out
MAX_PIDS_SHOWN = 3


def action_of(code: int) -> str:
    """A record's action in words: "killed", "errno", "trapped", "logged".
    (The kernel logs the action only, not which errno it returned.)"""
    action = code & ACTION_MASK
    if action in (RET_KILL_PROCESS, RET_KILL_THREAD):
        return "killed"
    if action == RET_ERRNO:
        return "errno"
    if action == RET_TRAP:
        return "trapped"
    if action == RET_LOG:
        return "logged"
    return f"action {action:#x}"


class Refusals:
    """Counts of one workload's refused syscalls: (name, action) -> pids."""

    def __init__(self, session: int | None, pids: set[int], names: dict[int, str],
                 audit_mode: bool = False, bpf: bytes = b"") -> None:
        self.session = session
        # In audit mode a logged syscall is a would-be refusal; in enforce
        # mode `log` is the policy's allow-and-log, not a refusal.
        self.audit_mode = audit_mode
        self.pids = pids  # used when there is no session to go by
        self.names = names  # native syscall number -> name (the Plan's table)
        self.bpf = bpf  # the Plan's filter, to tell which errno it returns
        # (arch, nr, action) -> count, and the pids (an ordered set)
        self.counts: dict[tuple[int, int, str], int] = {}
        self.by_pid: dict[tuple[int, int, str], dict[int, None]] = {}
        self.records: list[SeccompRecord] = []  # the kills, for the exit message
        self.changed = False

    def is_ours(self, rec: SeccompRecord) -> bool:
        if self.session is not None and rec.ses >= 0:
            return rec.ses == self.session
        return rec.pid in self.pids

    def syscall_name(self, arch: int, nr: int) -> str:
        if arch not in AUDIT_ARCH_NATIVE:
            return f"syscall {nr} of arch {arch:#x}"
        return self.names.get(nr, f"syscall {nr}")

    def errno_of(self, arch: int, nr: int) -> int | None:
        """The errno the Plan's filter returns for this syscall whatever its
        arguments, or None (it depends on them, or cannot be told)."""
        if not self.bpf:
            return None
        from enforcer.kernel import bpfsim

        try:
            prog = bpfsim.parse(self.bpf)
            rets = {bpfsim.run(prog, nr, arch, args)[0]
                    for args in ((0,) * 6, (0xFFFFFFFFFFFFFFFF,) * 6, (1,) * 6)}
        except bpfsim.BpfError:
            return None
        if len(rets) != 1:
            return None
        ret = rets.pop()
        return ret & 0xFFFF if ret & ACTION_MASK == RET_ERRNO else None

    def add(self, rec: SeccompRecord) -> None:
        action = rec.code & ACTION_MASK
        if not self.is_ours(rec) or action == RET_ALLOW or (action == RET_LOG
                                                          and not self.audit_mode):
            return
        key = (rec.arch, rec.syscall, action_of(rec.code))
        self.counts[key] = self.counts.get(key, 0) + 1
        self.by_pid.setdefault(key, {})[rec.pid] = None
        if key[2] == "killed":
            self.records.append(rec)
        self.changed = True

    def kill_of(self, pid: int) -> SeccompRecord | None:
        return next((r for r in self.records if r.pid == pid), None)

    def lines(self, policy: str, leave_out: SeccompRecord | None = None,
              failed: bool = True) -> list[str]:
        """One line per (syscall, action), kills first, then by count.
        `leave_out`: a kill another line already explains (one count of it);
        without `failed`, ENOSYS answers are left out (see the module doc)."""
        counts = dict(self.counts)
        if leave_out is not None:
            key = (leave_out.arch, leave_out.syscall, "killed")
            if counts.get(key) == 1:
                del counts[key]
        labels = {}
        for key in list(counts):
            arch, nr, action = key
            labels[key] = action
            if action == "errno":
                import errno as errno_mod

                n = self.errno_of(arch, nr)
                if n == errno_mod.ENOSYS and not failed:
                    del counts[key]
                elif n is not None:
                    labels[key] = errno_mod.errorcode.get(n, f"errno {n}")
        prefix = (f"would be refused by policy {policy!r} (audit mode)" if self.audit_mode
                  else f"refused by policy {policy!r}")
        order = sorted(counts, key=lambda k: (k[2] != "killed", -counts[k],
                                              self.syscall_name(k[0], k[1])))
        out = []
        for key in order[:MAX_LINES]:
            name, action = self.syscall_name(key[0], key[1]), labels[key]
            pids = list(self.by_pid[key])
            shown = ", ".join(str(p) for p in pids[:MAX_PIDS_SHOWN])
            if len(pids) > MAX_PIDS_SHOWN:
                shown += f" and {len(pids) - MAX_PIDS_SHOWN} more"
            who = f"pid {shown}" if len(pids) == 1 else f"pids {shown}"
            out.append(f"{prefix}: {name} ×{counts[key]} ({action}, {who})")
        if len(order) > MAX_LINES:
            out.append(f"{prefix}: {len(order) - MAX_LINES} more syscalls (enforcer monitor "
                       "counts them all)")
        return out
