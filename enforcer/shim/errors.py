"""The shim's one error type.

Not derived from enforcer.errors.EnforcerError on purpose: that module
imports dataclasses (~13 ms here), and the shim's start path has a 15 ms
budget. enforcer/commands/shim.py and shim/main.py turn it into one line
on stderr and exit code 125 (exitcodes.APPLY_FAILED).
"""


class ShimError(Exception):
    """The container must not start; str(e) is the one line the user sees."""
