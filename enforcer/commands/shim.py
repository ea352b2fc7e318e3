"""`enforcer shim RUNC-ARGS...`: the OCI runtime shim (same as `enforcer-runc`).

Takes runc's whole command line, so the CLI hands it over unparsed
(RAW_ARGS). For the lowest start latency register `enforcer-runc` or a
launcher from `python -m enforcer.shim.launcher` instead (docs/shim.md).
"""

from __future__ import annotations

import argparse
import sys

HELP = "OCI runtime shim: apply a policy to a bundle, then exec runc"
RAW_ARGS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("argv", nargs=argparse.REMAINDER,
                   help="[--policy NAME] [--runc PATH] [--config FILE] then runc's arguments")


def main(args: argparse.Namespace) -> int:
    from enforcer.shim.main import run_shim
    from enforcer.shim.runner import PROG
    from enforcer.shim.errors import ShimError

    try:
        return run_shim(list(args.argv), sys.argv[0] if sys.argv else None)
    except ShimError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 125
