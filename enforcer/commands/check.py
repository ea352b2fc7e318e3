"""enforcer check FILE...: validate policies (exit 0 valid, 1 invalid, 2 usage)."""

from __future__ import annotations

import argparse

HELP = "validate policy files (exit 0 valid, 1 invalid)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policies", nargs="+", metavar="POLICY",
                   help="policy files or shipped policy names")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def main(args: argparse.Namespace) -> int:
    from enforcer import exitcodes
    from enforcer.commands._output import print_policy_errors
    from enforcer.errors import PolicyErrors
    from enforcer.policy.lint import syscall_counts
    from enforcer.policy.loader import load_policy

    status = exitcodes.OK
    for spec in args.policies:
        try:
            policy = load_policy(spec)
        except PolicyErrors as e:
            print_policy_errors(spec, e)
            status = exitcodes.INVALID
            continue
        if not args.quiet:
            # The syscall counts of explain, lint and diff (one vocabulary),
            # not the number of rules: one syscall may have many.
            n = len(policy.sources)
            print(f"{spec}: ok ({policy.name}: {syscall_counts(policy)}; "
                  f"{n} file{'s' if n != 1 else ''})")
    return status
