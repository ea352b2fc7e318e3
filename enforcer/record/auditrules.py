"""The recording's kernel audit rules: added for one audit session, removed
after -- also when the recorder fails or is killed.

Seccomp's `log` action says which syscalls a workload made, not what they
touched. For files and ports the recorder adds syscall-exit rules of its
own (what `auditctl -a always,exit -F arch=b64 -S openat,... -F
sessionid=N -k KEY` adds), one per architecture, so that the kernel writes
a SYSCALL record with the arguments, and PATH, CWD and SOCKADDR records,
for each of those calls made in the recording's audit session -- and for
no other process.

Audit rules are a host-wide table, and the recorder may be killed at any
moment. Three layers make sure none is left behind:

* the recorder removes them when the recording ends (a `finally`);
* a *guardian*, a small child forked before the rules are added, in its
  own session so that a signal to the recorder's process group does not
  reach it, waits for the recorder to exit (EOF on a pipe only the
  recorder holds: a SIGKILL closes it too) and removes whatever rule
  carries the recording's key;
* every recording first removes the rules of recordings whose process is
  gone (the key names the recorder's pid), for the case that the guardian
  was killed as well.

Syscall auditing only runs while audit is enabled (`auditctl -e 1`); if it
is off, the recording turns it on and, when no other recording's rule is
left, off again -- the guardian too.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from enforcer.monitor.sources import audit_control
from enforcer.monitor.sources.audit_control import (AUDIT_ARCH, AUDIT_FILTERKEY, AUDIT_SESSIONID,
                                                    AuditRule)

KEY_PREFIX = "enforcer-record:"

# What a recording audits, by name: every call through which a program
# reaches a file by path (Landlock's file rights), its TCP ports, the
# socket types behind those, and the calls whose arguments the learned
# policy narrows (set-id modes, clone flags, socket families, uid changes).
AUDITED_SYSCALLS = (
    "open", "openat", "openat2", "creat", "truncate",
    "execve", "execveat",
    "mkdir", "mkdirat", "mknod", "mknodat", "unlink", "unlinkat", "rmdir",
    "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
    "chmod", "fchmod", "fchmodat", "fchmodat2",
    "socket", "socketpair", "bind", "connect",
    "clone", "personality",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
)


class AuditRulesError(Exception):
    """The recording's audit rules cannot be added."""


def key_for(pid: int, session: int) -> str:
    return f"{KEY_PREFIX}{pid}:{session}"


def _owner_pid(key: str) -> int | None:
    try:
        return int(key[len(KEY_PREFIX):].split(":", 1)[0])
    except ValueError:
        return None


def syscall_numbers(arch: str) -> dict[int, str]:
    """number -> name of the audited syscalls that exist on `arch`."""
    from enforcer.policy import syscall_table, syscalls

    out: dict[int, str] = {}
    for name in AUDITED_SYSCALLS:
        nr = syscalls.syscall_number(name, arch)
        if nr < 0:
            nr = syscall_table.number(name, arch) or -1
        if nr >= 0:
            out[nr] = name
    return out


def rules_for(session: int, arches: tuple[str, ...], key: str) -> list[AuditRule]:
    from enforcer.policy import syscalls

    rules = []
    for arch in arches:
        token = syscalls.arch_token(arch)
        numbers = syscall_numbers(arch)
        if not token or not numbers:
            raise AuditRulesError(f"no audit rule can be made for architecture {arch}")
        rules.append(AuditRule(syscalls=frozenset(numbers), fields=(
            (AUDIT_ARCH, token), (AUDIT_SESSIONID, session), (AUDIT_FILTERKEY, key))))
    return rules


def remove_keyed(keep_alive: bool = True, key: str | None = None) -> list[str]:
    """Remove recording rules: those with `key`, or (key None) those whose
    recorder is gone. Returns the keys removed."""
    removed = []
    for rule in audit_control.list_rules():
        k = rule.key()
        if k is None or not k.startswith(KEY_PREFIX):
            continue
        if key is not None and k != key:
            continue
        if key is None and keep_alive:
            pid = _owner_pid(k)
            if pid is not None and audit_control.pid_alive(pid):
                continue
        try:
            audit_control.delete_rule(rule)
        except FileNotFoundError:
            continue  # removed meanwhile (by the guardian, or another recording)
        removed.append(k)
    return removed


def other_recordings_active(key: str) -> bool:
    return any((r.key() or "").startswith(KEY_PREFIX) and r.key() != key
               for r in audit_control.list_rules())


@dataclass
class RecordingRules:
    """The rules of one recording, from `install` to `remove`."""

    session: int
    arches: tuple[str, ...]
    key: str = ""
    installed: list[AuditRule] = field(default_factory=list)
    enabled_by_us: bool = False
    notes: list[str] = field(default_factory=list)
    _guard_w: int = -1
    _guard_pid: int = 0

    def install(self) -> None:
        """Clean up after dead recordings, start the guardian, enable audit
        if it is off, add the rules. Raises AuditRulesError."""
        self.key = self.key or key_for(os.getpid(), self.session)
        try:
            stale = remove_keyed()
            if stale:
                self.notes.append(f"removed {len(stale)} audit rule(s) a stopped recording left "
                                  "behind")
            status = audit_control.read_status()
        except OSError as e:
            raise AuditRulesError(f"cannot read the kernel's audit rules: {e.strerror} "
                                  "(needs CAP_AUDIT_CONTROL)") from None
        if status.enabled == 2:
            raise AuditRulesError("the kernel's audit configuration is locked (enabled=2, "
                                  "`auditctl -e 2`): the recording's rules cannot be added")
        rules = rules_for(self.session, self.arches, self.key)
        self._start_guardian(enable_was_off=status.enabled == 0)
        try:
            if status.enabled == 0:
                audit_control.set_fields(audit_control.AUDIT_STATUS_ENABLED, enabled=1)
                self.enabled_by_us = True
            for rule in rules:
                audit_control.add_rule(rule)
                self.installed.append(rule)
        except OSError as e:
            self.remove()
            raise AuditRulesError(f"cannot add the recording's audit rules: {e.strerror}") from None

    def remove(self) -> None:
        """Remove the rules (and audit's enabled flag if we set it). Never
        raises: what cannot be removed now the guardian retries."""
        for rule in self.installed:
            try:
                audit_control.delete_rule(rule)
            except OSError:
                pass
        self.installed = []
        if self.enabled_by_us:
            _disable_unless_others(self.key)
            self.enabled_by_us = False
        self._stop_guardian()

    # -- the guardian ---------------------------------------------------------

    def _start_guardian(self, enable_was_off: bool) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 0
            try:
                os.close(w)
                _guard(r, self.key, enable_was_off)
            except BaseException:  # noqa: BLE001 - a forked child never returns
                code = 1
            os._exit(code)
        os.close(r)
        self._guard_w, self._guard_pid = w, pid

    def _stop_guardian(self) -> None:
        if self._guard_w >= 0:
            os.close(self._guard_w)  # EOF: the guardian checks, then exits
            self._guard_w = -1
        if self._guard_pid:
            try:
                os.waitpid(self._guard_pid, 0)
            except ChildProcessError:
                pass
            self._guard_pid = 0


def _disable_unless_others(key: str) -> None:
    try:
        if not other_recordings_active(key) and audit_control.read_status().enabled == 1:
            audit_control.set_fields(audit_control.AUDIT_STATUS_ENABLED, enabled=0)
    except OSError:
        pass


def _guard(r: int, key: str, enable_was_off: bool) -> None:  # pragma: no cover - child
    """The guardian's life: out of the recorder's way, wait for its end,
    then remove what is left of its rules."""
    os.setsid()  # a signal to the recorder's process group is not for us
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    os.closerange(3, r)
    os.closerange(r + 1, 1 << 16)
    while True:
        try:
            if not os.read(r, 1):
                break
        except InterruptedError:
            continue
    remove_keyed(key=key)
    if enable_was_off:
        _disable_unless_others(key)
