"""`enforcer compile FILE|NAME [-o OUT] [--mode audit] [--format plan|bpf|pfc]`

Prints the compiled Plan as JSON (or writes it to OUT), and the compiler's
notes on stderr, one per line. `--format bpf` writes the raw seccomp
program (struct sock_filter[]), `--format pfc` libseccomp's readable form
(the same as `enforcer export --format bpf|pfc`). `--cache` also stores the
Plan in the Plan cache so the next `enforcer run` starts without compiling.
"""

from __future__ import annotations

import argparse
import os
import sys

from enforcer import exitcodes

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


def _write(data: bytes, output: str | None) -> None:
    if output is None or output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    tmp = f"{output}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, output)


def main(args: argparse.Namespace) -> int:
    from enforcer.compile import compile_policy
    from enforcer.compile.cache import compile_and_store, resolve_spec
    from enforcer.policy.loader import load_policy

    if args.format == "plan" and args.cache:
        plan = compile_and_store(args.policy, mode=args.mode)
    elif args.format == "plan":
        plan = compile_policy(load_policy(resolve_spec(args.policy), mode=args.mode))
    else:
        from enforcer.compile.seccomp import export_bpf, export_pfc
        from enforcer.policy.model import Mode

        policy = load_policy(resolve_spec(args.policy), mode=args.mode)
        mode = Mode(args.mode) if args.mode else None
        if args.format == "bpf":
            if args.output is None and sys.stdout.isatty():
                print("enforcer compile: refusing to write binary BPF to a terminal; use -o FILE",
                      file=sys.stderr)
                return exitcodes.USAGE
            _write(export_bpf(policy, mode), args.output)
        else:
            _write(export_pfc(policy, mode).encode(), args.output)
        return exitcodes.OK

    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    _write((plan.to_json() + "\n").encode(), args.output)
    return exitcodes.OK
