"""enforcer-runc: an OCI runtime that applies a policy, then becomes runc.

    enforcer-runc [--policy NAME] [--runc PATH] [--config FILE] RUNC-ARGS...

Every runc command and flag passes through unchanged. `create` and `run`
first merge the selected policy into the bundle's config.json (see
merge.py) and register the container for the monitor; `delete` removes
that record. Everything else execs runc at once.

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

from enforcer.shim.cmdline import RuncCommandLine, parse
from enforcer.shim.config import ShimConfig, load_config
from enforcer.shim.errors import ShimError
from enforcer.shim.runner import ACTIVE_ENV, PROG, LocalRunner

TYPE_CHECKING = False  # `typing` costs ms on the start path; only checkers need it
if TYPE_CHECKING:
    from enforcer.shim.runner import Runner

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

    from enforcer import fastjson

    try:
        out = subprocess.run([runc] + line.global_args + ["state", container_id],
                             capture_output=True, timeout=10, check=True).stdout
        pid = fastjson.loads(out).get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _merged_config(line: RuncCommandLine, cfg: ShimConfig, runc: str, container_id: str,
                   bundle: str, runner: "Runner") -> tuple[dict[str, object], dict[str, object] | None]:
    """The bundle's config with the selected policy merged in, and the patch used.

    Nothing is written here: every refusal happens before the bundle changes.
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
    merge_patch(config, patch, bundle, proc=runner.proc, landlock_helper=cfg.landlock_helper)
    seccomp = patch["seccomp"]
    if isinstance(seccomp, dict) and seccomp.get("flags"):
        from enforcer.shim.runcfeatures import fit_seccomp_to_runc, runc_features

        fit_seccomp_to_runc(config, runc_features(runc, shim_cache), cfg.require_seccomp_flags)
    return config, patch


def start(line: RuncCommandLine, cfg: ShimConfig, runc: str, runner: "Runner") -> int:
    """create / run: merge, register, write config.json, then runc (exec or child)."""
    from enforcer.shim.bundle import write_config
    from enforcer.shim.record import cgroups_from_config, cgroups_of_pid, make_record, \
        remove_record, write_record

    flags, positionals = line.command_flags_and_positionals()
    if not positionals:
        runner.exec_runc(runc, line.runc_args)  # runc prints its own usage error
    container_id = positionals[0]
    bundle = os.path.abspath(flags.get("bundle") or ".")
    config, patch = _merged_config(line, cfg, runc, container_id, bundle, runner)
    root = cfg.registry_root()
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
        runner.remove_record_on_exit(root, record)
        runner.exec_runc(runc, line.runc_args)
    try:
        status = runner.run_child(runc, line.runc_args)
    except ShimError:
        remove_record(root, container_id)
        raise
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


def _bytes(value: str) -> int:
    """runc's --memory syntax: a number with an optional k/m/g/t/p (powers of 1024)."""
    text = value.strip().lower().removesuffix("b")
    scale = 1
    if text and text[-1] in "kmgtp":
        scale = 1024 ** ("kmgtp".index(text[-1]) + 1)
        text = text[:-1]
    try:
        return int(float(text) * scale)
    except ValueError:
        raise ShimError(f"update: cannot read {value!r} as a size") from None


def update_container(line: RuncCommandLine, cfg: ShimConfig, runc: str,
                     runner: "Runner") -> int:
    """`runc update` on a policy container may not raise a limit above the policy's.

    The update is refused (not clamped: runc gets what the caller wrote or
    nothing) when memory, memory+swap, pids or the CPU quota/period ratio
    would end up above, or unlimited where, the policy sets a limit.
    """
    flags, positionals = line.command_flags_and_positionals()
    record = _policy_record(cfg, positionals[0] if positionals else None)
    if record is None:
        runner.exec_runc(runc, line.runc_args)
    assert record is not None
    from enforcer import fastjson
    from enforcer.shim.plans import patch_for_policy

    limits = patch_for_policy(str(record["policy"]), cfg.plans_dir, cfg.cache_dir,
                              os.path.join(cfg.registry_root(), "shim-cache"))["limits"]
    asked: dict[str, int | None] = {}
    if "resources" in flags:
        source = flags["resources"]
        try:
            if source == "-":
                raise ShimError("update -r - (resources on stdin) is refused for a policy "
                                "container: pass a file")
            with open(source, "rb") as f:
                res = fastjson.loads(f.read())
        except (OSError, ValueError) as e:
            raise ShimError(f"update --resources {source}: {e}") from None
        if not isinstance(res, dict):
            raise ShimError(f"update --resources {source}: expected a JSON object")
        memory, pids, cpu = (res.get(k) or {} for k in ("memory", "pids", "cpu"))
        asked.update(memory=memory.get("limit"), swap=memory.get("swap"),
                     pids=pids.get("limit"), cpu_quota=cpu.get("quota"),
                     cpu_period=cpu.get("period"))
    for flag, key in (("memory", "memory"), ("memory-swap", "swap")):
        if flag in flags:
            asked[key] = _bytes(flags[flag])
    for flag, key in (("pids-limit", "pids"), ("cpu-quota", "cpu_quota"),
                      ("cpu-period", "cpu_period")):
        if flag in flags:
            try:
                asked[key] = int(flags[flag])
            except ValueError:
                raise ShimError(f"update --{flag}: {flags[flag]!r} is not a number") from None

    def over(value: int | None, limit: int | None) -> bool:
        return limit is not None and value is not None and (value <= 0 or value > limit)

    swap_limit = None if limits["memory"] is None or limits["swap"] is None \
        else limits["memory"] + limits["swap"]
    problems = [f"{name} {asked[key]}" for name, key, limit in (
        ("memory", "memory", limits["memory"]), ("memory+swap", "swap", swap_limit),
        ("pids", "pids", limits["pids"])) if over(asked.get(key), limit)]
    quota = asked.get("cpu_quota")
    if limits["cpu_quota"] is not None and quota is not None:
        period = asked.get("cpu_period") or limits["cpu_period"]
        if quota <= 0 or quota * limits["cpu_period"] > limits["cpu_quota"] * period:
            problems.append(f"cpu quota {quota}/{period}")
    if problems:
        raise ShimError(f"container {record['id']} runs under policy {record['policy']}: "
                        f"update to {', '.join(problems)} is above the policy's limits")
    runner.exec_runc(runc, line.runc_args)
    return APPLY_FAILED  # not reached


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
        raise ShimError(f"started by itself ({ACTIVE_ENV} is set): the configured runc "
                        "is this shim; point --runc or \"runc\" in the shim config at the real runc")
    line = parse(argv)
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
