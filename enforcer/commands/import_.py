"""`enforcer import FILE [--caps CAP,...] [-o OUT.yaml]`

Reads a Docker/OCI seccomp JSON profile and writes an equivalent YAML
policy (docs/import.md). includes/excludes are resolved against `--caps`
(Docker's default capability set unless given), the native architecture
and the running kernel (`--kernel` to choose another). What was left out
(names libseccomp does not know here, flags that only loosen) is said on
stderr and in the YAML's header comment.

An unknown action, architecture, operator or field is an error that names
its JSON path; nothing is written then. With -o the policy is checked by
loading it before it is put in place.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

from enforcer import exitcodes

HELP = "turn a Docker/OCI seccomp JSON profile into a YAML policy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", metavar="FILE", help="a Docker or OCI seccomp JSON profile")
    p.add_argument("-o", "--output", metavar="OUT.yaml", help="write here instead of stdout")
    p.add_argument("--caps", metavar="CAP,...", default=None,
                   help="capabilities to resolve includes/excludes against "
                        "(default: Docker's default set; '' for none)")
    p.add_argument("--kernel", metavar="X.Y", default=None,
                   help="kernel version for minKernel (default: the running kernel)")
    p.add_argument("--arch", default=None,
                   help="architecture (libseccomp name) to resolve for (default: native)")
    p.add_argument("--name", default=None,
                   help="the policy's name (default: from OUT.yaml, else from FILE)")


def _check_loads(text: str, name: str) -> None:
    """Load the generated YAML with the real loader: never write a policy
    that `enforcer check` would refuse."""
    from enforcer.policy.loader import load_policy

    from enforcer.errors import PolicyErrors
    from enforcer.importer.docker_seccomp import SeccompImportError

    with tempfile.TemporaryDirectory(prefix="enforcer-import-") as tmp:
        path = os.path.join(tmp, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(text)
        try:
            load_policy(path)
        except PolicyErrors as e:
            # A bug of ours, not of the profile: say so, and write nothing.
            first = str(e.errors[0]) if e.errors else str(e)
            raise SeccompImportError(
                f"the generated policy does not load ({first.replace(path, 'generated.yaml')}); "
                "this is a bug in enforcer import; nothing written") from None


def main(args: argparse.Namespace) -> int:
    from enforcer.commands._output import is_regular_output, to_stdout, write_output
    from enforcer.importer.docker_seccomp import import_profile, policy_name

    caps = None
    if args.caps is not None:
        caps = [c for c in re.split(r"[,\s]+", args.caps) if c]
    kernel = None
    if args.kernel is not None:
        m = re.match(r"^(\d+)\.(\d+)", args.kernel)
        if not m:
            print(f"enforcer import: --kernel {args.kernel!r} is not X.Y", file=sys.stderr)
            return exitcodes.USAGE
        kernel = (int(m.group(1)), int(m.group(2)))
    # The policy is named after the file it is written to (else the profile;
    # a device or FIFO is no name).
    to_file = not to_stdout(args.output) and is_regular_output(args.output)
    name = args.name or policy_name(args.output if to_file else args.profile)
    text, notes = import_profile(args.profile, caps=caps, arch=args.arch, kernel=kernel,
                                 name=name)
    # Check first: the fast launcher starts the command again in a full
    # interpreter when the loader needs PyYAML, and notes printed before
    # that would appear twice.
    _check_loads(text, name)
    for note in notes:
        print(f"enforcer import: note: {note}", file=sys.stderr)
    write_output(text.encode(), args.output)
    return exitcodes.OK
