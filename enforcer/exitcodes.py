"""Exit codes of the enforcer CLI, documented in docs/cli.md.

`enforcer run` passes the workload's own status through unchanged, so its
own failures use the codes Docker and env(1) users already know, above any
status a well-behaved program uses for itself.
"""

OK = 0
INVALID = 1  # check/lint/diff: the input is invalid or over the threshold
USAGE = 2  # bad command line
# enforcer run / shim: the policy could not be applied; the workload did not run.
APPLY_FAILED = 125
# enforcer run: the command exists but could not be executed (EACCES, ENOEXEC).
CANNOT_EXECUTE = 126
# enforcer run: the command was not found.
NOT_FOUND = 127
# enforcer run: the workload was killed by signal N -> 128 + N (shell convention).
SIGNAL_BASE = 128
