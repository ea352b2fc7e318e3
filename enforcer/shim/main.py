"""enforcer-runc: an OCI runtime that applies a policy, then becomes runc.

    enforcer-runc [--policy NAME] [--runc PATH] [--config FILE] RUNC-ARGS...

Every runc command and flag passes through unchanged. `create` and `run`
first merge the selected policy into the bundle's config.json (see
merge.py) and register the container for the monitor; `delete` removes
that record. Everything else execs runc at once.

Start-path budget: 15 ms on top of `runc run`. So no argparse, no json
module (fastjson), no dataclasses, no enforcer.errors/registry/plan on the
hot path; those are imported only when a Plan must be (re)verified.

Process model:
  run (foreground)  exec runc: runc keeps our pid, so signals, exit status,
                    stdio and the terminal are exactly runc's. A small
                    detached reaper process (record.start_record_reaper)
                    removes the registry record when that pid exits,
                    because `runc run` deletes the container itself.
  create, run -d    runc runs as our child and we wait: runc returns as soon
                    as the container is created, and then we know its pid
                    for the registry. Signals are forwarded, the exit status
                    is runc's, stdio and --console-socket are inherited.
  delete            child too, when we hold a record, to drop it on success.
"""

from __future__ import annotations

import os
import sys

from enforcer.shim.cmdline import RuncCommandLine, parse
from enforcer.shim.config import ShimConfig, load_config
from enforcer.shim.errors import ShimError

APPLY_FAILED = 125  # enforcer.exitcodes.APPLY_FAILED, not imported to stay light
POLICY_ANNOTATION = "io.enforcer.policy"
# Set in the environment runc gets: if runc turns out to be this shim again
# (a PATH or config mistake), the second instance refuses instead of looping.
ACTIVE_ENV = "ENFORCER_SHIM_ACTIVE"
DEFAULT_RUNC_ROOT = "/run/runc"
PROG = "enforcer-runc"


def _warn(message: str) -> None:
    os.write(2, f"{PROG}: warning: {message}\n".encode())


# -- finding runc --------------------------------------------------------------


def _same_file(a: str, b: str | None) -> bool:
    if not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def find_runc(explicit: str | None, self_path: str | None) -> str:
    """The real runc: --runc, the config's "runc", or `runc` on PATH; never us."""
    if explicit:
        candidates = [explicit] if "/" in explicit else \
            [os.path.join(d, explicit) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    else:
        candidates = [os.path.join(d, "runc")
                      for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            if _same_file(path, self_path):
                if explicit:
                    raise ShimError(f"runc {explicit} is this shim itself; "
                                    "point --runc or \"runc\" at the real runc")
                continue  # the shim installed as `runc` earlier on PATH: skip it
            return path
    if explicit:
        raise ShimError(f"runc {explicit}: not found or not executable")
    raise ShimError("runc not found on PATH; set \"runc\" in the shim config or pass --runc")


def exec_runc(runc: str, args: list[str]) -> None:
    os.environ[ACTIVE_ENV] = "1"
    try:
        os.execv(runc, [runc] + args)
    except OSError as e:
        raise ShimError(f"cannot execute {runc}: {e.strerror}") from None


def run_runc_child(runc: str, args: list[str]) -> int:
    """Run runc as a child, forward signals, return its exit status (128+N if killed)."""
    import _signal  # the C module: `signal` imports enum (~6 ms)

    os.environ[ACTIVE_ENV] = "1"
    child = [0]

    def forward(signum: int, _frame: object) -> None:
        if child[0]:
            try:
                os.kill(child[0], signum)
            except ProcessLookupError:
                pass

    forwarded = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
                 _signal.SIGUSR1, _signal.SIGUSR2)
    previous = {s: _signal.signal(s, forward) for s in forwarded}
    try:
        pid = os.fork()
        if pid == 0:  # child: become runc (exec resets the handlers)
            try:
                os.execv(runc, [runc] + args)
            except OSError as e:
                os.write(2, f"{PROG}: cannot execute {runc}: {e.strerror}\n".encode())
            os._exit(APPLY_FAILED)
        child[0] = pid
        _, status = os.waitpid(pid, 0)
    finally:
        for s, handler in previous.items():
            _signal.signal(s, handler)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


# -- policy selection ------------------------------------------------------------


def select_policy(line: RuncCommandLine, config: dict[str, object],
                  cfg: ShimConfig) -> str | None:
    """--policy, then the io.enforcer.policy annotation, then the default."""
    if "policy" in line.shim:
        return line.shim["policy"]
    annotations = config.get("annotations")
    if isinstance(annotations, dict) and POLICY_ANNOTATION in annotations:
        value = annotations[POLICY_ANNOTATION]
        if not isinstance(value, str) or not value:
            raise ShimError(f"annotation {POLICY_ANNOTATION} must be a non-empty policy name")
        return value
    return cfg.default_policy


def _has_bool_flag(args: list[str], names: tuple[str, ...]) -> bool:
    for arg in args:
        if arg == "--":
            break
        stripped = arg.lstrip("-")
        if arg.startswith("-") and (stripped in names or any(
                stripped == f"{n}=true" for n in names)):
            return True
    return False


# -- create / run / delete ---------------------------------------------------------


def _read_pid(line: RuncCommandLine, runc: str, flags: dict[str, str],
              container_id: str) -> int | None:
    """The container's init pid: from --pid-file, else `runc state`."""
    pid_file = flags.get("pid-file")
    if pid_file:
        try:
            with open(pid_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None
    import subprocess

    from enforcer.shim import fastjson

    try:
        out = subprocess.run([runc] + line.global_args + ["state", container_id],
                             capture_output=True, timeout=10, check=True).stdout
        pid = fastjson.loads(out).get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def start(line: RuncCommandLine, cfg: ShimConfig, runc: str) -> int:
    from enforcer.shim.bundle import read_config, write_config
    from enforcer.shim.merge import merge_patch
    from enforcer.shim.plans import patch_for_policy
    from enforcer.shim.record import cgroups_from_config, cgroups_of_pid, make_record, \
        remove_record, write_record

    flags, positionals = line.command_flags_and_positionals()
    if not positionals:
        exec_runc(runc, line.runc_args)  # runc prints its own usage error
    container_id = positionals[0]
    bundle = os.path.abspath(flags.get("bundle") or ".")
    config = read_config(bundle)
    spec = select_policy(line, config, cfg)
    root = cfg.registry_root()
    patch = None
    if spec is None:
        if cfg.on_no_policy != "passthrough":
            raise ShimError(f"container {container_id}: no policy selected (no --policy, no "
                            f"{POLICY_ANNOTATION} annotation, no default_policy in "
                            f"{cfg.path}); refusing to start it")
        _warn(f"container {container_id} starts WITHOUT a policy (on_no_policy=passthrough)")
    else:
        shim_cache = os.path.join(root, "shim-cache")
        patch = patch_for_policy(spec, cfg.plans_dir, cfg.cache_dir, shim_cache)
        merge_patch(config, patch, bundle)
        if patch["seccomp"] is not None and patch["seccomp"].get("flags"):
            from enforcer.shim.runcfeatures import fit_seccomp_to_runc, runc_features

            fit_seccomp_to_runc(config, runc_features(runc, shim_cache),
                                cfg.require_seccomp_flags)
    systemd = "systemd-cgroup" in {a.lstrip("-").split("=")[0] for a in line.global_args}
    record = make_record(container_id, patch, cgroups_from_config(config, container_id, systemd),
                         bundle)
    # Register first: the monitor must know the container before it can
    # misbehave. If the config then cannot be written, unregister.
    try:
        write_record(root, record)
    except (OSError, ValueError) as e:
        raise ShimError(f"cannot register container {container_id} under {root}: {e}") from None
    if patch is not None:
        try:
            write_config(bundle, config)
        except ShimError:
            remove_record(root, container_id)
            raise
    command_args = line.runc_args[line.command_index + 1:]
    detached = line.command == "create" or _has_bool_flag(command_args, ("d", "detach"))
    if not detached:
        from enforcer.shim.record import start_record_reaper

        start_record_reaper(root, record)
        exec_runc(runc, line.runc_args)
    status = run_runc_child(runc, line.runc_args)
    if status != 0:
        remove_record(root, container_id)
        return status
    pid = _read_pid(line, runc, flags, container_id)
    if pid is not None:
        record["pid"] = pid
        record["cgroups"] = cgroups_of_pid(pid) or record["cgroups"]
        try:
            write_record(root, record)
        except OSError as e:
            _warn(f"cannot update the registry record of {container_id}: {e}")
    return status


def delete(line: RuncCommandLine, cfg: ShimConfig, runc: str) -> int:
    from enforcer.shim.record import record_path, remove_record

    root = cfg.registry_root()
    container_id = line.container_id
    try:
        has_record = bool(container_id) and os.path.exists(record_path(root, container_id or ""))
    except ValueError:
        has_record = False
    if not has_record:
        exec_runc(runc, line.runc_args)
    assert container_id is not None
    status = run_runc_child(runc, line.runc_args)
    runc_root = line.global_flags.get("root") or DEFAULT_RUNC_ROOT
    if status == 0 or not os.path.exists(os.path.join(runc_root, container_id, "state.json")):
        remove_record(root, container_id)
    return status


def run_shim(argv: list[str], self_path: str | None) -> int:
    if os.environ.get(ACTIVE_ENV):
        raise ShimError(f"started by itself ({ACTIVE_ENV} is set): the configured runc "
                        "is this shim; point --runc or \"runc\" in the shim config at the real runc")
    line = parse(argv)
    cfg = load_config(line.shim.get("config"))
    runc = find_runc(line.shim.get("runc") or cfg.runc, self_path)
    if line.command in ("create", "run"):
        return start(line, cfg, runc)
    if line.command == "delete":
        return delete(line, cfg, runc)
    exec_runc(runc, line.runc_args)
    return APPLY_FAILED  # not reached: exec_runc returns only by raising


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        return run_shim(argv, sys.argv[0] if sys.argv and sys.argv[0] else None)
    except ShimError as e:
        os.write(2, f"{PROG}: {e}\n".encode())
        return APPLY_FAILED


if __name__ == "__main__":
    sys.exit(main())
