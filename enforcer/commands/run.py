"""`enforcer run`: run a command under a policy.

    enforcer run [--policy NAME|FILE] [--plan PLANFILE] [--mode audit]
                 [--exec] [--name ID] [--summary[=SECONDS]] -- CMD [ARGS...]

The start path imports only the standard library, enforcer.plan,
enforcer.registry, enforcer.apply and (for --policy) the Plan store
(enforcer/planstore.py): no PyYAML, libseccomp, psutil or
prometheus_client, and never the compiler (lint-imports and
tests/integration/test_run_imports.py check). A policy missing from the
store is compiled by enforcer/confined_compile.py in a forked child that
holds no capability and cannot write files; this process only verifies
and stores the Plan it hands back.

`parse_argv` is a small hand parser so the common case need not build an
argparse parser; `add_arguments` describes the same options for --help.
"""

from __future__ import annotations

import sys

from enforcer import exitcodes

TYPE_CHECKING = False  # no `typing`/`dataclasses` on the start path
if TYPE_CHECKING:
    from typing import Any

HELP = "run a command under a policy"
RAW_ARGS = True  # cli.py hands us argv untouched; we parse it (fast path)

USAGE = ("usage: enforcer run [--policy NAME|FILE] [--plan PLANFILE] [--mode audit] "
         "[--exec] [--name ID] [--summary[=SECONDS]] -- CMD [ARGS...]")

HELP_TEXT = """Run CMD under a policy (see docs/run.md).

options:
  --policy, -p NAME|FILE  shipped policy name or YAML file (default: sandbox, a
                          sandbox on the host; see policies/README.md)
  --plan PLANFILE         a compiled Plan (enforcer compile -o) instead of --policy
  --mode audit|enforce    audit: block nothing, log every would-be violation
  --exec                  no supervisor: apply and exec in place (container entrypoint)
  --name ID               workload id in the registry (default run-PID-RANDOM)
  --summary[=SECONDS]     also print the syscalls the policy refused while the
                          workload runs, every SECONDS (default 10) when they
                          changed (they are always printed at exit)

exit status: the workload's own; 128+N if it was killed by signal N;
125 policy not applied (the workload did not run); 126 cannot execute;
127 command not found; 2 bad command line."""


# The policy applied when none is named: a sandbox on the host, also for a
# root caller. (`default` is the container policy: it assumes a container
# runtime's own root file system and pid namespace; see policies/README.md.)
DEFAULT_POLICY = "sandbox"


class RunArgs:
    def __init__(self, policy: str = DEFAULT_POLICY, plan: str | None = None,
                 mode: str | None = None, exec_: bool = False, name: str | None = None,
                 command: list[str] | None = None, summary: float | None = None) -> None:
        self.policy = policy
        self.plan = plan
        self.mode = mode
        self.exec_ = exec_
        self.name = name
        self.command: list[str] = [] if command is None else command
        self.summary = summary  # seconds between refusal summaries while it runs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunArgs):
            return NotImplemented
        return vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"RunArgs({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class UsageError(Exception):
    pass


_VALUED = {"--policy": "policy", "-p": "policy", "--plan": "plan", "--mode": "mode",
           "--name": "name"}


def parse_argv(argv: list[str]) -> RunArgs:
    args = RunArgs()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            args.command = argv[i + 1:]
            break
        if a in ("-h", "--help"):
            raise UsageError("help")
        if a == "--exec":
            args.exec_ = True
        elif a == "--summary" or a.startswith("--summary="):
            args.summary = _summary_seconds(a.partition("=")[2] or str(DEFAULT_SUMMARY_EVERY))
        elif a.split("=", 1)[0] in _VALUED:
            key, eq, value = a.partition("=")
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"{a} needs a value")
                value = argv[i]
            setattr(args, _VALUED[key], value)
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a!r}")
        else:
            args.command = argv[i:]  # CMD without "--"
            break
        i += 1
    if not args.command:
        raise UsageError("no command given (put it after --)")
    if args.mode not in (None, "audit", "enforce"):
        raise UsageError(f"--mode must be audit or enforce, not {args.mode!r}")
    if args.name is not None and (not args.name or "/" in args.name or args.name.startswith(".")):
        raise UsageError(f"--name {args.name!r}: use letters, digits, '-', '_' or '.'")
    return args


DEFAULT_SUMMARY_EVERY = 10.0


def _summary_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0.1 <= seconds <= 86400:
        raise UsageError(f"--summary={text}: give seconds between 0.1 and 86400")
    return seconds


def add_arguments(p: Any) -> None:
    p.add_argument("--policy", "-p", default=DEFAULT_POLICY,
                   help=f"shipped policy name or YAML file (default: {DEFAULT_POLICY}, a "
                        "sandbox on the host)")
    p.add_argument("--plan", help="a compiled Plan file (enforcer compile -o) instead of --policy")
    p.add_argument("--mode", choices=["audit", "enforce"],
                   help="audit: block nothing, log every would-be violation")
    p.add_argument("--exec", action="store_true",
                   help="no supervisor: apply and exec in place (container entrypoint)")
    p.add_argument("--name", help="workload id in the registry (default run-PID-RANDOM)")
    p.add_argument("--summary", metavar="SECONDS", nargs="?", const=DEFAULT_SUMMARY_EVERY,
                   type=float, help="print the refused syscalls every SECONDS while it runs")
    p.add_argument("argv", nargs="+", help="-- CMD [ARGS...]")


class PlanSource:
    """The Plan for `args`, and beforehand a guess of its namespaces.

    The supervisor asks `guess_namespaces()` before its fork (a pid
    namespace must exist before it) and `load()` after it. The guess is the
    cache's hint for a --policy (enforcer/cachehint.py), none for a
    --plan file; when the loaded Plan says otherwise, the hint is set right
    for the next start."""

    def __init__(self, args: RunArgs) -> None:
        self.args = args
        self.guessed: tuple[str, ...] | None | bool = False  # False: not asked

    def guess_namespaces(self) -> tuple[str, ...] | None:
        guess = None
        if self.args.plan is None:
            from enforcer.cachehint import read_namespaces

            guess = read_namespaces(self.args.policy, self.args.mode)
        self.guessed = guess
        return guess

    def load(self) -> Any:
        plan = load_plan(self.args)
        if self.args.plan is None and self.guessed is not False \
                and self.guessed != plan.namespaces:
            from enforcer.cachehint import write_namespaces

            write_namespaces(self.args.policy, self.args.mode, plan.namespaces)
        return plan


def load_plan(args: RunArgs) -> Any:
    from enforcer.errors import PlanError

    if args.plan is not None:
        from enforcer.plan import load_plan_file

        plan = load_plan_file(args.plan)
        if args.mode is not None and plan.mode != args.mode:
            raise PlanError(f"{args.plan}: compiled for mode {plan.mode}, not {args.mode}; "
                            f"compile it with --mode {args.mode}")
        return plan
    # A Plan from the store; a miss is compiled in a confined, unprivileged
    # child (no capability, no file-system writes), never in this process.
    from enforcer.planstore import lookup, resolve_spec

    top = resolve_spec(args.policy)
    _found, stored = lookup(top, mode=args.mode)
    if stored is not None:
        return stored
    from enforcer.confined_compile import plan_for_policy_file

    return plan_for_policy_file(top, mode=args.mode)


def run(args: RunArgs) -> int:
    from enforcer.errors import ConfinedCompileError, EnforcerError, PolicyErrors

    try:
        if args.exec_:
            from enforcer.apply.supervise import exec_in_place

            return exec_in_place(load_plan(args), args.command, args.name)
        from enforcer.apply.supervise import supervise

        # The supervisor forks the child before it loads the Plan, so that
        # loading the Plan overlaps with the kernel's cgroup work; the
        # cache's hint says beforehand whether that fork must go into a pid
        # namespace.
        source = PlanSource(args)
        return supervise(source.load, args.command, args.name,
                         guess_namespaces=source.guess_namespaces, summary_every=args.summary)
    except PolicyErrors as e:
        return _policy_not_applied([str(err) for err in e.errors])
    except ConfinedCompileError as e:
        if e.kind == "policy":
            return _policy_not_applied(e.lines)
        print(f"enforcer run: policy: {chr(10).join(e.lines)}", file=sys.stderr)
        return exitcodes.APPLY_FAILED
    except EnforcerError as e:
        step = "plan" if type(e).__name__ == "PlanError" else "policy"
        print(f"enforcer run: {step}: {e}", file=sys.stderr)
        return exitcodes.APPLY_FAILED


def _policy_not_applied(errors: list[str]) -> int:
    for err in errors:
        print(err, file=sys.stderr)
    print("enforcer run: policy: not applied; the workload did not run", file=sys.stderr)
    return exitcodes.APPLY_FAILED


def main(args: Any) -> int:
    argv = args.argv if hasattr(args, "argv") else []
    try:
        parsed = parse_argv(list(argv))
    except UsageError as e:
        if str(e) == "help":
            print(USAGE)
            print(HELP_TEXT)
            return exitcodes.OK
        print(f"enforcer run: {e}\n{USAGE}", file=sys.stderr)
        return exitcodes.USAGE
    return run(parsed)


def fast_main(argv: list[str]) -> int:
    """Entry for `python -m enforcer.commands.run ...` and cli's fast path."""
    class _A:
        pass

    a = _A()
    a.argv = argv  # type: ignore[attr-defined]
    return main(a)


if __name__ == "__main__":
    sys.exit(fast_main(sys.argv[1:]))
