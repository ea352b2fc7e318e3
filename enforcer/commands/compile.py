"""`enforcer compile FILE|NAME [-o OUT] [--mode audit] [--format plan|bpf|pfc]`

Prints the compiled Plan as JSON (or writes it to OUT), and the compiler's
notes on stderr, one per line. `--format bpf` writes the raw seccomp
program (struct sock_filter[]), `--format pfc` libseccomp's readable form
(the same as `enforcer export --format bpf|pfc`). `--cache` also stores the
Plan in the Plan cache so the next `enforcer run` starts without compiling.
"""

from __future__ import annotations

import argparse
import sys

from enforcer import exitcodes
from enforcer.commands._output import write_output, write_seccomp_export

HELP = "compile a policy into a Plan (seccomp BPF, caps, mounts, cgroups)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", metavar="FILE|NAME", help="a policy file or a shipped policy's name")
    p.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of stdout")
    p.add_argument("--mode", choices=("enforce", "audit"),
                   help="compile in this mode instead of the policy's own")
    p.add_argument("--format", choices=("plan", "bpf", "pfc"), default="plan",
                   help="plan (JSON, default), bpf (raw filter bytes) or pfc (readable filter)")
    p.add_argument("--cache", action="store_true",
                   help="also store the Plan in the Plan cache (see docs/compile.md)")


def main(args: argparse.Namespace) -> int:
    from enforcer.compile import compile_policy
    from enforcer.compile.cache import compile_and_store
    from enforcer.planstore import resolve_spec
    from enforcer.policy.loader import load_policy

    if args.format == "plan" and args.cache:
        plan = compile_and_store(args.policy, mode=args.mode)
    elif args.format == "plan":
        plan = compile_policy(load_policy(resolve_spec(args.policy), mode=args.mode))
    else:
        policy = load_policy(resolve_spec(args.policy), mode=args.mode)
        return write_seccomp_export("compile", policy, args.format, args.mode, args.output)

    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    write_output((plan.to_json() + "\n").encode(), args.output)
    return exitcodes.OK
