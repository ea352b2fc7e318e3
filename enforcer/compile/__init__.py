"""The compiler: a validated Policy in, a Plan out.

    compile_policy(policy, mode=None) -> Plan          (enforcer/compile/compiler.py)
    load_or_compile(spec, mode=None, cache_dir=None)   (enforcer/compile/cache.py)

The Plan store it writes to is enforcer/planstore.py, beside plan.py: the
start path reads Plans from there and never imports this package.

One module per kernel mechanism: seccomp.py (BPF through libseccomp),
caps.py, mounts.py, cgroups.py; compiler.py puts them together.

This package's __init__ imports nothing (the confined compiler's child
imports enforcer.compile.cache, and Python runs this file first); the
names below load their modules on first use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` costs ms on the start path; only checkers need it
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from enforcer.compile.compiler import compile_policy, policy_hash, resolve_user

__all__ = ["compile_policy", "policy_hash", "resolve_user"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from enforcer.compile import compiler

        return getattr(compiler, name)
    raise AttributeError(f"module 'enforcer.compile' has no attribute {name!r}")
