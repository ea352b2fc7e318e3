"""enforcer-runc: an OCI runtime that applies a policy, then becomes runc.

    enforcer-runc [--policy NAME] [--runc PATH] [--config FILE] RUNC-ARGS...

Every runc flag passes through unchanged; every runc command is classified
(cmdline.COMMANDS). `create` and `run` first merge the selected policy into
the bundle's config.json (see merge.py) and register the container for
the monitor; `exec` merges it into the new process; `update` is checked
against it; `delete` removes the record. `restore` and any command the
shim does not know are refused. The rest (they start nothing) exec runc
at once.

Where this code runs: in its own process (`enforcer-runc-py`, `enforcer
shim`), or inside enforcer-shimd (server.py) on behalf of the compiled
front end (frontend/enforcer-runc.c), which is what gets registered as the
runtime. The decisions are the same; runner.py says who executes runc.

Start-path budget: 15 ms on top of `runc run`. So no argparse, no json
module (fastjson), no dataclasses, no enforcer.errors/registry/plan on the
hot path; those are imported only when a Plan must be (re)verified.

Process model (the process that becomes runc is this one, or the front end):
  run (foreground)  exec runc: runc keeps that pid, so signals, exit status,
                    stdio and the terminal are exactly runc's. The registry
                    record is removed when that pid exits (a small reaper
                    process here, the server's worker under enforcer-shimd),
                    because `runc run` deletes the container itself.
  create, run -d    runc runs as a child and we wait: runc returns as soon
                    as the container is created, and then we know its pid
                    for the registry. Signals are forwarded, the exit status
                    is runc's, stdio and --console-socket are inherited.
  delete            child too, when we hold a record, to drop it on success.
"""

from __future__ import annotations

import os
import sys

from enforcer.shim.cmdline import COMMANDS, RuncCommandLine, parse
from enforcer.shim.config import ShimConfig, load_config
from enforcer.shim.errors import ShimError
from enforcer.shim.runner import ACTIVE_ENV, PROG, LocalRunner

TYPE_CHECKING = False  # `typing` costs ms on the start path; only checkers need it
if TYPE_CHECKING:
    from enforcer.shim.runner import Runner
    from enforcer.shim.staging import Stager

APPLY_FAILED = 125  # enforcer.exitcodes.APPLY_FAILED, not imported to stay light
POLICY_ANNOTATION = "io.enforcer.policy"
DEFAULT_RUNC_ROOT = "/run/runc"


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


# -- policy selection ------------------------------------------------------------


def select_policy(line: RuncCommandLine, config: dict[str, object],
                  cfg: ShimConfig) -> str | None:
    """The container's policy: the runtime's own, the annotation's, or the default.

    `--policy` is the runtime's own (what a Docker runtime or a Kubernetes
    RuntimeClass handler is registered with): an annotation may not replace
    it. Without one, the io.enforcer.policy annotation may choose an
    installed policy by name (from config.json: whoever writes it may be an
    image or a pod author), among `annotation_policies` when the shim
    config lists them. Else `default_policy`.
    """
    from enforcer.shim.plans import NAME_RULE, is_policy_name

    runtime_policy = line.shim.get("policy")
    annotations = config.get("annotations")
    if not isinstance(annotations, dict) or POLICY_ANNOTATION not in annotations:
        return runtime_policy or cfg.default_policy
    value = annotations[POLICY_ANNOTATION]
    if not isinstance(value, str) or not is_policy_name(value):
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise ShimError(f"annotation {POLICY_ANNOTATION} must be {NAME_RULE}, not {shown}")
    if runtime_policy is not None:
        if value != runtime_policy:
            raise ShimError(f"annotation {POLICY_ANNOTATION}={value} asks for another policy "
                            f"than the runtime's own ({runtime_policy}); an annotation cannot "
                            "change it: use the runtime registered for that policy")
        return runtime_policy
    allowed = cfg.annotation_policies
    if allowed is not None and value not in allowed:
        raise ShimError(f"annotation {POLICY_ANNOTATION}={value}: this node lets annotations "
                        f"choose only {', '.join(allowed) or 'no policy'} "
                        f"(annotation_policies in {cfg.path})")
    return value


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

    from enforcer import fastjson

    try:
        out = subprocess.run([runc] + line.global_args + ["state", container_id],
                             capture_output=True, timeout=10, check=True).stdout
        pid = fastjson.loads(out).get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _merged_config(line: RuncCommandLine, cfg: ShimConfig, runc: str, container_id: str,
                   bundle: str, runner: "Runner", stager: "Stager"
                   ) -> tuple[dict[str, object], dict[str, object] | None]:
    """The bundle's config with the selected policy merged in, and the patch used.

    Nothing is written here: every refusal happens before the bundle changes.
    (The writable paths' staging mounts are made here; the caller releases
    them, on a refusal too.)
    """
    from enforcer.shim.bundle import read_config
    from enforcer.shim.merge import merge_patch
    from enforcer.shim.plans import patch_for_policy

    config = read_config(bundle)
    spec = select_policy(line, config, cfg)
    if spec is None:
        if cfg.on_no_policy != "passthrough":
            raise ShimError(f"container {container_id}: no policy selected (no --policy, no "
                            f"{POLICY_ANNOTATION} annotation, no default_policy in "
                            f"{cfg.path}); refusing to start it")
        runner.warn(f"container {container_id} starts WITHOUT a policy (on_no_policy=passthrough)")
        return config, None
    shim_cache = os.path.join(cfg.registry_root(), "shim-cache")
    patch = patch_for_policy(spec, cfg.plans_dir, cfg.cache_dir, shim_cache)
    notes: list[str] = []
    merge_patch(config, patch, bundle, proc=runner.proc, stager=stager, cache_dir=shim_cache,
                notes=notes, landlock_helper=cfg.landlock_helper)
    for note in notes:
        runner.warn(note)
    linux = config.get("linux")
    seccomp = linux.get("seccomp") if isinstance(linux, dict) else None
    if isinstance(seccomp, dict) and seccomp.get("flags"):
        from enforcer.shim.runcfeatures import fit_seccomp_to_runc, runc_features

        fit_seccomp_to_runc(config, runc_features(runc, shim_cache), cfg.require_seccomp_flags)
    return config, patch


def start(line: RuncCommandLine, cfg: ShimConfig, runc: str, runner: "Runner") -> int:
    """create / run: merge, register, write config.json, then runc (exec or child)."""
    from enforcer.shim.staging import Stager

    flags, positionals = line.command_flags_and_positionals()
    if not positionals:
        runner.exec_runc(runc, line.runc_args)  # runc prints its own usage error
    container_id = positionals[0]
    bundle = os.path.abspath(flags.get("bundle") or ".")
    root = cfg.registry_root()
    # The process that becomes runc owns the staging mounts (staging.sweep).
    stager = Stager(root, container_id,
                    os.getpid() if runner.proc == "self" else int(runner.proc),
                    lambda: runner.require_own_process(
                        "the policy's writable paths are staged with mount(2), which needs the "
                        "privileges of the runtime that asked"))
    try:
        return _start_staged(line, cfg, runc, runner, container_id, bundle, root, stager, flags)
    except BaseException:
        stager.release()  # refused, failed or handed over: runc has made its mounts or never will
        raise


def _start_staged(line: RuncCommandLine, cfg: ShimConfig, runc: str, runner: "Runner",
                  container_id: str, bundle: str, root: str, stager: "Stager",
                  flags: dict[str, str]) -> int:
    from enforcer.shim.bundle import write_config
    from enforcer.shim.record import STAGING_KEY, cgroups_from_config, cgroups_of_pid, \
        make_record, remove_record, write_record

    config, patch = _merged_config(line, cfg, runc, container_id, bundle, runner, stager)
    systemd = "systemd-cgroup" in {a.lstrip("-").split("=")[0] for a in line.global_args}
    # A fresh audit session for runc and so for the container's processes:
    # the monitor then attributes every seccomp record by `ses=` alone.
    cgroups = cgroups_from_config(config, container_id, systemd, runner.proc)
    record = make_record(container_id, patch, cgroups, bundle,
                         audit_session=runner.new_audit_session())
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
    if line.command == "run" and not _has_bool_flag(command_args, ("d", "detach")):
        if stager.dir is not None:
            # runc keeps this pid for the whole run: the staging mounts go
            # with the record when it ends (record.remove_record_if_same).
            # In memory only: the registry file keeps its own fields.
            record[STAGING_KEY] = stager.dir
            stager.dir = None
        runner.remove_record_on_exit(root, record)
        runner.exec_runc(runc, line.runc_args)
    try:
        status = runner.run_child(runc, line.runc_args)
    except ShimError:
        remove_record(root, container_id)
        raise
    stager.release()  # runc has made the container's mounts: the staging is not needed
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
            runner.warn(f"cannot update the registry record of {container_id}: {e}")
    return status


def _policy_record(cfg: ShimConfig, container_id: str | None) -> dict[str, object] | None:
    """The registry record of a container the shim started with a policy."""
    from enforcer import fastjson
    from enforcer.shim.record import NO_POLICY, record_path

    if not container_id:
        return None
    try:
        with open(record_path(cfg.registry_root(), container_id), "rb") as f:
            record = fastjson.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("policy") in (None, NO_POLICY):
        return None
    return record


def exec_in_container(line: RuncCommandLine, cfg: ShimConfig, runc: str,
                      runner: "Runner") -> int:
    """`runc exec` into a container we started: the new process gets the policy too.

    The container's seccomp filter applies to exec'd processes anyway (runc
    takes it from the container), but their user, capabilities,
    no_new_privileges and rlimits come from the exec process spec, which
    Docker and containerd build from their own view of the container. So
    --process FILE is merged like config.json's process; on the command-line
    form, --cap is refused, as is --user root when the policy names a user.
    """
    flags, positionals = line.command_flags_and_positionals()
    record = _policy_record(cfg, positionals[0] if positionals else None)
    if record is None:
        runner.exec_runc(runc, line.runc_args)
    assert record is not None
    from enforcer.shim.plans import patch_for_policy

    root = cfg.registry_root()
    patch = patch_for_policy(str(record["policy"]), cfg.plans_dir, cfg.cache_dir,
                             os.path.join(root, "shim-cache"))
    if patch.get("policy_hash") != record.get("policy_hash"):
        runner.warn(f"policy {record['policy']} changed since container {record['id']} started; "
              "exec gets the current one")
    process_file = flags.get("process")
    if process_file:
        from enforcer.shim.bundle import rewrite_process_file

        rewrite_process_file(process_file, patch, runner.proc)
    else:
        from enforcer.shim.landlock import exec_arguments

        line.runc_args = exec_arguments(line.runc_args, positionals, patch)
        if line.repeated("cap"):
            raise ShimError(f"container {record['id']} runs under policy {record['policy']}: "
                            "exec --cap cannot add capabilities")
        user = flags.get("user")
        if user is not None and patch["user"] is not None and user.split(":")[0] in ("0", "root"):
            raise ShimError(f"container {record['id']} runs under policy {record['policy']}, "
                            f"which names a user: exec --user {user} is refused")
    runner.exec_runc(runc, line.runc_args)
    return APPLY_FAILED  # not reached


def update_container(line: RuncCommandLine, cfg: ShimConfig, runc: str,
                     runner: "Runner") -> int:
    """`runc update` on a policy container may not raise a limit the policy sets.

    The rule is update.py's. Raising is refused (runc is not run); a
    memory+swap total above what the policy allows on top of the new memory
    limit is lowered to it (Docker re-sends its own total with every update).
    Resources on stdin (`-r -`, containerd's way) are read here and handed
    to runc on its stdin, exactly as checked.
    """
    flags, positionals = line.command_flags_and_positionals()
    record = _policy_record(cfg, positionals[0] if positionals else None)
    if record is None:
        runner.exec_runc(runc, line.runc_args)
    assert record is not None
    from enforcer import fastjson
    from enforcer.shim import update
    from enforcer.shim.plans import patch_for_policy

    limits = patch_for_policy(str(record["policy"]), cfg.plans_dir, cfg.cache_dir,
                              os.path.join(cfg.registry_root(), "shim-cache"))["limits"]
    source = flags.get("resources")
    if source is None:  # runc's flags: checked as runc reads them, passed on as they are
        res, data = update.resources_from_flags(flags), None
    elif source == "-":
        data = runner.read_stdin(update.MAX_RESOURCES)
        res = update.parse_resources(data, source)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read(update.MAX_RESOURCES + 1)
        except OSError as e:
            raise ShimError(f"update --resources {source}: {e.strerror}") from None
        res = update.parse_resources(data, source)
    cgroups = record.get("cgroups")
    found = update.check(res, limits, may_change=source is not None,
                         period=update.current_cpu_period(cgroups)
                         if isinstance(cgroups, dict) else None)
    if found.problems:
        raise ShimError(f"container {record['id']} runs under policy {record['policy']}: update "
                        f"to {'; '.join(found.problems)} is above the policy's limits")
    if source is None or source != "-" and not found.changed:
        runner.exec_runc(runc, line.runc_args)
    if found.changed:
        data = fastjson.dumps(res).encode()
        runner.warn(f"memory+swap set to {res['memory']['swap']}: policy {record['policy']} "
                    f"allows {limits['swap']} bytes of swap on top of memory")
    runner.exec_runc(runc, _resources_from_stdin(line), stdin=data)
    return APPLY_FAILED  # not reached


def _resources_from_stdin(line: RuncCommandLine) -> list[str]:
    """runc's arguments with `-r FILE` turned into `-r -` (runc then reads
    the resources the shim checked from its stdin)."""
    args = list(line.runc_args)
    i = line.command_index + 1
    while i < len(args):
        if args[i] == "--":
            break
        name = args[i].lstrip("-")
        if args[i].startswith("-") and name in ("r", "resources"):
            if i + 1 < len(args):
                args[i + 1] = "-"
            i += 2
            continue
        if args[i].startswith("-") and name.split("=", 1)[0] in ("r", "resources"):
            args[i] = args[i].split("=", 1)[0] + "=-"
        i += 1
    return args


def delete(line: RuncCommandLine, cfg: ShimConfig, runc: str, runner: "Runner") -> int:
    from enforcer.shim.record import record_path, remove_record

    root = cfg.registry_root()
    container_id = line.container_id
    try:
        has_record = bool(container_id) and os.path.exists(record_path(root, container_id or ""))
    except ValueError:
        has_record = False
    if not has_record:
        runner.exec_runc(runc, line.runc_args)
    assert container_id is not None
    status = runner.run_child(runc, line.runc_args)
    runc_root = line.global_flags.get("root") or DEFAULT_RUNC_ROOT
    if status == 0 or not os.path.exists(os.path.join(runc_root, container_id, "state.json")):
        remove_record(root, container_id)
    return status


def run_shim(argv: list[str], self_path: str | None, runner: "Runner | None" = None) -> int:
    """The shim's whole job for one runc command line; returns the exit code.

    `self_path` is the executable runc was invoked as (so that a `runc` on
    PATH that is the shim itself is skipped); `runner` does the runc side
    (runner.py): this process by default, the front end under enforcer-shimd.
    """
    runner = runner or LocalRunner()
    if os.environ.get(ACTIVE_ENV):
        raise recursion_error()
    line = parse(argv)
    action = COMMANDS.get(line.command or "", "pass" if line.command is None else "refuse")
    if action == "refuse":
        raise ShimError(refusal(line.command or ""))
    cfg = load_config(line.shim.get("config"))
    if cfg.landlock_helper is None:
        from enforcer.shim.landlock import default_helper

        cfg.landlock_helper = default_helper(self_path)
    runc = find_runc(line.shim.get("runc") or cfg.runc, self_path)
    if line.command in ("create", "run"):
        return start(line, cfg, runc, runner)
    if line.command == "delete":
        return delete(line, cfg, runc, runner)
    if line.command == "exec":
        return exec_in_container(line, cfg, runc, runner)
    if line.command == "update":
        return update_container(line, cfg, runc, runner)
    runner.exec_runc(runc, line.runc_args)
    return APPLY_FAILED  # not reached: exec_runc returns only by raising


def recursion_error() -> ShimError:
    return ShimError(f"started by itself ({ACTIVE_ENV} is set): the configured runc "
                     "is this shim; point --runc or \"runc\" in the shim config at the real runc")


def refusal(command: str) -> str:
    if command in COMMANDS:  # "refuse": restore
        return (f"runc command '{command}' is refused: it starts a container from a "
                "checkpoint image, which the policy cannot be merged into (docs/shim.md, "
                "\"Which runc commands\")")
    return (f"unknown runc command '{command}' is refused: the shim passes on only the "
            "commands it knows (docs/shim.md, \"Which runc commands\")")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        return run_shim(argv, sys.argv[0] if sys.argv and sys.argv[0] else None)
    except ShimError as e:
        message = f"{PROG}: {e}"
        os.write(2, f"{message}\n".encode())
        from enforcer.shim.runclog import log_target, write_runc_log

        target = log_target(argv)
        if target is not None:
            write_runc_log(target[0], target[1], message)
        return APPLY_FAILED


if __name__ == "__main__":
    sys.exit(main())
