"""Output helpers shared by the verbs: policy errors, result files, filters."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from enforcer import exitcodes

if TYPE_CHECKING:
    from enforcer.errors import PolicyErrors
    from enforcer.policy.model import Policy


def print_policy_errors(spec: str, errors: "PolicyErrors") -> None:
    """One line per error on stderr; an error with no place in a file (a
    missing file, say) is prefixed with the policy the user named."""
    for err in errors.errors:
        print(err if err.location else f"{spec}: {err}", file=sys.stderr)


def write_output(data: bytes, output: str | None) -> None:
    """To stdout (None or "-"), else atomically to the file `output`."""
    if output is None or output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from enforcer.atomicfile import write_atomic

    write_atomic(output, data, tag="out")


def write_seccomp_export(verb: str, policy: "Policy", fmt: str, mode: str | None,
                         output: str | None) -> int:
    """`--format bpf|pfc` of `enforcer compile` and `enforcer export`."""
    from enforcer.compile.seccomp import export_bpf, export_pfc
    from enforcer.policy.model import Mode

    as_mode = Mode(mode) if mode else None
    if fmt == "pfc":
        write_output(export_pfc(policy, as_mode).encode(), output)
        return exitcodes.OK
    if output is None and sys.stdout.isatty():
        print(f"enforcer {verb}: refusing to write binary BPF to a terminal; use -o FILE",
              file=sys.stderr)
        return exitcodes.USAGE
    write_output(export_bpf(policy, as_mode), output)
    return exitcodes.OK
