"""Output helpers shared by the verbs: policy errors, result files, filters."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from enforcer import exitcodes
from enforcer.errors import EnforcerError

if TYPE_CHECKING:
    from enforcer.errors import PolicyErrors
    from enforcer.policy.model import Policy


def print_policy_errors(spec: str, errors: "PolicyErrors") -> None:
    """One line per error on stderr; an error with no place in a file (a
    missing file, say) is prefixed with the policy the user named."""
    for err in errors.errors:
        print(err if err.location else f"{spec}: {err}", file=sys.stderr)


class OutputError(EnforcerError):
    """`-o PATH` names something a result cannot (or must not) be written to."""

    exit_code = exitcodes.USAGE


def to_stdout(output: str | None) -> bool:
    """`-o -` (or no -o at all) means standard output."""
    return output is None or output == "-"


def is_regular_output(output: str) -> bool:
    """Whether `-o output` is (or will be) a regular file: it does not
    exist yet, or it is one (a device or FIFO is written in place)."""
    import os
    import stat

    try:
        return stat.S_ISREG(os.stat(output).st_mode)
    except FileNotFoundError:
        return True


def write_output(data: bytes, output: str | None) -> None:
    """To stdout (None or "-"), else to the path `output` by
    enforcer.atomicfile.write_result: a regular file is replaced atomically,
    a device or FIFO written in place, anything else refused (OutputError,
    one line, nothing written)."""
    if to_stdout(output):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    assert output is not None
    from enforcer.atomicfile import OutputRefused, write_result

    try:
        write_result(output, data)
    except OutputRefused as e:
        raise OutputError(f"-o {output}: not written: {e.strerror or e}; give a file, a "
                          "character device, a FIFO, or - for standard output") from None
    except OSError as e:
        raise OutputError(f"-o {output}: cannot write: {e.strerror or e}") from None


def write_seccomp_export(verb: str, policy: "Policy", fmt: str, mode: str | None,
                         output: str | None) -> int:
    """`--format bpf|pfc` of `enforcer compile` and `enforcer export`."""
    from enforcer.compile.seccomp import export_bpf, export_pfc
    from enforcer.policy.model import Mode

    as_mode = Mode(mode) if mode else None
    if fmt == "pfc":
        write_output(export_pfc(policy, as_mode).encode(), output)
        return exitcodes.OK
    if to_stdout(output) and sys.stdout.isatty():
        print(f"enforcer {verb}: refusing to write binary BPF to a terminal; use -o FILE",
              file=sys.stderr)
        return exitcodes.USAGE
    write_output(export_bpf(policy, as_mode), output)
    return exitcodes.OK
