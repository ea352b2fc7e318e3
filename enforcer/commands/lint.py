"""enforcer lint POLICY: an exposure score from 0 (tight) to 10 (open).

Each finding shows its weight and its points, its share of the score (the
points add up to the score); then the three changes that lower the score
most, each as one line of YAML. docs/lint.md describes the scoring.
"""

from __future__ import annotations

import argparse

HELP = "score a policy's exposure from 0 (tight) to 10 (open)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policies", nargs="+", metavar="POLICY", help="policy files or shipped policy names")
    p.add_argument("--fail-above", type=float, metavar="N",
                   help="exit 1 when a score is above N (for CI)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _where(loc: object) -> str:
    return str(loc) if loc is not None else "-"


def _fixes(ids: tuple[str, ...]) -> str:
    shown = ", ".join(ids[:3])
    return shown + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def main(args: argparse.Namespace) -> int:
    import json
    import sys

    from enforcer import exitcodes
    from enforcer.commands._output import print_policy_errors
    from enforcer.errors import PolicyErrors
    from enforcer.policy.lint import lint, suggest
    from enforcer.policy.loader import load_policy

    if args.fail_above is not None and not 0 <= args.fail_above <= 10:
        print("enforcer lint: --fail-above takes a score from 0 to 10", file=sys.stderr)
        return exitcodes.USAGE
    status = exitcodes.OK
    reports = []
    for spec in args.policies:
        try:
            policy = load_policy(spec)
        except PolicyErrors as e:
            print_policy_errors(spec, e)
            status = exitcodes.INVALID
            continue
        report = lint(policy)
        suggestions = suggest(policy, report)
        over = args.fail_above is not None and report.score > args.fail_above
        if over:
            status = exitcodes.INVALID
        if args.json:
            reports.append({
                "policy": spec, "name": report.policy, "score": report.score, "rating": report.rating,
                "fail_above": args.fail_above, "over_threshold": over,
                "findings": [{"id": f.id, "weight": f.weight, "points": f.points,
                              "message": f.message, "origin": _where(f.origin)}
                             for f in report.findings],
                "set_next": [{"yaml": n.yaml, "score_after": n.score_after, "fixes": list(n.fixes)}
                             for n in suggestions],
                "contradictions": [{"id": f.id, "message": f.message, "origin": _where(f.origin)}
                                   for f in report.contradictions],
                "shadowed": [{"id": f.id, "message": f.message, "origin": _where(f.origin)}
                             for f in report.shadowed],
            })
            continue
        print(f"{spec}: exposure {report.score:.1f}/10 ({report.rating})")
        if report.findings:
            print(f"  {'points':>6}  {'weight':>6}  finding")
            for f in report.findings:
                print(f"  {f.points:>6.2f}  {f.weight:>6.2f}  {f.message}  [{f.id}] {_where(f.origin)}")
            print(f"  {report.score:>6.2f}          = the score (docs/lint.md: how weights "
                  "combine and what each finding means)")
        if suggestions:
            print("  set this next (in this policy, or in one that extends it):")
            width = max(len(n.yaml) for n in suggestions)
            for n in suggestions:
                print(f"    {report.score:.1f} -> {n.score_after:.1f}  {n.yaml:<{width}}  "
                      f"fixes {_fixes(n.fixes)}")
        for title, items in (("contradictions", report.contradictions), ("shadowed rules", report.shadowed)):
            if items:
                print(f"  {title}:")
                for f in items:
                    print(f"    {_where(f.origin)}: {f.message}")
        if over:
            print(f"  score {report.score:.1f} is above --fail-above {args.fail_above:g}")
    if args.json:
        print(json.dumps(reports, indent=2))
    return status
