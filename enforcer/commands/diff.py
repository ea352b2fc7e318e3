"""enforcer diff OLD NEW: what NEW allows that OLD does not, and the reverse.

Exit status follows diff(1): 0 when the effective policies are the same,
1 when they differ, 2 on a usage error or an invalid policy.
"""

from __future__ import annotations

import argparse

HELP = "show what one policy allows that another does not"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", metavar="OLD", help="policy file or shipped policy name")
    p.add_argument("new", metavar="NEW", help="policy file or shipped policy name")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    import json

    from enforcer import exitcodes
    from enforcer.commands._output import print_policy_errors
    from enforcer.errors import PolicyErrors
    from enforcer.policy.diff import diff_policies
    from enforcer.policy.lint import lint
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
        print(json.dumps({
            "old": {"policy": args.old, "name": old.name, "exposure": score_old},
            "new": {"policy": args.new, "name": new.name, "exposure": score_new},
            "differences": [d.__dict__ for d in differences],
        }, indent=2))
    else:
        print(f"--- OLD {args.old} ({old.name}): exposure {score_old:.1f}/10")
        print(f"+++ NEW {args.new} ({new.name}): exposure {score_new:.1f}/10")
        for d in differences:
            print(d)
        if not differences:
            print("no differences in effect")
    return exitcodes.INVALID if differences else exitcodes.OK
