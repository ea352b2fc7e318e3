"""The supervisor's last lines when a workload that did start failed: what
of the policy may be the reason, said where the user looks (stderr)
instead of left to guess.

* Exit status 126 or 127 that the workload returned itself: the same
  numbers enforcer uses for "cannot execute" and "command not found" (the
  shell's convention). Enforcer's own say so in a line of their own
  (`enforcer run: exec: ...`); a workload's own gets a line that says it
  is the workload's.
* Files the policy hides: a tmpfs, masked or hidden path of the policy
  lies over a path the command line names (`nginx -c /etc/nginx/x.conf`),
  or a tmpfs covers a host directory with files in it that is no scratch
  place (`/etc/nginx`, not /tmp): the workload saw an empty directory
  where the host has files -- the usual cause of "No such file or
  directory" from a confined server. enforcer cannot see the workload's
  errno; it names the paths it hid, and how to keep them.

Imported only after the workload ended, never on the start path.
"""

from __future__ import annotations

import os

from enforcer.plan import Plan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from enforcer.apply.watch import Watch

# Directories a tmpfs is meant to hide the host's content of.
SCRATCH_PLACES = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/var/run", "/dev", "/proc", "/sys",
                  "/home", "/root")
MAX_NAMED = 3


def after_exit(plan: Plan, argv: list[str], status: int, watch: Watch, main_pid: int,
               stopped_by_us: bool) -> list[str]:
    """The supervisor's last lines: the refusal summary (without the kill
    the SIGSYS line already named), then, after a failure the supervisor
    did not cause by forwarding a signal, the notes above."""
    import _signal

    killed_by_filter = os.WIFSIGNALED(status) and os.WTERMSIG(status) == _signal.SIGSYS
    failed = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
    lines = watch.summary(main_pid if killed_by_filter else 0, failed=failed)
    if watch.lost:
        lines.append("note: the kernel dropped audit records for this run: the counts above "
                     "are a lower bound")
    if (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0) or stopped_by_us:
        return lines
    own = own_status_note(status, argv)
    return lines + ([own] if own else []) + hidden_path_notes(plan, argv)


def own_status_note(status: int, argv: list[str]) -> str | None:
    from enforcer import exitcodes

    if not os.WIFEXITED(status):
        return None
    code = os.WEXITSTATUS(status)
    if code not in (exitcodes.CANNOT_EXECUTE, exitcodes.NOT_FOUND):
        return None
    what = "command not found" if code == exitcodes.NOT_FOUND else "cannot execute"
    return (f"the workload ({os.path.basename(argv[0])}) ran and exited with status {code} "
            f"itself; it is not enforcer's {what!r}, which has a line of its own")


def _covers(plan: Plan) -> tuple[str | None, list[tuple[str, str]]]:
    """(the rootfs, [(what, path as the workload sees it)]) of every mount
    of the Plan that starts empty."""
    root = next((op.path for op in plan.mounts if op.kind == "pivot_root"), None)
    names = {"tmpfs": "tmpfs", "mask": "masked path", "hide": "hidden path"}
    out = []
    for op in plan.mounts:
        if op.kind not in names:
            continue
        path = op.path
        if root is not None:
            if not path.startswith(root.rstrip("/") + "/"):
                continue
            path = path[len(root.rstrip("/")):]
        out.append((names[op.kind], path))
    return root, out


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _on_host(root: str | None, path: str) -> bool:
    """Whether `path` (as the workload names it) is there without the
    policy's mounts: on the host, or in the rootfs resolved inside it."""
    if root is None:
        return os.path.lexists(path)
    from enforcer.inroot import open_in_root

    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.close(open_in_root(root_fd, path))
        return True
    except OSError:
        return False
    finally:
        os.close(root_fd)


def _command_line_paths(argv: list[str]) -> list[str]:
    out = []
    for arg in argv[1:]:
        for part in (arg, arg.partition("=")[2]):
            if part.startswith("/") and part not in out:
                out.append(os.path.normpath(part))
    return out


def hidden_path_notes(plan: Plan, argv: list[str]) -> list[str]:
    root, covers = _covers(plan)
    if not covers:
        return []
    notes = []
    named: set[str] = set()
    for path in _command_line_paths(argv):
        for what, cover in covers:
            if _under(path, cover) and _on_host(root, path):
                notes.append(f"note: {path} on the command line is hidden by the policy's {what} "
                             f"at {cover} (the workload saw {'an empty' if what == 'tmpfs' else 'a blank'} "
                             f"{cover}): {_keep_hint(what, path, cover)}")
                named.add(cover)
                break
    if root is None:
        for what, cover in covers:
            if what != "tmpfs" or cover in named or any(_under(cover, s) for s in SCRATCH_PLACES):
                continue
            try:
                entries = sorted(os.listdir(cover))
            except OSError:
                continue
            if entries:
                shown = ", ".join(entries[:MAX_NAMED]) + (", ..." if len(entries) > MAX_NAMED else "")
                notes.append(f"note: the policy's tmpfs at {cover} hides the host's {len(entries)} "
                             f"entr{'y' if len(entries) == 1 else 'ies'} there ({shown}): "
                             f"{_keep_hint(what, cover, cover)}")
    return notes


def _keep_hint(what: str, path: str, cover: str) -> str:
    hint = (f"if the workload needs it, bind it (filesystem.bind: [{{source: {path}, "
            f"target: {path}}}])")
    if what == "tmpfs":
        hint += f" or drop the tmpfs (filesystem.tmpfs_remove: [{cover}])"
    return hint
