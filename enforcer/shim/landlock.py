"""Landlock in containers: the shim's side of enforcer-landlock.

runc has no Landlock support, so for a policy with a `landlock` section the
container's process, and every `runc exec` process, starts through a small
static helper (enforcer/shim/frontend/enforcer-landlock.c) that applies the
ruleset to itself and execs the original process.args. The shim:

  landlock_patch(plan)     the Plan's ruleset for the patch (plain data),
                           checked against the policy's own seccomp filter,
                           which runc loads before the helper runs;
  merge_landlock(...)      bind-mounts the helper read-only at HELPER_PATH
                           and puts it in front of process.args;
  wrap_process(...)        the same for a `runc exec --process` spec;
  exec_arguments(...)      ... and for the `runc exec ID CMD...` form.

The ruleset is fitted to this host's kernel here (enforcer/landlock.py
`effective`: best effort or refusal, one function for `enforcer run` and
the shim) and handed to the helper as arguments; the helper decides nothing.

Why the helper cannot be replaced from inside the container:
  * it is a root-owned file that no one else may write (checked here, with
    its directory), bind-mounted read-only, nosuid, nodev;
  * HELPER_PATH is in the container's /dev, which must be a tmpfs the
    runtime creates: the image cannot put a file or symlink there, and the
    bind mount is the config's last mount, so nothing covers it;
  * every process it starts, `runc exec` ones included, is under Landlock
    before it runs, and Landlock forbids a sandboxed process to mount or
    unmount anything.
"""

from __future__ import annotations

import os
import stat

from enforcer import landlock as ll
from enforcer.shim.errors import ShimError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from enforcer.plan import Plan

HELPER_NAME = "enforcer-landlock"
HELPER_PATH = "/dev/.enforcer-landlock"  # inside the container
# What the helper calls before restricting itself and that a policy's
# filter could block (checked at patch time for a clear refusal up front).
HELPER_SYSCALLS = ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self")
_SECCOMP_RET_ACTION_FULL = 0xFFFF0000
_SECCOMP_RET_ALLOWED = (0x7FFF0000, 0x7FFC0000)  # allow, log


def default_helper(self_path: str | None) -> str | None:
    """The helper next to the shim's own program (setup.sh builds both)."""
    if not self_path:
        return None
    return os.path.join(os.path.dirname(os.path.realpath(self_path)), HELPER_NAME)


# -- patch time (cached with the patch) ----------------------------------------


def landlock_patch(plan: Plan) -> dict[str, Any] | None:
    lp = plan.landlock
    if lp is None:
        return None
    _check_filter(plan)
    return {"min_abi": lp.min_abi, "handled_net": lp.handled_net, "scopes": lp.scopes,
            "rules": [[r.path, r.access, r.optional] for r in lp.rules],
            "bind": list(lp.bind), "connect": list(lp.connect)}


def _check_filter(plan: Plan) -> None:
    """runc loads the seccomp filter before it execs the helper: a filter
    that blocks the landlock syscalls would make every start fail."""
    if plan.seccomp is None:
        return
    from enforcer.apply import _sys
    from enforcer.kernel import bpfsim

    from enforcer.kernel.arch import BY_NAME

    known = BY_NAME.get(plan.seccomp.native_arch)
    arch = known.audit if known is not None else None
    if arch is None or plan.seccomp.native_arch != _sys.machine():
        return  # not this host's filter; the helper reports at start
    prog = bpfsim.parse(plan.seccomp.filter.bpf)
    for name in HELPER_SYSCALLS:
        action, _ = bpfsim.run(prog, _sys.nr(name), arch)
        if action & _SECCOMP_RET_ACTION_FULL not in _SECCOMP_RET_ALLOWED:
            raise ShimError(f"policy {plan.policy_name}: its seccomp filter blocks {name}, which "
                            "the container's Landlock helper needs before the workload starts "
                            "(allow @seccomp in the policy)")


# -- start time ------------------------------------------------------------------


def helper_arguments(patch: dict[str, Any]) -> list[str]:
    """The helper's options for this host's kernel; raises ShimError when
    the policy's `landlock.abi` is above it."""
    from enforcer.apply.landlock import kernel_abi
    from enforcer.errors import ApplyError
    from enforcer.plan import LandlockPlan, LandlockRule

    lp = patch["landlock"]
    plan = LandlockPlan(min_abi=lp["min_abi"], handled_net=lp["handled_net"],
                        scopes=lp["scopes"], bind=tuple(lp["bind"]), connect=tuple(lp["connect"]),
                        rules=tuple(LandlockRule(p, a, o) for p, a, o in lp["rules"]))
    try:
        eff = ll.effective(plan, kernel_abi())
    except ll.AbiTooOld as e:
        raise ShimError(f"policy {patch['policy']}: landlock: {e}") from None
    except ApplyError as e:
        raise ShimError(f"policy {patch['policy']}: {e}") from None
    args = ["-f", f"{eff.handled_fs:x}", "-n", f"{eff.handled_net:x}", "-s", f"{eff.scoped:x}",
            "-l", f"{eff.restrict_flags:x}"]
    for access, path, optional in eff.rules:
        args += ["-o" if optional else "-p", f"{access:x}:{path}"]
    for right, port in eff.ports:
        args += ["-b" if right == ll.NET_BIND_TCP else "-c", str(port)]
    line = ll.best_effort_line(eff)
    if line is not None:
        args += ["-w", line]  # printed in the container's stderr (docker logs)
    return args


def check_helper(path: str) -> None:
    """The helper must be a regular root-owned file that only root can
    change, reached through directories only root can change (a sticky
    directory such as /tmp is fine: no one else can rename root's entries
    there): what the bind mount hands every container must not be
    swappable on the host either."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise ShimError(f"landlock helper {path}: its file must be owned by root and "
                            "writable by no one else")
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
            raise ShimError(f"landlock helper {path}: not an executable file")
        directory = os.path.dirname(real)
        while True:
            d = os.stat(directory)
            if d.st_uid != 0 or (d.st_mode & 0o022 and not d.st_mode & stat.S_ISVTX):
                raise ShimError(f"landlock helper {path}: its directory {directory} must be "
                                "owned by root and writable by no one else")
            if directory == "/":
                break
            directory = os.path.dirname(directory)
    except OSError as e:
        raise ShimError(f"landlock helper {path}: {e.strerror} (build it with `python -m "
                        f"enforcer.launcher DIR`, or set \"landlock_helper\" in the shim "
                        "config)") from None


def _wrapped(args: Any, patch: dict[str, Any], what: str) -> list[str]:
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise ShimError(f"{what}: process.args must be a non-empty list of strings")
    return [HELPER_PATH, *helper_arguments(patch), "--", *args]


def merge_landlock(config: dict[str, Any], patch: dict[str, Any], helper: str | None) -> None:
    """The container's process starts through the helper (config.json)."""
    if not patch.get("landlock"):
        return
    if helper is None:
        raise ShimError(f"policy {patch['policy']} has a landlock section, but the shim does not "
                        "know where its Landlock helper is (set \"landlock_helper\" in the shim "
                        "config)")
    check_helper(helper)
    mounts = config.get("mounts")
    if not isinstance(mounts, list):
        raise ShimError("config.json: mounts is not a list")
    dev = [m for m in mounts if isinstance(m, dict)
           and os.path.normpath(str(m.get("destination", ""))) == "/dev"]
    if not dev or dev[-1].get("type") != "tmpfs":
        raise ShimError(f"policy {patch['policy']}: the Landlock helper is mounted in the "
                        "container's /dev, which must be a tmpfs the runtime creates (so the "
                        "image cannot shadow it); this config has none")
    process = config.get("process")
    if not isinstance(process, dict):
        raise ShimError("config.json: process is missing")
    process["args"] = _wrapped(process.get("args"), patch, "config.json")
    # Last, so that no other mount of the config can cover it.
    mounts[:] = [m for m in mounts if not (isinstance(m, dict) and os.path.normpath(
        str(m.get("destination", ""))) == HELPER_PATH)]
    mounts.append({"destination": HELPER_PATH, "type": "bind", "source": helper,
                   "options": ["bind", "ro", "nosuid", "nodev"]})


def wrap_process(process: dict[str, Any], patch: dict[str, Any]) -> None:
    """A `runc exec --process` spec: the new process starts through the
    helper the container already has."""
    if patch.get("landlock"):
        process["args"] = _wrapped(process.get("args"), patch, "exec process spec")


def exec_arguments(runc_args: list[str], positionals: list[str],
                   patch: dict[str, Any]) -> list[str]:
    """`runc exec [FLAGS] ID CMD [ARG...]`: the helper goes in front of CMD.
    Everything after the container id is the command (runc's own rule), so
    CMD and its arguments are the last len(positionals) - 1 arguments."""
    if not patch.get("landlock") or len(positionals) < 2:
        return runc_args
    command = positionals[1:]
    split = len(runc_args) - len(command)
    return [*runc_args[:split], HELPER_PATH, *helper_arguments(patch), "--", *command]
