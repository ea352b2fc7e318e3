"""enforcer diff OLD NEW: what NEW allows that OLD does not, and the reverse.

One line per change, grouped (syscalls, capabilities, user, filesystem,
limits, landlock, env, namespaces, scope), marked + (only NEW), - (only
OLD) or ~ (changed), wrapped to the terminal (100 columns into a pipe); `--json` for tools.
Exit status follows diff(1): 0 when the effective policies are the same,
1 when they differ, 2 on a usage error or an invalid policy (docs/diff.md).
"""

from __future__ import annotations

import argparse

HELP = "show what one policy allows that another does not"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", metavar="OLD", help="policy file or shipped policy name")
    p.add_argument("new", metavar="NEW", help="policy file or shipped policy name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--width", type=int, default=None, metavar="N",
                   help="wrap lines at N columns (default: the terminal's width; 100 into a pipe)")


def main(args: argparse.Namespace) -> int:
    import json

    from enforcer import exitcodes
    from enforcer.commands._output import print_policy_errors
    from enforcer.errors import PolicyErrors
    from enforcer.policy.diff import diff_policies, review_lines
    from enforcer.policy.lint import lint, syscall_counts
    from enforcer.policy.loader import load_policy

    policies = []
    for spec in (args.old, args.new):
        try:
            policies.append(load_policy(spec))
        except PolicyErrors as e:
            print_policy_errors(spec, e)
            return exitcodes.USAGE
    old, new = policies
    differences = diff_policies(old, new)
    score_old, score_new = lint(old).score, lint(new).score
    if args.json:
        summary: dict[str, int] = {}
        for d in differences:
            summary[d.group] = summary.get(d.group, 0) + 1
        print(json.dumps({
            "old": {"policy": args.old, "name": old.name, "exposure": score_old,
                    "syscalls": syscall_counts(old).__dict__},
            "new": {"policy": args.new, "name": new.name, "exposure": score_new,
                    "syscalls": syscall_counts(new).__dict__},
            "same": not differences,
            "summary": summary,
            "differences": [d.as_dict() for d in differences],
        }, indent=2))
    else:
        print(f"--- OLD {args.old} ({old.name}): exposure {score_old:.1f}/10")
        print(f"+++ NEW {args.new} ({new.name}): exposure {score_new:.1f}/10")
        a, b = syscall_counts(old), syscall_counts(new)
        heading = (f"syscalls: allowed {a.allowed} -> {b.allowed}, under argument checks "
                   f"{a.conditional} -> {b.conditional}, denied {a.denied} -> {b.denied} "
                   f"(of {a.known}, {a.arch})")
        print("\n".join(review_lines(differences, _width(args.width), {"syscalls": heading})))
    return exitcodes.INVALID if differences else exitcodes.OK


def _width(asked: int | None) -> int:
    """--width, else the terminal's width, else 100 (a pipe or a file:
    the same output wherever it runs)."""
    import shutil
    import sys

    if asked is not None:
        return asked
    if sys.stdout.isatty():
        return shutil.get_terminal_size((100, 24)).columns
    return 100
