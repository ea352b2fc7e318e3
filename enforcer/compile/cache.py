"""The compiler's side of the Plan store: compile a policy, store its Plan.

    load_or_compile(spec, mode=None, cache_dir=None) -> Plan
    compile_with_sources(spec, mode=None) -> (top file, sources, Plan)

For callers that may compile in their own process: `enforcer compile`,
`enforcer export`, the confined compiler's child
(enforcer/confined_compile.py), tests and benchmarks. The start path
(`enforcer run`, the shim, enforcer-shimd) never imports this module: it
reads the store (enforcer/planstore.py) and fills a miss through the
confined compiler.
"""

from __future__ import annotations

import os

from enforcer.plan import Plan
from enforcer.planstore import entry_path, lookup, resolve_spec, source_digest, store


def load_or_compile(spec: str, *, mode: str | None = None, cache_dir: str | None = None) -> Plan:
    """A Plan for `spec` (a policy file or a shipped policy's name).

    From the cache when an entry for exactly these bytes exists and every
    file of its extends chain is unchanged; else load, compile, store.
    Raises PolicyError(s) for a bad policy, CompileError, or PlanError for a
    corrupt cache entry (nothing is applied; the message names the file).
    """
    found, plan = lookup(spec, mode=mode, cache_dir=cache_dir)
    if plan is not None:
        return plan
    return compile_and_store(spec, mode=mode, cache_dir=cache_dir, entry=found.path or None)


def compile_and_store(spec: str, *, mode: str | None = None, cache_dir: str | None = None,
                      entry: str | None = None) -> Plan:
    """The slow half: load the YAML, compile, write the cache entry."""
    top, sources, plan = compile_with_sources(spec, mode=mode)
    if entry is None and os.path.exists(top):
        entry = entry_path(top, mode, cache_dir)
    if entry is not None:
        store(entry, sources, plan, top=top, mode=mode)
    return plan


def compile_with_sources(spec: str, *, mode: str | None = None
                         ) -> tuple[str, list[tuple[str, str]], Plan]:
    """Load and compile `spec`: (top file, every source file with its sha256, Plan)."""
    from enforcer.compile.compiler import compile_policy
    from enforcer.policy.loader import load_policy

    top = resolve_spec(spec)
    policy = load_policy(top if os.path.exists(top) else spec, mode=mode)
    plan = compile_policy(policy)
    sources = [(os.path.abspath(p), d) for p, d in policy.sources]
    if not any(p == top for p, _ in sources) and os.path.exists(top):
        digest = source_digest(top)
        if digest:
            sources.append((top, digest))
    return top, sources, plan
