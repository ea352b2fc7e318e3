"""enforcer schema: print the JSON Schema of the policy format (version 1)."""

from __future__ import annotations

import argparse

HELP = "print the JSON Schema of the policy format"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", action="store_true", help="print where the schema file is instead")


def main(args: argparse.Namespace) -> int:
    import sys
    from importlib import resources

    from enforcer import exitcodes

    schema = resources.files("enforcer.policy").joinpath("schema.json")
    if args.path:
        print(schema)
    else:
        sys.stdout.write(schema.read_text(encoding="utf-8"))
    return exitcodes.OK
