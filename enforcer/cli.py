"""The `enforcer` command line: a table of verbs, each in its own module.

Only the chosen verb's module is imported, so `enforcer run` pays for
nothing but what the start path needs (no PyYAML, libseccomp, psutil or
prometheus_client when a cached Plan exists). Each verb module in
enforcer/commands/ provides:

    HELP: str                                   one line for `enforcer --help`
    def add_arguments(p: argparse.ArgumentParser) -> None
    def main(args: argparse.Namespace) -> int   returns the exit code

Errors derived from EnforcerError become one line on stderr; a traceback
reaches the user only for a bug in enforcer itself (and then says so).
"""

from __future__ import annotations

import sys

from enforcer import __version__, exitcodes
from enforcer.errors import EnforcerError, PolicyErrors

TYPE_CHECKING = False  # `typing` costs ms on every start; only checkers need it
if TYPE_CHECKING:
    from typing import Sequence

# verb -> module name in enforcer.commands; order is the order of --help.
VERBS: dict[str, str] = {
    "check": "check",
    "lint": "lint",
    "explain": "explain",
    "groups": "groups",
    "schema": "schema",
    "compile": "compile",
    "export": "export",
    "import": "import_",
    "run": "run",
    "shim": "shim",
    "monitor": "monitor",
    "record": "record",
    "diff": "diff",
    "features": "features",
}

# One-line help per verb, kept here so `enforcer --help` imports nothing.
VERB_HELP: dict[str, str] = {
    "check": "validate policy files (exit 0 valid, 1 invalid)",
    "lint": "score a policy's exposure from 0 (tight) to 10 (open)",
    "explain": "show the effective policy and where each value came from",
    "groups": "list the syscall groups (@name) and their members",
    "schema": "print the JSON Schema of the policy format",
    "compile": "compile a policy into a Plan (seccomp BPF, caps, mounts, cgroups)",
    "export": "export a policy as OCI, Docker, Kubernetes, systemd, bpf or pfc",
    "import": "turn a Docker/OCI seccomp JSON profile into a YAML policy",
    "run": "run a command under a policy",
    "shim": "OCI runtime shim: apply a policy to a bundle, then exec runc",
    "monitor": "serve violation metrics (Prometheus) and a JSON event log",
    "record": "learn a policy from what a workload does",
    "diff": "show what one policy allows that another does not",
    "features": "what this host supports (seccomp, cgroups, Landlock, libseccomp)",
}


def _top_help() -> str:
    lines = ["usage: enforcer [--version] VERB [ARGS]", "", "verbs:"]
    width = max(len(v) for v in VERBS)
    for verb in VERBS:
        lines.append(f"  {verb:<{width}}  {VERB_HELP[verb]}")
    lines += ["", "`enforcer VERB --help` for a verb's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_top_help())
        return exitcodes.OK if argv else exitcodes.USAGE
    if argv[0] == "--version":
        print(f"enforcer {__version__}")
        return exitcodes.OK
    verb = argv[0]
    if verb == "run":
        # Start path: `run` parses its own options (argparse alone costs a
        # few ms of every workload start).
        from enforcer.commands.run import fast_main

        return fast_main(argv[1:])
    import argparse
    import importlib

    if verb not in VERBS:
        from difflib import get_close_matches

        hint = get_close_matches(verb, VERBS, n=1)
        suffix = f"; did you mean {hint[0]!r}?" if hint else ""
        print(f"enforcer: unknown verb {verb!r}{suffix} (see enforcer --help)", file=sys.stderr)
        return exitcodes.USAGE
    try:
        module = importlib.import_module(f"enforcer.commands.{VERBS[verb]}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("enforcer.commands"):
            print(f"enforcer: verb {verb!r} is not available in this build", file=sys.stderr)
            return exitcodes.USAGE
        raise
    parser = argparse.ArgumentParser(prog=f"enforcer {verb}", description=VERB_HELP[verb])
    module.add_arguments(parser)
    if getattr(module, "RAW_ARGS", False):
        # The shim takes runc's whole command line; it parses it itself.
        args = argparse.Namespace(argv=argv[1:])
    else:
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
            return int(e.code or 0)
    try:
        return int(module.main(args))
    except PolicyErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return exitcodes.INVALID
    except EnforcerError as e:
        print(f"enforcer {verb}: {e}", file=sys.stderr)
        return getattr(e, "exit_code", exitcodes.INVALID)
    except KeyboardInterrupt:
        return exitcodes.SIGNAL_BASE + 2
    except BrokenPipeError:
        return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
