"""`enforcer shim RUNC-ARGS...`: the OCI runtime shim (same as `enforcer-runc`).

Takes runc's whole command line, so the CLI hands it over unparsed
(RAW_ARGS). For the lowest start latency register `enforcer-runc` or a
launcher from `python -m enforcer.shim.launcher` instead (docs/shim.md).
"""

from __future__ import annotations

import argparse

HELP = "OCI runtime shim: apply a policy to a bundle, then exec runc"
RAW_ARGS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("argv", nargs=argparse.REMAINDER,
                   help="[--policy NAME] [--runc PATH] [--config FILE] then runc's arguments")


def main(args: argparse.Namespace) -> int:
    # The shim's own entry point: the same one-line refusals, also in runc's --log.
    from enforcer.shim.main import main as shim_main

    return shim_main(list(args.argv))
