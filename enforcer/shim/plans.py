"""From a policy to the patch the shim merges, fast.

A policy is chosen by NAME (`--policy NAME`, the `io.enforcer.policy`
annotation, `default_policy`) or, on the shim's own command line only, by
a file (`--policy PATH`). A name is a strict pattern (is_policy_name: no
`/`, no `.`, so never a path) and means an installed policy, in order:
  1. `<plans_dir>/<name>.json`, a Plan the administrator precompiled with
     `enforcer compile` (the fast path);
  2. a shipped policy, `enforcer/policies/<name>.yaml`: its Plan comes from
     the Plan cache, and a cache miss is compiled in a confined child
     (enforcer/confined_compile.py), never in this process.
Both places must be root's: the directory and the file owned by root (or
the shim's own user) and writable by nobody else, or the name is refused.
A path (command line only): `*.json` is a Plan file, anything else a
policy file compiled like 2.

Plan files are verified (sha256, strict fields) by enforcer.plan once;
the patch made from them is cached under <runtime_dir>/shim-cache keyed by
the file's identity (device, inode, size, mtime, ctime), so a later start
reads one small JSON file and imports nothing heavy. Any change to the
Plan file changes its ctime, and so misses the cache.
A shipped policy is looked up in the Plan cache on every start (the cache
decides whether the YAML changed); precompile for the fast path.

No error message here quotes a file's contents: a name that resolves to
nothing says which places were looked in and which names exist.
"""

from __future__ import annotations

import os
# `typing` costs ~9 ms to import here; annotations are strings (PEP 563),
# so it is only needed by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from enforcer import fastjson
from enforcer.shim.errors import ShimError

# Bumped with patch.PATCH_FORMAT: a cached patch of another format is rebuilt.
CACHE_FORMAT = 2
POLICY_NAME_MAX = 64
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def is_policy_name(text: str) -> bool:
    """A letter or digit, then letters, digits, `-` and `_`; at most 64.

    (No `re`: it costs milliseconds on the start path.)"""
    return (0 < len(text) <= POLICY_NAME_MAX and text[0] in _ALNUM
            and all(c in _NAME_CHARS for c in text))


NAME_RULE = ("a policy name: a letter or digit, then letters, digits, '-' or '_' "
             f"(at most {POLICY_NAME_MAX})")


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cache_file(cache_dir: str, plan_path: str) -> str:
    """One cache file per Plan path: the path itself, escaped, when it fits."""
    key = plan_path.replace("%", "%25").replace("/", "%2F")
    if len(key) > 200:
        import _sha256  # a C module; hashlib would load OpenSSL (~5 ms)

        key = _sha256.sha256(plan_path.encode()).hexdigest()
    return os.path.join(cache_dir, key + ".json")


def _read_cached(path: str, plan_path: str, ident: list[int]) -> dict[str, Any] | None:
    from enforcer.atomicfile import read_private

    # Only trust a cache entry that only we could have written.
    data = read_private(path, 4 << 20)
    if data is None:
        return None
    try:
        doc = fastjson.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT \
            or doc.get("plan") != plan_path or doc.get("identity") != ident:
        return None
    patch = doc.get("patch")
    return patch if isinstance(patch, dict) else None


def _write_cached(path: str, plan_path: str, ident: list[int], patch: dict[str, Any]) -> None:
    """Best effort: a cache we cannot write only costs time on the next start."""
    from enforcer.atomicfile import write_atomic

    data = fastjson.dumps({"format": CACHE_FORMAT, "plan": plan_path, "identity": ident,
                           "patch": patch}).encode()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomic(path, data, mode=0o600, tag="patch")
    except OSError:
        pass


def _untrusted(st: os.stat_result) -> str | None:
    """Why a file or directory is not the administrator's alone, or None."""
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o022:
        return f"writable by {'others' if st.st_mode & 0o002 else 'its group'}"
    return None


def check_trusted(path: str, what: str) -> None:
    """Refuse a policy source that someone other than root could have written:
    the file itself and the directory it is in."""
    for target in (path, os.path.dirname(path) or "."):
        try:
            reason = _untrusted(os.stat(target))
        except OSError as e:
            raise ShimError(f"{what} {target}: {e.strerror}") from None
        if reason:
            raise ShimError(f"{what} {target} is {reason}; refusing to trust it "
                            "(it must be root's and writable by nobody else)")


def patch_from_plan_file(plan_path: str, cache_dir: str | None) -> dict[str, Any]:
    try:
        st = os.stat(plan_path)
    except OSError as e:
        raise ShimError(f"Plan {plan_path}: {e.strerror}") from None
    ident = _identity(st)
    cache_path = _cache_file(cache_dir, plan_path) if cache_dir else None
    if cache_path:
        patch = _read_cached(cache_path, plan_path, ident)
        if patch is not None:
            return patch
    # Slow path: verify the Plan strictly, then remember the result.
    from enforcer.errors import EnforcerError
    from enforcer.plan import load_plan_file
    from enforcer.shim.patch import patch_from_plan

    try:
        patch = patch_from_plan(load_plan_file(plan_path))
    except EnforcerError as e:
        raise ShimError(str(e)) from None
    if cache_path:
        _write_cached(cache_path, plan_path, ident, patch)
    return patch


def patch_from_policy_file(path: str, compile_cache_dir: str | None) -> dict[str, Any]:
    """A policy file's patch: its Plan from the Plan cache, or compiled in a
    confined child on a miss (enforcer/confined_compile.py)."""
    from enforcer.confined_compile import plan_for_policy_file
    from enforcer.errors import ConfinedCompileError
    from enforcer.errors import EnforcerError
    from enforcer.shim.patch import patch_from_plan

    try:
        return patch_from_plan(plan_for_policy_file(path, cache_dir=compile_cache_dir))
    except (ConfinedCompileError, EnforcerError) as e:
        lines = str(e).strip().splitlines() or ["failed"]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise ShimError(f"policy {path}: {lines[0]}{more}") from None


def shipped_dir() -> str:
    """Where the shipped policies are (enforcer/policies in the package)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "policies")


def installed_names(plans_dir: str) -> list[str]:
    """The names a policy can be chosen by: precompiled Plans and shipped policies."""
    names: set[str] = set()
    for directory, suffix in ((plans_dir, ".json"), (shipped_dir(), ".yaml")):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        names.update(e[:-len(suffix)] for e in entries
                     if e.endswith(suffix) and is_policy_name(e[:-len(suffix)]))
    return sorted(names)


def patch_for_name(name: str, plans_dir: str, compile_cache_dir: str | None,
                   shim_cache_dir: str | None) -> dict[str, Any]:
    """An installed policy's patch, by name (see the module docstring)."""
    if not is_policy_name(name):
        raise ShimError(f"policy {name!r} is not {NAME_RULE}")
    candidate = os.path.join(plans_dir, name + ".json")
    if os.path.exists(candidate):
        check_trusted(candidate, "Plan")
        return patch_from_plan_file(candidate, shim_cache_dir)
    shipped = os.path.join(shipped_dir(), name + ".yaml")
    if os.path.exists(shipped):
        check_trusted(shipped, "policy")
        return patch_from_policy_file(shipped, compile_cache_dir)
    names = ", ".join(installed_names(plans_dir)) or "none"
    raise ShimError(f"policy {name!r} is not installed (no {candidate}, no shipped policy "
                    f"{name!r}); installed: {names}")


def patch_for_policy(spec: str, plans_dir: str, compile_cache_dir: str | None,
                     shim_cache_dir: str | None) -> dict[str, Any]:
    """The merge patch for a policy name, or (from the shim's own command line
    only) a Plan or policy file; raises ShimError."""
    if is_policy_name(spec):
        return patch_for_name(spec, plans_dir, compile_cache_dir, shim_cache_dir)
    path = os.path.abspath(spec)
    if spec.endswith(".json"):
        return patch_from_plan_file(path, shim_cache_dir)
    if not os.path.isfile(path):
        raise ShimError(f"policy {spec!r} is neither {NAME_RULE} nor a policy file")
    return patch_from_policy_file(path, compile_cache_dir)
