"""enforcer explain POLICY: the effective policy, each value with its origin."""

from __future__ import annotations

import argparse

HELP = "show the effective policy and where each value came from"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", metavar="POLICY", help="a policy file or shipped policy name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--mode", choices=("enforce", "audit"), help="explain with this mode instead")
    p.add_argument("--all-syscalls", action="store_true",
                   help="list every syscall of this architecture with its action, not only the rules")


# Values longer than this wrap onto continuation rows (a policy keeping
# fourteen capabilities made a row of 250 characters).
VALUE_WIDTH = 60


def _wrap_column(rows: list[list[str]], column: int, width: int) -> list[list[str]]:
    """Rows whose cell in `column` is longer than `width`, split into a row
    and continuation rows (the other cells empty), at ", " or spaces."""
    import textwrap

    out: list[list[str]] = []
    for row in rows:
        pieces = textwrap.wrap(row[column], width=width, break_long_words=False,
                               break_on_hyphens=False) or [""]
        out.append(row[:column] + [pieces[0]] + row[column + 1:])
        for piece in pieces[1:]:
            out.append([""] * column + ["  " + piece] + [""] * (len(row) - column - 1))
    return out


def _table(rows: list[list[str]], headers: list[str]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r).rstrip() for r in rows]
    return out


def main(args: argparse.Namespace) -> int:
    import json

    from enforcer import exitcodes
    from enforcer.policy import explain, syscalls
    from enforcer.policy.lint import syscall_counts, syscall_state
    from enforcer.policy.loader import load_policy

    policy = load_policy(args.policy, mode=args.mode)
    if args.json:
        print(json.dumps(explain.as_json(policy), indent=2))
        return exitcodes.OK
    lines = [f"policy {policy.name}: {policy.description}".rstrip(": "), "built from (parents first):"]
    lines += [f"  {path}  sha256:{digest[:16]}" for path, digest in policy.sources]
    lines.append("")
    lines += _table(_wrap_column([list(r) for r in explain.field_rows(policy)], 1, VALUE_WIDTH),
                    ["field", "value", "from"])
    lines.append("")
    rules = explain.syscall_rows(policy)
    # The vocabulary of check, lint and diff: every syscall of the native
    # architecture, by what the filter does with it.
    arches = policy.syscalls.architectures
    default_from = policy.origins.get("syscalls.default")
    lines.append(f"syscalls: {syscall_counts(policy)}"
                 + (f"; filter architectures: {', '.join(arches)}" if arches else ""))
    lines.append(f"  a syscall no rule names: {policy.syscalls.default_action} "
                 f"(syscalls.default, {default_from or explain.BUILTIN})")
    if args.all_syscalls:
        native = syscalls.native_arch()
        names = [n for n in syscalls.all_names() if syscalls.exists_on(n, native)]
        table = [[n, syscall_state(policy, n)[0]] for n in names]
        lines += _table(table, ["syscall", "state"])
    else:
        table = [[r["syscall"], r["action"], r["conditions"] or "-", r["via"], r["origin"]] for r in rules]
        lines += _table(table, ["syscall", "action", "conditions", "via", "from"])
    print("\n".join(lines))
    return exitcodes.OK
