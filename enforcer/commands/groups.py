"""enforcer groups [@NAME]: the syscall groups a policy can name as @name."""

from __future__ import annotations

import argparse

HELP = "list the syscall groups (@name) and their members"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", nargs="?", help="show one group with its members expanded (e.g. @network)")
    p.add_argument("--expand", action="store_true", help="list every group's members with nested groups expanded")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    import json
    import sys

    from enforcer import exitcodes
    from enforcer.policy import groups as groups_mod
    from enforcer.policy import syscall_table, syscalls

    names = list(groups_mod.GROUPS)
    if args.group:
        wanted = args.group.removeprefix("@")
        if wanted not in groups_mod.GROUPS:
            import difflib

            hint = difflib.get_close_matches(wanted, names, n=1)
            suffix = f"; did you mean @{hint[0]}?" if hint else ""
            print(f"enforcer groups: no group @{wanted}{suffix}", file=sys.stderr)
            return exitcodes.USAGE
        names = [wanted]
    native = syscalls.native_arch()
    newer = syscalls.newer_than_libseccomp(native)
    if args.json:
        out = [{
            "name": "@" + n,
            "help": groups_mod.GROUPS[n].help,
            "members": list(groups_mod.GROUPS[n].members),
            "syscalls": groups_mod.expand(n),
            # compiled by number from enforcer's table on this architecture
            "newer_than_libseccomp": [m for m in groups_mod.expand(n) if m in newer],
        } for n in names]
        print(json.dumps(out, indent=2))
        return exitcodes.OK
    for n in names:
        g = groups_mod.GROUPS[n]
        print(f"@{n}  {g.help}")
        members = groups_mod.expand(n) if (args.expand or args.group) else list(g.members)
        line = "    "
        for m in members:
            # Mark members that do not exist on this host's architecture,
            # and those libseccomp does not know (compiled by number).
            word = m if m.startswith("@") or syscalls.exists_on(m, native) else f"({m})"
            word += "*" if m in newer else ""
            if len(line) + len(word) > 78:
                print(line.rstrip())
                line = "    "
            line += word + " "
        print(line.rstrip())
        print()
    print(f"Names in parentheses do not exist on {native}; a policy for {native} leaves them out.")
    print(f"Names marked * are newer than libseccomp {syscalls.libseccomp_version()}: enforcer "
          f"compiles them by number from its syscall table (kernel {syscall_table.kernel_version()}).")
    return exitcodes.OK
