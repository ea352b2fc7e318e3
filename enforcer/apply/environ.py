"""The workload's environment, made from the caller's as the Plan says.

A caller's environment holds what was meant for the caller alone: API
tokens, an ssh-agent socket (SSH_AUTH_SOCK: with it the workload can use
the caller's keys), LD_PRELOAD, proxy credentials, enforcer's own
settings. By default (`env.clear`, see docs/policy-reference.md) only a
short list of harmless names passes, as sudo's env_reset does; the policy
keeps more by name or prefix and sets values of its own.

On the start path: no `re`/`fnmatch` (a pattern is a name or a prefix
ending in `*`, matched by hand).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Mapping

    from enforcer.plan import EnvPlan

# PATH when the caller had none (a cleared environment still needs one to
# find programs): the usual search path of a root login on Debian.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def keeper(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """A test for names `patterns` keep: a name, or a prefix and `*`."""
    names = frozenset(p for p in patterns if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return lambda name: name in names or name.startswith(prefixes)


def workload_environment(env: EnvPlan, caller: Mapping[str, str]) -> dict[str, str]:
    """The environment the workload is executed with."""
    if env.clear:
        keep = keeper(env.keep)
        out = {k: v for k, v in caller.items() if keep(k)}
        out.setdefault("PATH", DEFAULT_PATH)
    else:
        out = dict(caller)
    out.update(env.set)  # the policy's own values win over the caller's
    return out
